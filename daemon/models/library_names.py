"""The names transformers gives things in the installed version, so that trainctl never passes a
deprecated one.

transformers 5.20 renamed two things trainctl uses; the old names still work there but print a
FutureWarning on every run (and go in 5.40 and v6). trainctl supports both sides of the rename (its
CPU pin is below 5.20, GPU installs take the newest), so it asks the installed version which name
it knows:

- `TrainingArguments.gradient_checkpointing(_kwargs)` became `activation_checkpointing(_kwargs)`;
- the decoder's `past_key_values` argument and output field became `cache`.

peft (0.21) still reads `model.is_gradient_checkpointing` as it wraps a model, which transformers
5.20+ answers with a FutureWarning about its own rename; `quiet_peft_wrap` silences that one
message, and only there.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@functools.cache
def checkpointing_prefix() -> str:
    """`activation_checkpointing` where TrainingArguments has it, else `gradient_checkpointing`."""
    from transformers import TrainingArguments

    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    return (
        "activation_checkpointing"
        if "activation_checkpointing" in names
        else "gradient_checkpointing"
    )


def checkpointing_args(enabled: bool) -> dict[str, Any]:
    """TrainingArguments' checkpointing settings under the installed version's names.
    Non-reentrant: it works with frozen base weights (LoRA) without forcing input gradients, and
    under DDP."""
    prefix = checkpointing_prefix()
    return {prefix: enabled, f"{prefix}_kwargs": {"use_reentrant": False} if enabled else None}


def forward_parameters(model: Any) -> frozenset[str]:
    """The argument names the model's forward takes (of the base model under a peft wrapper), read
    once per model class."""
    base: Any = model.get_base_model() if hasattr(model, "get_base_model") else model
    cls: Any = type(base)
    return _parameters(cls)


@functools.cache
def _parameters(cls: Any) -> frozenset[str]:
    try:
        return frozenset(inspect.signature(cls.forward).parameters)
    except (TypeError, ValueError):
        return frozenset()


def cache_argument(model: Any) -> str:
    """The name the model's forward takes its key/value cache by: `cache` or `past_key_values`."""
    params = forward_parameters(model)
    return "cache" if "cache" in params and "past_key_values" not in params else "past_key_values"


def cache_of(output: Any) -> Any:
    """The key/value cache a forward call returned, under either name."""
    fields = getattr(type(output), "__dataclass_fields__", {})
    return output.cache if "cache" in fields else output.past_key_values


@contextmanager
def quiet_peft_wrap() -> Iterator[None]:
    """Around peft's wrapping of a model: its read of the renamed `is_gradient_checkpointing` warns
    about transformers' rename, which nobody using trainctl can act on. Only that message is
    silenced."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning
        )
        yield
