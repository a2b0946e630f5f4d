"""Alerts: rules over the other collectors' state, each with a severity and a recommendation.

An alert fires once when its condition starts to hold, stays active (not repeated) while it holds,
and resolves by itself when it clears; each firing and resolution is one line in `alerts.jsonl`
when a path is given, and one line of the job's log. While it stays active its message and
recommendation follow the latest check, so they carry the figures of now, not of when it fired.
Every threshold is a setting of `[alerts]` (daemon/config.AlertsConfig); the gradient ones
(exploding, vanishing, imbalance) are handed to the LoRA monitor, whose verdicts both the status's
`lora_summary` and these rules read. A NaN/Inf raw loss is critical: training is stopped at once
(no checkpoint of the poisoned weights is written, so the last complete one is kept) and `critical`
says why.

Rules (checked after every optimizer step, and after every evaluation for calibration; defaults in
brackets):
  nan_loss             critical  the raw loss is NaN or Inf
  loss_spike           warning   raw loss > loss_spike_factor [2] x the EMA (the recent level),
  after warmup_steps grad_spike           warning   the gradient norm (before clipping) >
  grad_spike_factor [5] x its running level exploding_gradients  warning   a LoRA layer's gradient
  norm > exploding_grad_norm [100] (before clipping) vanishing_gradients  warning   every live LoRA
  layer's gradient norm < vanishing_grad_norm [1e-5] dead_layers          warning   LoRA layers
  with neither gradient nor update for a while gradient_imbalance   info      largest / smallest
  layer gradient norm > imbalance_ratio [1000] lr_too_high          warning   the EMA loss climbed
  divergence_factor [1.5] x above its best (divergence) lr_too_low           warning   updates move
  the adapter by < min_update_ratio [1e-6] of its norm a step plateau              info      the
  EMA improved < plateau_improvement [1%] over the last plateau_steps [50] steps
                                 (the advice names the best checkpoint)
  poor_calibration     warning   fixed-eval ECE > max_ece [0.3]
  regression           warning   fixed-eval exact match stayed `regression_threshold` below the
  best checkpoint's for
                                 the last two evaluations (the advice: use that checkpoint)
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from daemon.atomic import append_jsonl
from daemon.config import AlertsConfig
from daemon.training.collectors import Collector

if TYPE_CHECKING:
    from daemon.training.collectors.best_checkpoint import BestCheckpoint
    from daemon.training.collectors.fixed_eval import FixedEval
    from daemon.training.collectors.lora_monitor import LoRAMonitor
    from daemon.training.collectors.streaming import StreamingMetrics

SEVERITIES = ("info", "warning", "critical")
GRAD_EMA_ALPHA = 0.1
"""Weight of the newest gradient norm in its running level."""


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

    def __init__(
        self,
        streaming: StreamingMetrics | None = None,
        lora: LoRAMonitor | None = None,
        fixed_eval: FixedEval | None = None,
        log_path: Path | None = None,
        best: BestCheckpoint | None = None,
        regression_threshold: float = 0.1,
        job_id: int | None = None,
        limits: AlertsConfig | None = None,
    ):
        self.streaming = streaming
        self.lora = lora
        self.fixed_eval = fixed_eval
        self.best = best
        self.regression_threshold = regression_threshold
        self.job_id = job_id
        self.log_path = log_path
        self.limits = limits or AlertsConfig()
        self.grad_level: float | None = None
        """The running level (EMA) of the gradient norm, spikes counted a tenth."""
        self.grad_norms = 0
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
            # never checkpoint poisoned weights: the last complete one stays
            control.should_save = False
        return control

    def on_evaluate(self, args, state, control, **kw):
        self.check(state.global_step)

    def on_log(self, args, state, control, logs=None, **kw):
        norm = (logs or {}).get("grad_norm")
        if isinstance(norm, (int, float)) and math.isfinite(norm):
            self._apply(
                {"grad_spike": self._grad_spike(float(norm), state.global_step)}, state.global_step
            )

    def _grad_spike(self, norm: float, step: int) -> tuple[str, str, str] | None:
        """A gradient norm well above its running level (the level hardly moves with a spike)."""
        level, factor = self.grad_level, self.limits.grad_spike_factor
        self.grad_norms += 1
        if level is None:
            self.grad_level = norm
            return None
        if self.grad_norms <= self.limits.warmup_steps or norm <= factor * level:
            self.grad_level = level + GRAD_EMA_ALPHA * (norm - level)
            return None
        # A spike moves the level a little only, so that a lasting new level is, in time, the level
        self.grad_level = level + GRAD_EMA_ALPHA / 10 * (norm - level)
        return (
            "warning",
            f"gradient norm {norm:.3g} at step {step} is "
            f"{norm / level:.0f}x its running level {level:.3g}",
            "one batch pushed the weights hard: if it repeats or the loss jumps with "
            "it, lower train.lr or train.max_grad_norm, and look at the batch's records",
        )

    # -- rules
    # ---------------------------------------------------------------------------------------------
    def check(self, step: int) -> None:
        conditions: dict[str, tuple[str, str, str] | None] = {}
        s, lo, ev = self.streaming, self.lora, self.fixed_eval
        if s is not None and s.last_loss is not None:
            loss, ema = s.last_loss, s.ema
            conditions["nan_loss"] = (
                (
                    "critical",
                    f"the raw loss is {loss} at step {step}",
                    "lower the learning rate, check the data for empty or extreme "
                    "records; the job stopped and its last complete checkpoint is kept",
                )
                if not math.isfinite(loss)
                else None
            )
            lim = self.limits
            warm = s.steps > lim.warmup_steps and ema is not None
            if ema is not None:
                self._first_ema = self._first_ema if self._first_ema is not None else ema
                self._best_ema = ema if self._best_ema is None else min(self._best_ema, ema)
            # Ratios alone misfire once the loss is near zero (0.004 -> 0.009 is "2x"): a rise must
            # also be worth 5% (spike) or 10% (divergence) of the loss the run started from.
            scale = abs(self._first_ema or 0.0)
            conditions["loss_spike"] = (
                (
                    "warning",
                    f"loss {loss:.3g} at step {step} is "
                    f"{loss / ema:.1f}x its recent level {ema:.3g}",
                    "a bad batch or a too-high learning rate: if it repeats, lower train.lr",
                )
                if warm
                and ema is not None
                and math.isfinite(loss)
                and loss > lim.loss_spike_factor * ema
                and loss - ema > lim.loss_spike_min_rise * scale
                else None
            )
            conditions["lr_too_high"] = (
                (
                    "warning",
                    f"the smoothed loss is {ema:.3g} at step {step}, "
                    f"{ema / self._best_ema:.1f}x its best {self._best_ema:.3g}",
                    "training is diverging: lower train.lr (try 3-10x lower)",
                )
                if warm
                and ema is not None
                and self._best_ema is not None
                and ema > lim.divergence_factor * self._best_ema
                and ema - self._best_ema > lim.divergence_min_rise * scale
                else None
            )
            improvement = s.improvement()
            conditions["plateau"] = (
                (
                    "info",
                    f"the smoothed loss ({ema:.3g}) improved "
                    f"{improvement:.2%} over the last {s.trend_window} steps",
                    "learning has levelled off: more epochs will not help much; "
                    + self._stop_advice(),
                )
                if improvement is not None and abs(improvement) < lim.plateau_improvement
                else None
            )
        if lo is not None and lo.grad_norm:
            # The gradient thresholds are the monitor's (set from [alerts]), so its summary says
            # the same
            exploding = lo.exploding()
            conditions["exploding_gradients"] = (
                (
                    "warning",
                    f"gradient norm > {lo.exploding_norm:g} in {len(exploding)} LoRA layer(s), "
                    f"up to {lo.grad_norm[exploding[0]]:.3g}: {', '.join(exploding[:3])}",
                    "lower train.lr, or clip gradients harder",
                )
                if exploding
                else None
            )
            dead = set(lo.dead())
            live = [g for layer, g in lo.grad_norm.items() if layer not in dead]
            conditions["vanishing_gradients"] = (
                (
                    "warning",
                    "every live LoRA layer's gradient norm is below "
                    f"{lo.vanishing_norm:g} (largest {max(live, default=0.0):.2g})",
                    "raise train.lr or lora_alpha; check that "
                    "the loss is taken on some tokens (loss_on)",
                )
                if lo.steps >= lo.dead_after and live and max(live) < lo.vanishing_norm
                else None
            )
            conditions["dead_layers"] = (
                (
                    "warning",
                    f"{len(dead)} LoRA layer(s) learn nothing: {', '.join(sorted(dead)[:5])}",
                    "these layers get no gradient: are they frozen, or cut off from the loss?",
                )
                if dead
                else None
            )
            imb = lo.imbalance()
            conditions["gradient_imbalance"] = (
                (
                    "info",
                    f"gradient norms differ {imb:.0f}x between LoRA layers",
                    "usually harmless; if some layers never learn, check target_modules",
                )
                if imb and imb > lo.imbalance_ratio
                else None
            )
            ratio = lo.update_ratio()
            conditions["lr_too_low"] = (
                (
                    "warning",
                    f"one step moves the adapter by {ratio:.1e} of its size",
                    "raise train.lr: the adapter barely changes",
                )
                if ratio is not None
                and lo.steps > self.limits.warmup_steps
                and ratio < self.limits.min_update_ratio
                else None
            )
        if ev is not None and ev.last is not None and ev.last.get("ece") is not None:
            ece = ev.last["ece"]
            conditions["poor_calibration"] = (
                (
                    "warning",
                    f"expected calibration error {ece:.2f} on the fixed eval "
                    f"set at step {ev.last['step']} (> {self.limits.max_ece})",
                    "the model's confidence does not match its "
                    "accuracy; more data or epochs, or lower lr",
                )
                if ece > self.limits.max_ece
                else None
            )
        conditions["regression"] = self._regression()
        self._apply(conditions, step)

    def _use_best(self) -> str:
        """'use checkpoint-N (best, EM x%)' and how to run it, or '' before any checkpoint is
        scored."""
        b = self.best.best if self.best is not None else None
        if self.best is None or b is None:
            return ""
        job = f"--job {self.job_id} " if self.job_id is not None else ""
        return (
            f"use checkpoint-{b['step']} (best, "
            f"{self.best.describe(b)}): `trainctl bench run {job}--best`"
        )

    def _stop_advice(self) -> str:
        """Whether stopping now would lose anything measured (the best checkpoint is always
        kept)."""
        ev = self.fixed_eval
        if ev is not None and ev.last is not None and ev.trend == "improving":
            return "but the fixed evaluation is still improving, so stopping now would lose that"
        use = self._use_best()
        return (
            ("stopping now loses nothing measured: " + use)
            if use
            else "stop early or change lr/data"
        )

    def _regression(self) -> tuple[str, str, str] | None:
        """Fixed-eval EM clearly below the best checkpoint's, for the last two evaluations after
        it."""
        ev, bc = self.fixed_eval, self.best
        if (
            ev is None
            or bc is None
            or bc.best is None
            or bc.best.get("exact_match") is None
            or len(ev.history) < 2
        ):
            return None
        best_em = bc.best["exact_match"]
        recent = list(ev.history)[-2:]
        if not all(
            h["step"] > bc.best["step"] and h["exact_match"] <= best_em - self.regression_threshold
            for h in recent
        ):
            return None
        return (
            "warning",
            f"fixed-eval exact match fell to {recent[-1]['exact_match']:.0%} "
            f"(best {best_em:.0%} at step {bc.best['step']}) for two evaluations",
            self._use_best() + "; lower train.lr if the run keeps degrading",
        )

    def _apply(self, conditions: dict[str, tuple[str, str, str] | None], step: int) -> None:
        for alert_id, cond in conditions.items():
            if cond is not None and alert_id not in self.active:
                severity, message, recommendation = cond
                alert = Alert(alert_id, severity, message, recommendation, step, time.time())
                self.active[alert_id] = alert
                self.fired[alert_id] = self.fired.get(alert_id, 0) + 1
                self._log("fired", alert, step)
                self.say(f"alert raised at step {step}: {alert_id} ({severity}) — {message}")
                if severity == "critical" and self.critical is None:
                    self.critical = alert
            elif cond is not None:  # still holds: the message follows the figures of now
                self.active[alert_id].severity, self.active[alert_id].message = cond[0], cond[1]
                self.active[alert_id].recommendation = cond[2]
            elif alert_id in self.active:
                alert = self.active.pop(alert_id)
                self._log("resolved", alert, step)
                self.say(
                    f"alert resolved at step {step}: {alert_id} "
                    f"(active since step {alert.since_step})"
                )

    def _log(self, event: str, alert: Alert, step: int) -> None:
        """One line of alerts.jsonl; with the best checkpoint's step at the time (the per-example
        dynamics end the learning part of a regressed run there:
        daemon/runs/dynamics.learning_window)."""
        best = self.best.best if self.best is not None else None
        if self.log_path is not None:
            append_jsonl(
                self.log_path,
                {
                    "event": event,
                    "step": step,
                    "time": time.time(),
                    **asdict(alert),
                    **({"best_step": best["step"]} if best else {}),
                },
            )

    def about(self) -> str:
        lim = self.limits
        return (
            f"loss spike {lim.loss_spike_factor:g}x, divergence {lim.divergence_factor:g}x, "
            f"gradient spike {lim.grad_spike_factor:g}x, exploding > {lim.exploding_grad_norm:g}, "
            f"ECE > {lim.max_ece:g}; thresholds in the alerts section of trainctl.toml"
        )

    def summary(self) -> dict[str, Any]:
        by_sev = {
            sev: sum(1 for a in self.active.values() if a.severity == sev) for sev in SEVERITIES
        }
        return {
            "active_alerts": [
                asdict(a)
                for a in sorted(self.active.values(), key=lambda a: -SEVERITIES.index(a.severity))
            ],
            "alert_summary": {
                **by_sev,
                "fired_total": sum(self.fired.values()),
                "fired": dict(self.fired),
            },
        }
