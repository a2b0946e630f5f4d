"""The Typer app. Every command is registered through `command`, which turns a TrainctlError into one red line
and exit code 1: the only place expected errors are caught."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

from daemon.errors import TrainctlError

app = typer.Typer(name="trainctl", help="Drop JSONL into inbox/, get a LoRA adapter. A fine-tuning workstation.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
console = Console()
err_console = Console(stderr=True)

HomeOpt = Annotated[Optional[str], typer.Option("--home", envvar="TRAINCTL_HOME",
                                                help="Home folder (default: current directory).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print as JSON for scripts.")]


def reports_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A TrainctlError from `fn` becomes one red line on stderr and exit code 1."""
    @functools.wraps(fn)
    def wrapper(*a: Any, **kw: Any) -> Any:
        try:
            return fn(*a, **kw)
        except TrainctlError as exc:
            err_console.print(f"[red]Error[/red]: {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
    return wrapper


def command(group: typer.Typer, *args: Any, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        group.command(*args, **kwargs)(reports_errors(fn))
        return fn
    return deco


def main() -> None:
    app()


# Register the command modules (each imports only light code at module level).
from cli import bench as _bench  # noqa: E402,F401
from cli import evolution as _evolution  # noqa: E402,F401
from cli import flags as _flags  # noqa: E402,F401
from cli import queue as _queue  # noqa: E402,F401
from cli import rejected as _rejected  # noqa: E402,F401
from cli import status as _status  # noqa: E402,F401
from cli import work as _work  # noqa: E402,F401
