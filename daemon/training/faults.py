"""Fault injection for tests and drills: `TRAINCTL_FAULT=nan_at_step=N` makes the model's loss NaN
from optimizer step N on (gradients and weights follow, as with a real numerical blow-up);
`lr_jump_at_step=N` multiplies the learning rate by 100 from step N on (`lr_jump_at_step=NxF` by
F), so that a run learns, peaks and then degrades; `kill_in_save_at_step=N` SIGKILLs the training
process while it saves step N's checkpoint (its files written, its completeness marker not yet), as
a power cut mid-save would; `...@NAME` only in jobs whose dataset folder starts with NAME. Unset,
nothing is installed."""

from __future__ import annotations

import os
import signal
from typing import Any

from transformers import TrainerCallback


class NaNLossFault(TrainerCallback):
    def __init__(self, at_step: int):
        self.at_step = at_step
        self.step = 0
        self._handle: Any = None

    def on_train_begin(self, args, state, control, model=None, **kw):
        if model is not None:
            self._handle = model.register_forward_hook(self._poison)

    def on_step_begin(self, args, state, control, **kw):
        self.step = state.global_step + 1  # the step now running

    def _poison(self, module, args, output):
        if module.training and getattr(output, "loss", None) is not None:
            output.loss = self.on_training_loss(output.loss)
        return output

    def on_training_loss(self, loss: Any, logits: Any = None) -> Any:
        """The loss as the fault leaves it (trainctl's Trainer asks where it computes the loss
        itself)."""
        return loss * float("nan") if self.step >= self.at_step else loss


class LearningRateJump(TrainerCallback):
    """From optimizer step `at_step` on, every step runs at `factor` times the scheduled learning
    rate (the scheduler sets the rate again after each step, so it is scaled again before the
    next)."""

    def __init__(self, at_step: int, factor: float):
        self.at_step, self.factor = at_step, factor

    def on_step_begin(self, args, state, control, optimizer=None, **kw):
        if optimizer is not None and state.global_step + 1 >= self.at_step:
            for group in optimizer.param_groups:
                group["lr"] *= self.factor


class KillInSave(TrainerCallback):
    """Dies by SIGKILL in the `on_save` of step `at_step`: the faults come before RunControl among
    the recipe's callbacks, so the checkpoint's files are there and its TRAINCTL_COMPLETE marker is
    not."""

    def __init__(self, at_step: int):
        self.at_step = at_step

    def on_save(self, args, state, control, **kw):
        if state.global_step == self.at_step:
            os.kill(os.getpid(), signal.SIGKILL)


def from_env(dataset: str = "") -> list[TrainerCallback]:
    kind, _, rest = os.environ.get("TRAINCTL_FAULT", "").partition("=")
    value, _, only = rest.partition("@")
    if not kind or (only and not dataset.startswith(only)):
        return []
    if kind == "nan_at_step":
        return [NaNLossFault(int(value))]
    if kind == "lr_jump_at_step":
        step, _, factor = value.partition("x")
        return [LearningRateJump(int(step), float(factor or 100))]
    if kind == "kill_in_save_at_step":
        return [KillInSave(int(value))]
    return []
