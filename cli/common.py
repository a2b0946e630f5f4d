"""What every command module shares: the consoles, the common options, and how a command reports a
TrainctlError (one red line and exit code 1: the only place expected errors are caught).

Imports run one way: cli/app.py imports the command modules and registers their commands; the
modules import this module, never the app."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

from daemon.errors import TrainctlError

console = Console()
err_console = Console(stderr=True)

HomeOpt = Annotated[
    Optional[str],
    typer.Option(
        "--home", envvar="TRAINCTL_HOME", help="Home folder (default: current directory)."
    ),
]
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


def command(
    group: typer.Typer, *args: Any, **kwargs: Any
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register `fn` as a command of a module's own group (bench, flags, evolution)."""

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        group.command(*args, **kwargs)(reports_errors(fn))
        return fn

    return deco


class Commands:
    """Top-level commands a module defines; cli/app.py registers them on the app."""

    def __init__(self) -> None:
        self.entries: list[tuple[tuple[Any, ...], dict[str, Any], Callable[..., Any]]] = []

    def command(
        self, *args: Any, **kwargs: Any
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
            self.entries.append((args, kwargs, reports_errors(fn)))
            return fn

        return deco

    def register(self, app: typer.Typer) -> None:
        for args, kwargs, fn in self.entries:
            app.command(*args, **kwargs)(fn)
