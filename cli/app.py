"""The Typer app: every command module's commands, registered here (the modules never import this
one)."""

from __future__ import annotations

import typer

from cli import bench, control, evolution, flags, queue, rejected, service_cmds, status, ui, work
from cli.common import HomeOpt, JsonOpt, command, console, err_console, reports_errors

__all__ = [
    "app",
    "main",
    "console",
    "err_console",
    "HomeOpt",
    "JsonOpt",
    "command",
    "reports_errors",
]

app = typer.Typer(
    name="trainctl",
    help="Drop JSONL into inbox/, get a LoRA adapter. A fine-tuning workstation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(bench.bench_app, name="bench")
app.add_typer(evolution.evolution_app, name="evolution")
app.add_typer(flags.flags_app, name="flags")
app.add_typer(service_cmds.service_app, name="service")
for module in (status, queue, work, control, service_cmds, rejected, ui):
    module.commands.register(app)


def main() -> None:
    app()
