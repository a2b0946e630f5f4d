"""Metric collectors: one `TrainerCallback` per module, each usable in anyone's transformers
Trainer.

Each collector keeps its own state, updates it from the Trainer's hooks, and reports `summary()`:
the fields it contributes to status/training_status.json and metrics.jsonl (declared in
daemon/runs/training_status.py). Collectors never import each other at run time. They meet in
`daemon.training.status_writer.StatusWriter`; the few that read another's state (the alerts, the
best checkpoint, the flagged examples, the evaluation passes' budget) are handed it by
daemon/training/wiring.py and name its type for the type checker only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from transformers import TrainerCallback


class Collector(TrainerCallback):
    """Base: a TrainerCallback that can summarise what it has seen as a flat dict of status
    fields."""

    name = "collector"
    echo: Callable[[str], None] | None = None
    """Where `say` writes: the job's log (daemon/training/wiring.py sets it on rank 0); None says
    nothing."""

    def say(self, line: str) -> None:
        """One line of the job's story (a snapshot taken, flags decided, a new best, an alert)."""
        if self.echo is not None:
            self.echo(line)

    def about(self) -> str:
        """What it watches and how often, for the job log's first lines ("" when its name says
        it)."""
        return ""

    def summary(self) -> dict[str, Any]:
        return {}
