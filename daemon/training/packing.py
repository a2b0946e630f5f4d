"""Padding-free batches (`train.packing = true`): no compute spent on padding.

**The plan** (`plan_batches`, once per run, reproducible by seed). The examples are shuffled; within windows of
`WINDOW` examples they are packed first-fit decreasing into rows of at most max_length tokens (precisely: of
batch_tokens / ceil(batch_tokens / max_length) tokens, so that a micro-batch is a whole number of full rows; a
longer example is a row of its own). The rows, shuffled, are grouped into micro-batches of about `batch_tokens`
real tokens (a row joins when at least half of it fits), so an epoch has about total tokens / batch_tokens steps.
The Trainer's own sampler then shuffles the micro-batches every epoch and skips the ones already trained when a run
resumes mid-epoch (each micro-batch is one item of the dataset, batch size 1).

**A micro-batch** (`PackedCollator`): rows [rows, longest row] of concatenated examples with `position_ids`
restarting at 0 for each example and no attention mask, so that transformers' SDPA and eager attention build a
block-diagonal causal mask (each example sees only itself; the tail padding of a short row is a segment of its own
that no real token sees). `shift_labels` carries each example's next-token targets with -100 at its last position,
so no example's first token is predicted from the one before it; the Trainer counts `num_items_in_batch` from it,
so the loss is the mean over the trained tokens of the whole accumulation window, as on the padded path. On
flash-attention models the micro-batch is one row and the collator hands the varlen kernel the sequence boundaries
(`cu_seq_lens_*`, `max_length_*`) instead of letting each layer infer them.

The collator also returns an `attention_mask` of ones over real tokens: only for the Trainer's non-padding token count
(tokens/s counts real tokens). `PackedTrainer.compute_loss` drops it before the forward pass.
"""

from __future__ import annotations

import random
from typing import Any

from daemon.chat.render import IGNORE

WINDOW = 1024
"""Examples per first-fit-decreasing window: large enough to fill rows, small enough to keep the shuffle's mixing."""


def _first_fit_decreasing(items: list[int], lengths: list[int], cap: int) -> list[list[int]]:
    """Bins of at most `cap` tokens (an item longer than that gets a bin of its own), longest items first."""
    bins: list[list[int]] = []
    free: list[int] = []
    for i in sorted(items, key=lambda i: (-lengths[i], i)):
        k = next((b for b, room in enumerate(free) if room >= lengths[i]), len(bins))
        if k == len(bins):
            bins.append([])
            free.append(max(cap, lengths[i]))
        bins[k].append(i)
        free[k] -= lengths[i]
    return bins


