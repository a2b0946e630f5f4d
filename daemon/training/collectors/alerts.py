"""Alerts: rules over the other collectors' state, each with a severity and a recommendation.

An alert fires once when its condition starts to hold, stays active (not repeated) while it holds, and resolves by
itself when it clears; each firing and resolution is one line in `alerts.jsonl` when a path is given.
A NaN/Inf raw loss is critical: training is stopped at once (no checkpoint of the poisoned weights is written, so
the last complete one is kept) and `critical` says why.

Rules (checked after every optimizer step, and after every evaluation for calibration):
  nan_loss             critical  the raw loss is NaN or Inf
  loss_spike           warning   raw loss > 2x the EMA (the recent level), after 5 steps
  exploding_gradients  warning   a LoRA layer's gradient norm > 100 (before clipping)
  vanishing_gradients  warning   every live LoRA layer's gradient norm < 1e-5
  dead_layers          warning   LoRA layers with neither gradient nor update for a while
  gradient_imbalance   info      largest / smallest layer gradient norm > 1000
  lr_too_high          warning   the EMA loss climbed 50% above its best (divergence)
  lr_too_low           warning   updates move the adapter by < 1e-6 of its norm a step
  plateau              info      the EMA improved < 1% over the last 50 steps (the advice names the best checkpoint)
  poor_calibration     warning   fixed-eval ECE > 0.3
  regression           warning   fixed-eval exact match stayed `regression_threshold` below the best checkpoint's for
                                 the last two evaluations (the advice: use that checkpoint)
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from daemon.atomic import append_jsonl
from daemon.training.collectors import Collector

if TYPE_CHECKING:
    from daemon.training.collectors.best_checkpoint import BestCheckpoint
    from daemon.training.collectors.fixed_eval import FixedEval
    from daemon.training.collectors.lora_monitor import LoRAMonitor
    from daemon.training.collectors.streaming import StreamingMetrics

SEVERITIES = ("info", "warning", "critical")
WARMUP_STEPS = 5


@dataclass
class Alert:
    id: str
    severity: str
    message: str
    recommendation: str
    since_step: int
    since: float


class Alerts(Collector):
    name = "alerts"

    def __init__(self, streaming: StreamingMetrics | None = None, lora: LoRAMonitor | None = None,
                 fixed_eval: FixedEval | None = None, log_path: Path | None = None, ece_threshold: float = 0.3,
                 plateau_steps: int = 50, best: BestCheckpoint | None = None,
                 regression_threshold: float = 0.1, job_id: int | None = None):
        self.streaming = streaming
        self.lora = lora
        self.fixed_eval = fixed_eval
        self.best = best
        self.regression_threshold = regression_threshold
        self.job_id = job_id
        self.log_path = log_path
        self.ece_threshold = ece_threshold
        self.plateau_steps = plateau_steps
        self.active: dict[str, Alert] = {}
        self.fired: dict[str, int] = {}  # alert id -> times it fired
        self.critical: Alert | None = None
        self._best_ema: float | None = None
        self._first_ema: float | None = None
        self.step = 0

    def on_step_end(self, args, state, control, **kw):
        self.step = state.global_step
        self.check(state.global_step)
        if self.critical is not None:
            control.should_training_stop = True
            control.should_save = False  # never checkpoint poisoned weights: the last complete one stays
        return control

    def on_evaluate(self, args, state, control, **kw):
        self.check(state.global_step)

    # -- rules ---------------------------------------------------------------------------------------------------
    def check(self, step: int) -> None:
        conditions: dict[str, tuple[str, str, str] | None] = {}
        s, lo, ev = self.streaming, self.lora, self.fixed_eval
        if s is not None and s.last_loss is not None:
            loss, ema = s.last_loss, s.ema
            conditions["nan_loss"] = ("critical", f"the raw loss is {loss} at step {step}",
                                      "lower the learning rate, check the data for empty or extreme records; the "
                                      "job stopped and its last complete checkpoint is kept") \
                if not math.isfinite(loss) else None
            warm = s.steps > WARMUP_STEPS and ema is not None
            if ema is not None:
                self._first_ema = self._first_ema if self._first_ema is not None else ema
                self._best_ema = ema if self._best_ema is None else min(self._best_ema, ema)
            # Ratios alone misfire once the loss is near zero (0.004 -> 0.009 is "2x"): a rise must also be worth
            # 5% (spike) or 10% (divergence) of the loss the run started from.
            scale = abs(self._first_ema or 0.0)
            conditions["loss_spike"] = (
                "warning", f"loss {loss:.3g} is more than 2x its recent level {ema:.3g}",
                "a bad batch or a too-high learning rate: if it repeats, lower train.lr") \
                if warm and ema is not None and math.isfinite(loss) and loss > 2 * ema \
                and loss - ema > 0.05 * scale else None
            conditions["lr_too_high"] = (
                "warning", f"the smoothed loss {ema:.3g} climbed 50% above its best {self._best_ema:.3g}",
                "training is diverging: lower train.lr (try 3-10x lower)") \
                if warm and ema is not None and self._best_ema is not None and ema > 1.5 * self._best_ema \
                and ema - self._best_ema > 0.1 * scale else None
            improvement = s.improvement()
            conditions["plateau"] = (
                "info", f"the smoothed loss improved {improvement:.2%} over the last {s.trend_window} steps",
                "learning has levelled off: more epochs will not help much; " + self._stop_advice()) \
                if improvement is not None and abs(improvement) < 0.01 else None
        if lo is not None and lo.grad_norm:
            exploding = lo.exploding()
            conditions["exploding_gradients"] = (
                "warning", f"gradient norm > 100 in {len(exploding)} LoRA layer(s): {', '.join(exploding[:3])}",
                "lower train.lr, or clip gradients harder") if exploding else None
            dead = set(lo.dead())
            live = [g for layer, g in lo.grad_norm.items() if layer not in dead]
            conditions["vanishing_gradients"] = (
                "warning", "every live LoRA layer's gradient norm is below 1e-5",
                "raise train.lr or lora_alpha; check that the loss is taken on some tokens (loss_on)") \
                if lo.steps >= lo.dead_after and live and max(live) < 1e-5 else None
            conditions["dead_layers"] = (
                "warning", f"{len(dead)} LoRA layer(s) learn nothing: {', '.join(sorted(dead)[:5])}",
                "these layers get no gradient: are they frozen, or cut off from the loss?") if dead else None
            imb = lo.imbalance()
            conditions["gradient_imbalance"] = (
                "info", f"gradient norms differ {imb:.0f}x between LoRA layers",
                "usually harmless; if some layers never learn, check target_modules") \
                if imb and imb > 1000 else None
            ratio = lo.update_ratio()
            conditions["lr_too_low"] = (
                "warning", f"one step moves the adapter by {ratio:.1e} of its size",
                "raise train.lr: the adapter barely changes") \
                if ratio is not None and lo.steps > WARMUP_STEPS and ratio < 1e-6 else None
        if ev is not None and ev.last is not None and ev.last.get("ece") is not None:
            ece = ev.last["ece"]
            conditions["poor_calibration"] = (
                "warning", f"expected calibration error {ece:.2f} on the fixed eval set (> {self.ece_threshold})",
                "the model's confidence does not match its accuracy; more data or epochs, or lower lr") \
                if ece > self.ece_threshold else None
        conditions["regression"] = self._regression()
        self._apply(conditions, step)

    def _use_best(self) -> str:
        """'use checkpoint-N (best, EM x%)' and how to run it, or '' before any checkpoint is scored."""
        b = self.best.best if self.best is not None else None
        if self.best is None or b is None:
            return ""
        job = f"--job {self.job_id} " if self.job_id is not None else ""
        return f"use checkpoint-{b['step']} (best, {self.best.describe(b)}): `trainctl bench run {job}--best`"

    def _stop_advice(self) -> str:
        """Whether stopping now would lose anything measured (the best checkpoint is always kept)."""
        ev = self.fixed_eval
        if ev is not None and ev.last is not None and ev.trend == "improving":
            return "but the fixed evaluation is still improving, so stopping now would lose that"
        use = self._use_best()
        return ("stopping now loses nothing measured: " + use) if use else "stop early or change lr/data"

    def _regression(self) -> tuple[str, str, str] | None:
        """Fixed-eval EM clearly below the best checkpoint's, for the last two evaluations after it."""
        ev, bc = self.fixed_eval, self.best
        if ev is None or bc is None or bc.best is None or bc.best.get("exact_match") is None or len(ev.history) < 2:
            return None
        best_em = bc.best["exact_match"]
        recent = list(ev.history)[-2:]
        if not all(h["step"] > bc.best["step"] and h["exact_match"] <= best_em - self.regression_threshold
                   for h in recent):
            return None
        return ("warning", f"fixed-eval exact match fell to {recent[-1]['exact_match']:.0%} (best {best_em:.0%} at "
                           f"step {bc.best['step']}) for two evaluations",
                self._use_best() + "; lower train.lr if the run keeps degrading")

    def _apply(self, conditions: dict[str, tuple[str, str, str] | None], step: int) -> None:
        for alert_id, cond in conditions.items():
            if cond is not None and alert_id not in self.active:
                severity, message, recommendation = cond
                alert = Alert(alert_id, severity, message, recommendation, step, time.time())
                self.active[alert_id] = alert
                self.fired[alert_id] = self.fired.get(alert_id, 0) + 1
                self._log("fired", alert, step)
                if severity == "critical" and self.critical is None:
                    self.critical = alert
            elif cond is None and alert_id in self.active:
                self._log("resolved", self.active.pop(alert_id), step)

    def _log(self, event: str, alert: Alert, step: int) -> None:
        if self.log_path is not None:
            append_jsonl(self.log_path, {"event": event, "step": step, "time": time.time(), **asdict(alert)})

    def summary(self) -> dict[str, Any]:
        by_sev = {sev: sum(1 for a in self.active.values() if a.severity == sev) for sev in SEVERITIES}
        return {"active_alerts": [asdict(a) for a in sorted(self.active.values(),
                                                            key=lambda a: -SEVERITIES.index(a.severity))],
                "alert_summary": {**by_sev, "fired_total": sum(self.fired.values()), "fired": dict(self.fired)}}
