"""Flagged examples: after each fixed evaluation, the examples the model got wrong (`mismatch`), found hard
(`high_loss`: golden-answer loss above a threshold) or could not be evaluated on (`error`) go to the flag store
(data/flagged_examples/flagged_examples.json, see daemon.runs.flag_store). Reports `flagged_count` (open flags)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from daemon.runs.flag_store import FlagStore, flags_from_eval
from daemon.training.collectors import Collector

if TYPE_CHECKING:
    from daemon.training.collectors.fixed_eval import FixedEval


class FlaggedExamples(Collector):
    name = "flagged"

    def __init__(self, store: FlagStore, fixed_eval: FixedEval, file: str | None = None, loss_threshold: float = 3.0):
        self.store = store
        self.file = file
        self.loss_threshold = loss_threshold
        self.added = 0
        self.count: int | None = None
        fixed_eval.listeners.append(self.update)

    def update(self, step: int, results: list[dict[str, Any]]) -> None:
        flags = flags_from_eval(step, results, self.file, self.loss_threshold)
        if flags:
            self.store.add(flags)
            self.added += len(flags)
        self.count = self.store.stats()["open"]

    def summary(self) -> dict[str, Any]:
        if self.count is None:
            return {}
        return {"flagged_count": self.count, "flagged_this_run": self.added}