def plan_batches(lengths: list[int], max_length: int, batch_tokens: int, seed: int) -> list[list[list[int]]]:
    """Micro-batches of rows of example indices (see the module docstring). Reproducible by seed."""
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    # Rows of an equal share of the budget, at most max_length: a micro-batch is a whole number of full rows
    per_batch = -(-batch_tokens // max_length)
    cap = max(1, -(-batch_tokens // per_batch))
    rows: list[list[int]] = []
    for w in range(0, len(order), WINDOW):
        rows += _first_fit_decreasing(order[w:w + WINDOW], lengths, cap)
    rng.shuffle(rows)
    batches: list[list[list[int]]] = []
    tokens = 0
    for row in rows:
        n = sum(lengths[i] for i in row)
        # A row joins the micro-batch when that brings it nearer the budget than it is (at least half the row fits),
        # so an epoch has about total tokens / batch_tokens steps whatever the row size.
        if batches and tokens + n / 2 < batch_tokens:
            batches[-1].append(row)
            tokens += n
        else:
            batches.append([row])
            tokens = n
    return batches


class PackedDataset:
    """The planned micro-batches as dataset items: item k = the encoded examples of micro-batch k, by row."""

    def __init__(self, examples: list[dict[str, list[int]]], plan: list[list[list[int]]]):
        self.examples = examples
        self.plan = plan

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, k: int) -> list[list[dict[str, list[int]]]]:
        return [[self.examples[i] for i in row] for row in self.plan[k]]


class PackedCollator:
    """One planned micro-batch -> padding-free tensors (see the module docstring). Shapes: [rows, longest row]."""

    def __init__(self, pad_id: int, flash: bool = False):
        self.pad_id = pad_id
        self.flash = flash
        """Flash-attention varlen: one row, with the sequence boundaries."""

    def __call__(self, items: list[list[list[dict[str, list[int]]]]]) -> dict[str, Any]:
        import torch

        rows = [row for item in items for row in item]
        if self.flash:
            rows = [[ex for row in rows for ex in row]]
        width = max(sum(len(ex["input_ids"]) for ex in row) for row in rows)
        shape = (len(rows), width)
        ids = torch.full(shape, self.pad_id, dtype=torch.long)
        pos = torch.zeros(shape, dtype=torch.long)
        labels = torch.full(shape, IGNORE, dtype=torch.long)
        shift = torch.full(shape, IGNORE, dtype=torch.long)
        real = torch.zeros(shape, dtype=torch.long)
        starts = [0]
        for r, row in enumerate(rows):
            at = 0
            for ex in row:
                n = len(ex["input_ids"])
                ids[r, at:at + n] = torch.tensor(ex["input_ids"])
                pos[r, at:at + n] = torch.arange(n)
                lab = torch.tensor(ex["labels"])
                labels[r, at:at + n] = lab
                shift[r, at:at + n - 1] = lab[1:]  # the last position predicts nothing: the next example is not its
                real[r, at:at + n] = 1
                at += n
                starts.append(starts[-1] + n)
            pos[r, at:] = torch.arange(width - at)  # tail padding: a segment of its own, never attended to
        batch = {"input_ids": ids, "position_ids": pos, "labels": labels, "shift_labels": shift,
                 "attention_mask": real}
        if self.flash:
            cu = torch.tensor(starts, dtype=torch.int32)
            longest = int((cu[1:] - cu[:-1]).max())
            batch.update(cu_seq_lens_q=cu, cu_seq_lens_k=cu, max_length_q=longest, max_length_k=longest)
        return batch


def packed_trainer_class() -> Any:
    """The Trainer with the one change padding-free batches need (imported lazily: transformers is heavy)."""
    from transformers import Trainer

    class PackedTrainer(Trainer):
        """Drops the collator's counting-only attention mask, so that the model builds its block-diagonal mask from
        the position ids (transformers does that only when no attention mask and no cache are passed)."""

        def compute_loss(self, model, inputs, *args, **kwargs):
            if "position_ids" in inputs:
                inputs = {k: v for k, v in inputs.items() if k != "attention_mask"}
            return super().compute_loss(model, inputs, *args, **kwargs)

    return PackedTrainer


class Batching:
    """How the encoded training examples reach the Trainer: dataset, collator, Trainer class and per-device batch
    size, with a report for config.json. `train.packing = false` gives the padded path (PadCollator, batch_size
    examples a step)."""

    def __init__(self, encoded: list[dict[str, list[int]]], cfg: Any, pad_id: int, flash: bool = False):
        from transformers import Trainer

        from daemon.training.data import PadCollator

        lengths = [len(e["input_ids"]) for e in encoded]
        self.real_tokens = sum(lengths)
        if not cfg.packing:
            self.dataset: Any = encoded
            self.collator: Any = PadCollator(pad_id)
            self.trainer_class: Any = Trainer
            self.batch_size = cfg.batch_size
            self.report = {"packing": False, "batch_size": cfg.batch_size}
            return
        # batch_tokens = 0: batch_size examples' worth of tokens, so a step carries as much as it did padded
        budget = cfg.batch_tokens or max(1, round(cfg.batch_size * self.real_tokens / max(1, len(encoded))))
        plan = plan_batches(lengths, cfg.max_length, budget, cfg.seed)
        self.dataset = PackedDataset(encoded, plan)
        self.collator = PackedCollator(pad_id, flash)
        self.trainer_class = packed_trainer_class()
        self.batch_size = 1
        rows = [row for batch in plan for row in batch]
        width = [max(sum(lengths[i] for i in r) for r in batch) * len(batch) for batch in plan]
        self.report = {"packing": True, "batch_tokens": budget, "micro_batches": len(plan), "rows": len(rows),
                       "examples_per_step": round(len(encoded) / max(1, len(plan)), 2),
                       "padding_share": round(1 - self.real_tokens / max(1, sum(width)), 4),
                       "flash_varlen": flash}

    @property
    def items_per_epoch(self) -> int:
        """Dataset items one epoch draws (examples when padded, micro-batches when packed)."""
        return len(self.dataset)
