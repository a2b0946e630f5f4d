"""Fault injection for tests and drills: `TRAINCTL_FAULT=nan_at_step=N` makes the model's loss NaN from optimizer
step N on (gradients and weights follow, as with a real numerical blow-up); `nan_at_step=N@NAME` only in jobs whose
dataset folder starts with NAME. Unset, nothing is installed."""

from __future__ import annotations

import os
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
        if module.training and self.step >= self.at_step and getattr(output, "loss", None) is not None:
            output.loss = output.loss * float("nan")
        return output


def from_env(dataset: str = "") -> list[TrainerCallback]:
    spec = os.environ.get("TRAINCTL_FAULT", "")
    if spec.startswith("nan_at_step="):
        step, _, only = spec.split("=", 1)[1].partition("@")
        if not only or dataset.startswith(only):
            return [NaNLossFault(int(step))]
    return []
