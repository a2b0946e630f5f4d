"""The Trainer the recipe runs: transformers' `Trainer` with what trainctl's batches and per-example dynamics need.

- Packed batches (daemon/training/packing.py): the collator's counting-only `attention_mask` is dropped before the
  forward pass, so that the model builds its block-diagonal mask from the position ids (transformers does that only
  when no attention mask and no cache are passed); each epoch gets its own packing plan (`EpochPlan`).
- Per-example dynamics (daemon/training/dynamics_recorder.py): the collators carry each token's example index
  (`example_index`, [rows, width], -1 where no example's token is); it never reaches the model. The logits the
  forward pass computed for the loss are handed to the recorder, before the optimizer step.

Imported lazily (transformers is heavy): `trainer_class()` builds the class on first use.
"""

from __future__ import annotations

from functools import cache
from typing import Any


@cache
def trainer_class() -> Any:
    from transformers import Trainer, TrainerCallback

    class EpochPlan(TrainerCallback):
        """Re-plans a packed dataset as each epoch begins (state.epoch is then the number of epochs done, a resumed
        run's fraction included), so each epoch has its own rows and a resumed one gets back the plan it skips in."""

        def __init__(self, dataset: Any):
            self.dataset = dataset

        def on_epoch_begin(self, args, state, control, **kw):
            self.dataset.set_epoch(int(state.epoch + 1e-9))

    class TrainctlTrainer(Trainer):
        """`dynamics`: a DynamicsRecorder (or None) that gets every training forward pass's logits."""

        def __init__(self, *args, dynamics: Any = None, **kwargs):
            super().__init__(*args, **kwargs)
            self.dynamics = dynamics
            if hasattr(self.train_dataset, "set_epoch"):
                self.add_callback(EpochPlan(self.train_dataset))
            if dynamics is not None and dynamics not in self.callback_handler.callbacks:
                self.add_callback(dynamics)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            index = inputs.get("example_index")
            drop = {"example_index"} | ({"attention_mask"} if "position_ids" in inputs else set())
            inputs = {k: v for k, v in inputs.items() if k not in drop}
            record = self.dynamics is not None and index is not None and model.training
            loss, outputs = super().compute_loss(model, inputs, return_outputs=True,
                                                 num_items_in_batch=num_items_in_batch)
            if record:
                self.dynamics.record(outputs, inputs, index)
            return (loss, outputs) if return_outputs else loss

    return TrainctlTrainer
