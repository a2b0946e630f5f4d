"""Diagnostics budget: fixed evaluations and evolution snapshots together stay within
`train.diagnostics_budget` of the training wall time (default 5%).

The evaluation and snapshot collectors ask `allows(kind, step)` before a scheduled pass and report
what each pass cost (`charge`). A pass is allowed when what has been spent plus its measured cost
(the last pass of that kind) fits the allowance at that step, less a reserve for the passes the
last step always gets:

    allowance(step) = budget / (1 - budget) x projected training time x (1/2 + 1/2 x step /
    max_steps)

The projected training time is the measured time per step so far (diagnostics excluded) x the run's
steps. Half of the budget is there from the start, so the early steps of the schedule, where
learning moves fastest, keep their passes while they fit; the other half comes in step by step, so
a long run's later schedule thins out evenly instead of stopping. A kind never measured yet is
allowed (its first pass is the measurement), and step 0 (the untrained model) always runs whole.
The step-0 snapshot normally comes from the base pass before training
(daemon/training/base_pass.py), outside the training time this budget is a share of, as the final
checks are after it; its cost, pro rata of its examples, is what later snapshots are planned with.
A pass that does not fit whole may still fit scored: the teacher-forced pass alone (exact match
read off it, no decoding of the answers the model gets wrong), which costs the measured pass less
its decoding. Required passes (the last step's, a checkpoint's evaluation) always run: whole if
they fit, else scored. The status reports the share spent, the budget, and the passes scored only
or left out.
"""

from __future__ import annotations

import time
from typing import Any

from daemon.training.collectors import Collector

FULL, SCORED, SKIP = "full", "scored", "skip"


class DiagnosticsBudget(Collector):
    name = "diagnostics_budget"

    def __init__(self, share: float, clock: Any = time.perf_counter):
        self.share = share
        """Largest share of the training wall time for diagnostics; 0 = no limit (every scheduled
        pass runs)."""
        self.clock = clock
        self.spent = 0.0
        self.cost: dict[str, float] = {}
        """Per kind ("eval", "snapshot"): the wall time of its last whole pass."""
        self.decode: dict[str, float] = {}
        """Per kind: the decoding part of that pass."""
        self.skipped: dict[str, int] = {}
        self.scored = 0
        self.last_elsewhere: set[str] = set()
        """Kinds whose last-step pass runs after training (the final checks give the last
        snapshot), so no room is kept for them."""
        self._t0: float | None = None
        self._start_step = 0
        self._max_steps = 0
        self._step = 0

    # -- Trainer hooks
    def on_train_begin(self, args, state, control, **kw):
        self._t0 = self.clock()
        self._start_step = state.global_step
        self._max_steps = state.max_steps

    def on_step_end(self, args, state, control, **kw):
        self._step = state.global_step

    # -- what the diagnostics ask and tell
    def charge(
        self, kind: str, seconds: float, decode_seconds: float = 0.0, whole: bool = True
    ) -> None:
        self.spent += seconds
        if whole:
            self.cost[kind] = seconds
            self.decode[kind] = decode_seconds

    def measured(self, kind: str, seconds: float, decode_seconds: float) -> None:
        """What a whole pass of `kind` costs, learnt from work done outside training (the base pass
        before it, daemon/training/base_pass.py, which gives the step-0 snapshot): planned with,
        not charged."""
        self.cost[kind] = seconds
        self.decode[kind] = decode_seconds

    def plan(self, kind: str, step: int, required: bool = False, can_score: bool = False) -> str:
        """FULL, SCORED (evaluations only) or SKIP for a pass of `kind` at `step`. `required`: step
        0, the last step, or a pass something else depends on (a checkpoint's evaluation): it runs,
        scored if it must."""
        if not self.share or kind not in self.cost or step == 0:
            return FULL
        room = self._allowance(step) - self.spent
        if self.cost[kind] <= room:
            return FULL
        if can_score and (required or self.cost[kind] - self.decode.get(kind, 0.0) <= room):
            self.scored += 1
            return SCORED
        if required:
            return FULL
        self.skipped[kind] = self.skipped.get(kind, 0) + 1
        return SKIP

    def _allowance(self, step: int) -> float:
        if self._t0 is None or self._max_steps <= 0:
            return float("inf")
        done = max(1, self._step - self._start_step)
        training = max(0.0, self.clock() - self._t0 - self.spent)
        projected = training / done * (self._max_steps - self._start_step)
        # The last step's passes always run (scored only, if need be): before it, keep room for
        # them
        reserve = (
            sum(
                c - self.decode.get(k, 0.0)
                for k, c in self.cost.items()
                if k not in self.last_elsewhere
            )
            if step < self._max_steps
            else 0.0
        )
        total = self.share / (1 - self.share) * projected
        return total * (0.5 + 0.5 * min(1.0, step / self._max_steps)) - reserve

    def about(self) -> str:
        return f"diagnostics within {self.share:.0%} of the run" if self.share else "no limit"

    @property
    def share_spent(self) -> float | None:
        if self._t0 is None:
            return None
        wall = self.clock() - self._t0
        return self.spent / wall if wall > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"diagnostics_budget": self.share}
        if self.share_spent is not None:
            out["diagnostics_share"] = round(self.share_spent, 4)
        if self.skipped:
            out["diagnostics_skipped"] = dict(self.skipped)
        if self.scored:
            out["diagnostics_scored_only"] = self.scored
        return out
