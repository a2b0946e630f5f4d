"""The settings flags of `daemon`, `train`, `curate` and `retry`, generated from daemon/config.py.

A command decorated with `settings_flags(...)` gets one `--flag` per named `[train]` field, typed
and helped by the field's own annotation and docstring, and `--set section.key=value` (repeatable)
for every other setting. It receives them as one `overrides` argument, `{"train": {"lr": 0.001},
...}`, the shape `load_settings` and the job queue take. A new setting is a field in
daemon/config.py and nothing here; it is `--set train.name=...` at once."""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from typing import Annotated, Any, Optional, TypeVar

import tomllib
import typer

from daemon.config import TrainConfig, field_docs, section_classes
from daemon.errors import ConfigError

COMMON = (
    "model",
    "epochs",
    "max_steps",
    "lr",
    "batch_size",
    "max_length",
    "lora_r",
    "lora_alpha",
    "eval_steps",
    "save_steps",
    "nproc",
    "gpus_per_job",
)
"""The `[train]` settings people set most, offered as their own flags (`--max-steps 20`)."""

Overrides = dict[str, dict[str, Any]]
"""What a decorated command receives: section -> setting -> value, only what was given."""

SET_PARAM = "set_values"
SIMPLE = (bool, int, float, str)

Command = TypeVar("Command", bound=Callable[..., Any])


def parse_value(text: str) -> Any:
    """A flag's text as a TOML value (`3e-4`, `true`, `[0, 1]`, `"x"`), or the text itself
    (`builtin:tiny`)."""
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text


def parse_set(pairs: list[str]) -> dict[str, dict[str, Any]]:
    """`["train.lr=3e-4", "curation.min_quality=0.6"]` -> {"train": {"lr": 0.0003}, ...}; a
    malformed one raises."""
    found: dict[str, dict[str, Any]] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot or not name:
            raise ConfigError(
                f"--set {pair!r} is not section.key=value — e.g. --set train.lr=3e-4"
            )
        if section not in section_classes():
            raise ConfigError(
                f"--set {pair!r}: no section [{section}] (known: {', '.join(section_classes())})"
            )
        found.setdefault(section, {})[name] = parse_value(text.strip())
    return found


def _option(name: str, hint: Any, doc: str) -> tuple[Any, Callable[[Any], Any]]:
    """The flag's annotation, and how its value becomes the setting's (a union type arrives as
    text)."""
    help_text = " ".join(doc.split()).split(". ")[0].rstrip(".") + f" (train.{name})."
    flag = "--" + name.replace("_", "-")
    if hint in SIMPLE:
        return Annotated[Optional[hint], typer.Option(flag, help=help_text)], lambda value: value
    return Annotated[Optional[str], typer.Option(flag, help=help_text)], parse_value


def settings_flags(*names: str) -> Callable[[Command], Command]:
    """Give a Typer command the flags of these `[train]` fields and `--set`; it receives
    `overrides`."""
    hints = typing.get_type_hints(TrainConfig)
    docs = field_docs(TrainConfig)
    options = {name: _option(name, hints[name], docs[name]) for name in names}

    def decorate(command: Command) -> Command:
        own = inspect.signature(command)
        resolved = typing.get_type_hints(command, include_extras=True)
        kept = [
            param.replace(annotation=resolved.get(param.name, param.annotation))
            for param in own.parameters.values()
            if param.name != "overrides"
        ]
        added = [
            inspect.Parameter(
                name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation
            )
            for name, (annotation, _) in options.items()
        ]
        added.append(
            inspect.Parameter(
                SET_PARAM,
                inspect.Parameter.KEYWORD_ONLY,
                default=None,
                annotation=Annotated[
                    Optional[list[str]],
                    typer.Option(
                        "--set",
                        metavar="SECTION.KEY=VALUE",
                        help="Any setting of trainctl.toml for this run, "
                        "e.g. --set train.warmup_ratio=0.1 (repeatable).",
                    ),
                ],
            )
        )

        @functools.wraps(command)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            found = parse_set(kwargs.pop(SET_PARAM, None) or [])
            for name, (_, convert) in options.items():
                value = kwargs.pop(name, None)
                if value is not None:
                    found.setdefault("train", {})[name] = convert(value)
            return command(*args, overrides=found, **kwargs)

        signature = own.replace(parameters=kept + added)
        wrapper.__signature__ = signature  # type: ignore[attr-defined]
        wrapper.__annotations__ = {
            param.name: param.annotation for param in signature.parameters.values()
        }
        return typing.cast(Command, wrapper)

    return decorate
