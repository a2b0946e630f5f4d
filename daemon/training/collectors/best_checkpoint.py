"""Best checkpoint and early stopping: "which checkpoint should I use, and should I stop?"

Every checkpoint is scored at its step: by the fixed evaluation (which also runs at every save
step) or, with `metric="loss"`, by the smoothed training loss. When a step beats the best so far,
this collector asks the Trainer to save a checkpoint there (so the best weights always exist as
one) and records it as the Trainer's own `state.best_global_step` / `best_metric`: the Trainer then
never rotates that checkpoint away under `save_total_limit`, and `trainer_state.json` carries it
into every later checkpoint, so a resumed run keeps it. The full record (both figures, for
tie-breaking and reports) travels the same way, in `state.stateful_callbacks`.

Early stopping: after `patience` scored steps without progress, training stops with a complete
checkpoint. Progress is a better metric; for exact match also the same exact match with a
cross-entropy at least MIN_GAIN lower (so a run that still answers nothing right but is learning,
as every run starts, is not stopped); for a loss or cross-entropy, at least MIN_GAIN lower. The
best itself is chosen on any improvement.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from daemon.training.collectors import Collector

if TYPE_CHECKING:
    from daemon.training.collectors.fixed_eval import FixedEval
    from daemon.training.collectors.streaming import StreamingMetrics

STATE_KEY = "trainctl_best"
"""Where the best record lives in the Trainer's state (saved in each checkpoint's
trainer_state.json)."""
LABELS = {"exact_match": "EM", "fixed_eval_ce": "CE", "loss": "loss"}
MIN_GAIN = 0.01
"""Relative decrease of a loss or cross-entropy that counts as progress for early stopping."""


class BestCheckpoint(Collector):
    name = "best_checkpoint"

    def __init__(
        self,
        fixed_eval: FixedEval | None = None,
        streaming: StreamingMetrics | None = None,
        metric: str = "exact_match",
        patience: int = 0,
    ):
        self.fixed_eval = fixed_eval
        self.streaming = streaming
        self.metric = metric
        self.patience = patience
        self.best: dict[str, Any] | None = None
        """{"step", "value", "exact_match", "cross_entropy", "loss"} of the best step so far."""
        self.latest: dict[str, Any] | None = None
        """The same for the most recent scored step."""
        self.stale = 0
        """Scored steps since the last progress (see the module docstring)."""
        self.stopped_early: str | None = None

    # -- scoring
    # ---------------------------------------------------------------------------------------------
    def _record(self, step: int, should_save: bool) -> dict[str, Any] | None:
        """The figures of `step`, or None when this step is not scored."""
        last = self.fixed_eval.last if self.fixed_eval is not None else None
        ev: dict[str, Any] = last if last is not None and last["step"] == step else {}
        evaluated = bool(ev)
        loss = self.streaming.ema if self.streaming is not None else None
        if self.metric == "loss":
            if not should_save or loss is None:
                return None
            value = loss
        elif not evaluated:
            return None
        else:
            value = ev["exact_match"] if self.metric == "exact_match" else ev["cross_entropy"]
        if value is None:
            return None
        return {
            "step": step,
            "value": value,
            "exact_match": ev["exact_match"] if evaluated else None,
            "cross_entropy": ev["cross_entropy"] if evaluated else None,
            "loss": loss,
        }

    def _better(self, a: dict[str, Any], b: dict[str, Any] | None, margin: float = 0.0) -> bool:
        """Whether record `a` beats `b`: higher EM, else (same EM) lower CE; lower CE or loss. A
        loss or CE must be lower by `margin` (relative) to count."""
        if b is None:
            return True

        def lower(x: float | None, y: float | None) -> bool:
            return x is not None and (y is None or x < y * (1 - margin))

        if self.metric != "exact_match":
            return lower(a["value"], b["value"])
        if a["value"] != b["value"]:
            return a["value"] > b["value"]
        return lower(a["cross_entropy"], b["cross_entropy"])

    # -- Trainer hooks
    # ---------------------------------------------------------------------------------------------
    def on_train_begin(self, args, state, control, **kw):
        # restored with the checkpoint on resume
        saved = (state.stateful_callbacks or {}).get(STATE_KEY)
        if isinstance(saved, dict) and saved.get("best"):
            self.best, self.stale = saved["best"], int(saved.get("stale", 0))

    def on_step_end(self, args, state, control, **kw):
        # Runs after FixedEval's on_step_end (collector order), so an evaluation of this step is
        # already there.
        rec = self._record(state.global_step, control.should_save)
        if rec is None:
            return control
        self.latest = rec
        progress = self._better(rec, self.best, margin=MIN_GAIN)
        if self._better(rec, self.best):
            self.best = rec
            self.say(f"new best checkpoint: checkpoint-{rec['step']} ({self.describe(rec)})")
            control.should_save = True  # the best weights become a checkpoint at this very step
            state.best_global_step = rec["step"]
            state.best_metric = rec["value"]
        self.stale = 0 if progress else self.stale + 1
        state.stateful_callbacks[STATE_KEY] = {"best": self.best, "stale": self.stale}
        if self.patience and self.stale >= self.patience and state.global_step < state.max_steps:
            self.stopped_early = (
                f"stopped early at step {state.global_step}: {self.metric} "
                f"did not improve in {self.stale} evaluations (best "
                f"{self.describe(self.best)} at step {self.best['step']})"
            )
            control.should_training_stop = True
            control.should_save = True  # a complete checkpoint of where it stopped
        return control

    # -- reports
    # ---------------------------------------------------------------------------------------------
    def about(self) -> str:
        return f"by {LABELS[self.metric]}" + (
            f", patience {self.patience}" if self.patience else ""
        )

    def describe(self, rec: dict[str, Any] | None) -> str:
        if rec is None:
            return "—"
        v = rec["value"]
        return (
            f"{LABELS[self.metric]} {v:.0%}"
            if self.metric == "exact_match"
            else f"{LABELS[self.metric]} {v:.4f}"
        )

    def checkpoint_name(self) -> str | None:
        return f"checkpoint-{self.best['step']}" if self.best else None

    def report(self, last_step: int) -> dict[str, Any] | None:
        """Which step is best, its figures, and how much it beats the last scored step (positive =
        better)."""
        if self.best is None:
            return None
        last = self.latest if self.latest is not None else self.best
        sign = 1 if self.metric == "exact_match" else -1
        return {
            "metric": self.metric,
            "step": self.best["step"],
            "value": self.best["value"],
            "last_step": last["step"],
            "last_value": last["value"],
            "gain_over_last": round(sign * (self.best["value"] - last["value"]), 6),
            "is_last": self.best["step"] == last_step,
            "checkpoint": self.checkpoint_name(),
            "exact_match": self.best["exact_match"],
            "cross_entropy": self.best["cross_entropy"],
        }

    def summary(self) -> dict[str, Any]:
        if self.best is None:
            return {}
        out = {
            "best_step": self.best["step"],
            "best_metric": self.metric,
            "best_value": self.best["value"],
            "best_checkpoint": self.checkpoint_name(),
            "evaluations_since_best": self.stale,
        }
        if self.stopped_early:
            out["stopped_early"] = self.stopped_early
        return out
