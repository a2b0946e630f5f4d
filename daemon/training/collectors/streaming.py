"""Streaming loss metrics from the raw per-step loss: EMA, variance, token entropy, trend.

The Trainer's logged loss is an average over `logging_steps` that can hide a NaN; this collector
reads the loss the model itself returns, through a forward hook it puts on the model at
`on_train_begin` (training-mode forwards only, so evaluation passes are not counted). Values stay
on the device until the step ends: one host sync a step.

Token entropy (nats) is the mean entropy of the predicted distribution over the trained positions
of a step, computed every `entropy_every` steps on at most `entropy_positions` of them, so a large
vocabulary costs little.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

from daemon.training.collectors import Collector


class StreamingMetrics(Collector):
    name = "streaming"

    def __init__(
        self,
        alpha: float = 0.1,
        trend_window: int = 50,
        entropy_positions: int = 256,
        entropy_every: int = 5,
    ):
        self.alpha = alpha
        """EMA weight of the newest step (higher = reacts faster)."""
        self.trend_window = trend_window
        self.entropy_positions = entropy_positions
        self.entropy_every = entropy_every
        self.ema: float | None = None
        self.var = 0.0
        self.last_loss: float | None = None
        """The raw loss of the last optimizer step (mean over its micro-batches); NaN/Inf kept as
        they are."""
        self.entropy: float | None = None
        self.steps = 0
        # EMA at each step, for the trend
        self.history: deque[float] = deque(maxlen=trend_window + 1)
        self._losses: list[Any] = []
        self._entropies: list[Any] = []
        self._handle: Any = None

    # -- hooks
    # ---------------------------------------------------------------------------------------------
    def on_train_begin(self, args, state, control, model=None, **kw):
        if model is not None and self._handle is None:
            self._handle = model.register_forward_hook(self._capture, with_kwargs=True)

    def on_train_end(self, args, state, control, **kw):
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def _capture(self, module, args, kwargs, output) -> None:
        if not module.training:
            return
        loss = getattr(output, "loss", None)
        if loss is None and isinstance(output, (tuple, list)) and output:
            loss = output[0]
        if loss is None:
            return
        logits = getattr(output, "logits", None)
        labels = kwargs.get("labels")
        if logits is not None and labels is not None and self.steps % self.entropy_every == 0:
            # logits: (batch, seq, vocab); the prediction at t is for the token at t+1.
            logits = logits[:, :-1][labels[:, 1:] != -100]  # [trained positions, vocab]
        else:
            logits = None
        self.on_training_loss(loss, logits)

    def on_training_loss(self, loss: Any, logits: Any = None) -> None:
        """One training forward pass's loss, and the logits of its trained positions [K, vocab] (or
        None). trainctl's Trainer calls this where it computes the loss itself
        (daemon/training/trainer.py); in any other Trainer the forward hook reads both off the
        model's output."""
        import torch

        self._losses.append(loss.detach().float())
        if logits is not None and self.steps % self.entropy_every == 0:
            with torch.no_grad():
                picked = logits[: self.entropy_positions].float()
                if picked.numel():
                    logp = torch.log_softmax(picked, dim=-1)
                    self._entropies.append(-(logp.exp() * logp).sum(-1).mean())

    def on_step_end(self, args, state, control, **kw):
        if not self._losses:
            return
        import torch

        values = torch.stack(self._losses).mean()
        ent = torch.stack(self._entropies).mean() if self._entropies else None
        self._losses.clear()
        self._entropies.clear()
        self.update(float(values.cpu()), float(ent.cpu()) if ent is not None else None)

    # -- state
    # ---------------------------------------------------------------------------------------------
    def update(self, loss: float, entropy: float | None = None) -> None:
        """Feed one step's raw loss (and token entropy)."""
        self.steps += 1
        self.last_loss = loss
        if entropy is not None and math.isfinite(entropy):
            self.entropy = entropy
        if not math.isfinite(loss):
            return  # a NaN must not poison the average; the alerts collector acts on last_loss
        if self.ema is None:
            self.ema = loss
        else:
            diff = loss - self.ema
            self.ema += self.alpha * diff
            self.var = (1 - self.alpha) * (self.var + self.alpha * diff * diff)
        self.history.append(self.ema)

    @property
    def trend(self) -> str:
        """improving / stable / degrading: the EMA now against `trend_window` steps ago (1% either
        way)."""
        if len(self.history) < min(10, self.trend_window):
            return "stable"
        then, now = self.history[0], self.history[-1]
        if then == 0:
            return "stable"
        change = (now - then) / abs(then)
        return "improving" if change < -0.01 else "degrading" if change > 0.01 else "stable"

    def improvement(self) -> float | None:
        """Relative EMA improvement over the full trend window (None until the window is full)."""
        if len(self.history) <= self.trend_window or not self.history[0]:
            return None
        return (self.history[0] - self.history[-1]) / abs(self.history[0])

    def summary(self) -> dict[str, Any]:
        if self.ema is None and self.last_loss is None:
            return {}
        return {
            "streaming_ce": round(self.ema, 5) if self.ema is not None else None,
            "loss_variance": round(self.var, 6),
            "token_entropy": round(self.entropy, 4) if self.entropy is not None else None,
            "loss_trend": self.trend,
            "raw_loss": self.last_loss,
        }
