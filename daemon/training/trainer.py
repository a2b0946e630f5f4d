"""The Trainer the recipe runs: transformers' `Trainer` with what trainctl's batches and
per-example dynamics need.

- Packed batches (daemon/training/packing.py): the collator's counting-only `attention_mask` is
  dropped before the forward pass, so that the model builds its block-diagonal mask from the
  position ids (transformers does that only when no attention mask and no cache are passed); each
  epoch gets its own packing plan (`EpochPlan`).
- The output layer only where a label is (daemon/training/labelled_head.py): for models whose
  logits are the output layer over the decoder's last hidden state, the decoder runs on the batch
  and the output layer on the trained positions alone, and the loss is the same token-level
  cross-entropy the model's own loss is (summed and divided by the Trainer's `num_items_in_batch`,
  or the mean). Other models run their own forward pass. The model's own forward is then not
  called, so callbacks that read its loss through a forward hook (the streaming metrics, the NaN
  fault) get it from the Trainer instead: each callback with an `on_training_loss(loss, logits)`
  method is called with every training forward's loss and the logits of its trained positions [K,
  vocabulary], in the callbacks' order; a tensor it returns replaces the loss.
- Per-example dynamics (daemon/training/dynamics_recorder.py): the collators carry each token's
  example index (`example_index`, [rows, width], -1 where no example's token is); it never reaches
  the model. The logits the forward pass computed for the loss are handed to the recorder, before
  the optimizer step.

Imported lazily (transformers is heavy): `trainer_class()` builds the class on first use.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from daemon.chat.render import IGNORE
from daemon.training.labelled_head import labelled_logits, next_token_targets, split_head


@cache
def trainer_class() -> Any:
    from transformers import Trainer, TrainerCallback

    class EpochPlan(TrainerCallback):
        """Re-plans a packed dataset as each epoch begins (state.epoch is then the number of epochs
        done, a resumed run's fraction included), so each epoch has its own rows and a resumed one
        gets back the plan it skips in."""

        def __init__(self, dataset: Any):
            self.dataset = dataset

        def on_epoch_begin(self, args, state, control, **kw):
            self.dataset.set_epoch(int(state.epoch + 1e-9))

    class TrainctlTrainer(Trainer):
        """`dynamics`: a DynamicsRecorder (or None) that gets every training forward pass's
        logits."""

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
            parts = split_head(model) if not return_outputs and "labels" in inputs else None
            if parts is not None:
                return self._labelled_loss(
                    parts, inputs, index if record else None, num_items_in_batch
                )
            loss, outputs = super().compute_loss(
                model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch
            )
            if record:
                self.dynamics.record(outputs, inputs, index)
            return (loss, outputs) if return_outputs else loss

        def _labelled_loss(self, parts, inputs, index, num_items_in_batch):
            """The causal-LM loss with the output layer run on the trained positions only."""
            import torch.nn.functional as F

            targets = next_token_targets(inputs)  # [rows, width]: the token each position predicts
            keep = targets != IGNORE
            model_inputs = {k: v for k, v in inputs.items() if k not in ("labels", "shift_labels")}
            # accelerate puts mixed precision's autocast around the model's own forward, which this
            # path does not call: the same autocast goes around the decoder and the output layer
            # here
            with self.accelerator.autocast():
                logits, _ = labelled_logits(parts, model_inputs, keep)  # [K, vocabulary]
            golden = targets[keep]  # [K]
            # As transformers' ForCausalLMLoss: float32, summed over the accumulation window's
            # trained tokens and divided by their count when the Trainer passes it, else the mean
            scaled = self.model_accepts_loss_kwargs and num_items_in_batch is not None
            if scaled:
                loss = F.cross_entropy(logits.float(), golden, reduction="sum")
                loss = loss / (
                    num_items_in_batch.to(loss.device)
                    if hasattr(num_items_in_batch, "to")
                    else num_items_in_batch
                )
            else:
                loss = F.cross_entropy(logits.float(), golden)
            # what a hook on the model's forward would see
            for callback in self.callback_handler.callbacks:
                observe = getattr(callback, "on_training_loss", None)
                replaced = observe(loss, logits.detach()) if observe is not None else None
                if replaced is not None:
                    loss = replaced
            # as Trainer.compute_loss scales it
            if scaled and self.args.average_tokens_across_devices:
                world = self.accelerator.num_processes // self.get_tp_size()
                loss = loss * (world if self.args.n_gpu <= 1 else self.args.n_gpu)
            if index is not None:
                # position t predicts token t + 1, of that token's example
                if inputs.get("shift_labels") is None:
                    index = F.pad(index[:, 1:], (0, 1), value=-1)
                self.dynamics.record_kept(logits.detach(), golden, index[keep])
            return loss

    return TrainctlTrainer
