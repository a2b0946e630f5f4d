"""Metric collectors: one `TrainerCallback` per module, each usable in anyone's transformers Trainer.

Each collector keeps its own state, updates it from the Trainer's hooks, and reports `summary()`: the fields it
contributes to status/training_status.json and metrics.jsonl (declared in daemon/runs/training_status.py).
Collectors never import each other at run time. They meet in `daemon.training.status_writer.StatusWriter`; the few
that read another's state (the alerts, the best checkpoint, the flagged examples, the evaluation passes' budget)
are handed it by daemon/training/wiring.py and name its type for the type checker only.
"""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback


class Collector(TrainerCallback):
    """Base: a TrainerCallback that can summarise what it has seen as a flat dict of status fields."""

    name = "collector"

    def summary(self) -> dict[str, Any]:
        return {}
