"""Flagged examples: after each fixed evaluation, the model's current mistakes on the evaluated
examples.

Every evaluation decides the flags, scored-only ones too (their exact match is the teacher-forced
argmax reproducing the golden answer, so that is what they flag on): an example the model got wrong
(`mismatch`), found hard (`high_loss`: golden-answer loss above a threshold) or could not be
evaluated on (`error`) has one open flag per job, updated with the latest output; one it answers
right again has its flag resolved. The store is data/flagged_examples/flagged_examples.json
(daemon.runs.flag_store). Reports `flagged_count`: the job's open flags.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from daemon.runs.flag_store import FlagStore
from daemon.training.collectors import Collector

if TYPE_CHECKING:
    from daemon.training.collectors.fixed_eval import FixedEval


class FlaggedExamples(Collector):
    name = "flagged"

    def __init__(
        self,
        store: FlagStore,
        fixed_eval: FixedEval,
        file: str | None = None,
        loss_threshold: float = 3.0,
        job_id: int | None = None,
    ):
        self.store = store
        self.file = file
        self.job_id = job_id
        self.loss_threshold = loss_threshold
        self.added = 0
        self.resolved = 0
        self.count: int | None = None
        fixed_eval.listeners.append(self.update)

    def update(self, step: int, results: list[dict[str, Any]], scored_only: bool = False) -> None:
        done = self.store.evaluation(
            self.job_id, step, results, self.file, self.loss_threshold, scored_only
        )
        self.added += done["added"]
        self.resolved += done["resolved"]
        self.count = done["open"]
        wrong = done["added"] + done["updated"]
        self.say(
            f"flags at step {step}: {wrong} of {len(results)} evaluated "
            f"examples wrong ({done['added']} new, {done['updated']} "
            f"still wrong), {done['resolved']} right again "
            f"(resolved); {done['open']} open" + (" — scored only" if scored_only else "")
        )

    def summary(self) -> dict[str, Any]:
        if self.count is None:
            return {}
        return {
            "flagged_count": self.count,
            "flagged_this_run": self.added,
            "flags_resolved_this_run": self.resolved,
        }
