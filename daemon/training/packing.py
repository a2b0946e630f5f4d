"""Padding-free batches (`train.packing = true`): no compute spent on padding.

**The plan** (`plan_batches`, one per epoch, reproducible by seed and epoch). The examples are
shuffled; within windows of `WINDOW` examples they are packed first-fit, in that shuffled order,
into rows of at most max(max_length, `ROW_FLOOR`) tokens (precisely: of batch_tokens /
ceil(batch_tokens / that) tokens, so that a micro-batch is a whole number of full rows; a longer
example is a row of its own). A row is a unit of packing, not an example: with a short max_length
("auto" picks the length of the longest examples) rows that short would hold one or two examples
each and waste their ends. The rows, shuffled, are grouped into micro-batches of about
`batch_tokens` real tokens (a row joins when at least half of it fits), so an epoch has about total
tokens / batch_tokens steps. Every later epoch is planned afresh (new rows, new company for each
example) and cut into as many micro-batches as the first had: the Trainer fixes an epoch's length
from the dataset's. The Trainer's own sampler shuffles the micro-batches and skips the ones already
trained when a run resumes mid-epoch (each micro-batch is one item of the dataset, batch size 1);
the resumed epoch's plan is rebuilt from seed and epoch, so it skips the same ones.

**A micro-batch** (`PackedCollator`): rows [rows, longest row] of concatenated examples with
`position_ids` restarting at 0 for each example and no attention mask, so that transformers' SDPA
and eager attention build a block-diagonal causal mask (each example sees only itself; the tail
padding of a short row is a segment of its own that no real token sees). `shift_labels` carries
each example's next-token targets with -100 at its last position, so no example's first token is
predicted from the one before it; the Trainer counts `num_items_in_batch` from it, so the loss is
the mean over the trained tokens of the whole accumulation window, as on the padded path. On
flash-attention models the micro-batch is one row and the collator hands the varlen kernel the
sequence boundaries (`cu_seq_lens_*`, `max_length_*`) instead of letting each layer infer them.

The collator also returns an `attention_mask` of ones over real tokens: only for the Trainer's
non-padding token count (tokens/s counts real tokens). The recipe's Trainer
(daemon/training/trainer.py) drops it before the forward pass and re-plans the dataset as each
epoch begins.
"""

from __future__ import annotations

import random
from typing import Any

from daemon.chat.render import IGNORE

ROW_FLOOR = 512
"""Rows are never capped below this many tokens (when the micro-batch's budget is larger): see the
docstring."""
WINDOW = 1024
"""Examples per first-fit window: the rows are filled from a shuffled window of this many examples
(a bound on the work, O(window x open rows), and on how far apart in the shuffle the examples of
one row can be)."""


def _first_fit(items: list[int], lengths: list[int], cap: int) -> list[list[int]]:
    """Rows of at most `cap` tokens, filled in the given (shuffled) order: each example goes into
    the first row with room for it (an example longer than `cap` gets a row of its own).

    Not first-fit *decreasing*: sorting by length fills rows a little better (1.8% padding against
    2.6% on the throughput benchmark's lengths) but makes them length-homogeneous, the longest
    examples of a window sharing the first rows: the spread of micro-batch mean lengths was 2.3x
    that of random batches on uniform 25-70-token lengths, 2.5x on the benchmark's log-normal ones,
    and on the tiny upper-casing demo (6 epochs) some steps' losses recurred at 2.3-5.4x the
    running level (loss_spike warnings). In shuffled order a row is a random sample of the window
    (spread 1.0x and 1.5x)."""
    rows: list[list[int]] = []
    free: list[int] = []
    for i in items:
        k = next((r for r, room in enumerate(free) if room >= lengths[i]), len(rows))
        if k == len(rows):
            rows.append([])
            free.append(max(cap, lengths[i]))
        rows[k].append(i)
        free[k] -= lengths[i]
    return rows


def _rows(
    lengths: list[int], max_length: int, batch_tokens: int, rng: random.Random
) -> list[list[int]]:
    """The examples, shuffled, first-fit into rows of an equal share of the budget (at most
    max_length), so that a micro-batch is a whole number of full rows; the rows shuffled again (a
    window's last rows are its emptiest)."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    per_batch = -(-batch_tokens // max_length)
    cap = max(1, -(-batch_tokens // per_batch))
    rows: list[list[int]] = []
    for w in range(0, len(order), WINDOW):
        rows += _first_fit(order[w : w + WINDOW], lengths, cap)
    rng.shuffle(rows)
    return rows


def _group(rows: list[list[int]], lengths: list[int], batch_tokens: int) -> list[list[list[int]]]:
    """Rows into micro-batches of about `batch_tokens`: a row joins the current micro-batch when
    that brings it nearer the budget than it is (at least half the row fits), so there are about
    total tokens / budget of them."""
    batches: list[list[list[int]]] = []
    tokens = 0
    for row in rows:
        n = sum(lengths[i] for i in row)
        if batches and tokens + n / 2 < batch_tokens:
            batches[-1].append(row)
            tokens += n
        else:
            batches.append([row])
            tokens = n
    return batches


def _to_count(
    batches: list[list[list[int]]], lengths: list[int], count: int
) -> list[list[list[int]]]:
    """Exactly `count` micro-batches: while there are too many, the lightest one joins its lighter
    neighbour; while too few, the heaviest is halved (by rows, or a one-row one by examples). Only
    the few micro-batches by which an epoch's plan differs in number change."""
    batches = [list(b) for b in batches]
    size = [sum(lengths[i] for r in b for i in r) for b in batches]
    while len(batches) > count:
        k = min(range(len(batches)), key=size.__getitem__)
        j = k - 1 if k == len(batches) - 1 or (k > 0 and size[k - 1] < size[k + 1]) else k + 1
        lo, hi = min(j, k), max(j, k)
        batches[lo : hi + 1] = [batches[lo] + batches[hi]]
        size[lo : hi + 1] = [size[lo] + size[hi]]
    while len(batches) < count:
        k = max(
            (b for b in range(len(batches)) if len(batches[b]) > 1 or len(batches[b][0]) > 1),
            key=size.__getitem__,
        )
        b = batches[k]
        if len(b) > 1:
            halves = [b[: len(b) // 2], b[len(b) // 2 :]]
        else:
            halves = [[b[0][: len(b[0]) // 2]], [b[0][len(b[0]) // 2 :]]]
        batches[k : k + 1] = halves
        size[k : k + 1] = [sum(lengths[i] for r in h for i in r) for h in halves]
    return batches


def plan_batches(
    lengths: list[int],
    max_length: int,
    batch_tokens: int,
    seed: int,
    epoch: int = 0,
    count: int | None = None,
) -> list[list[list[int]]]:
    """One epoch's micro-batches of rows of example indices (see the module docstring),
    reproducible by seed and epoch. `count` fixes how many (every epoch of a run has as many as its
    first); None = as the budget gives."""
    rng = random.Random(seed * 1_000_003 + epoch)
    rows = _rows(lengths, max_length, batch_tokens, rng)
    batches = _group(rows, lengths, batch_tokens)
    return batches if count is None else _to_count(batches, lengths, count)


class PackedDataset:
    """The micro-batches of the current epoch as dataset items: item k = the encoded examples of
    micro-batch k, by row. `set_epoch` re-plans (the recipe's Trainer calls it as each epoch
    begins); the number of items never changes."""

    def __init__(
        self, examples: list[dict[str, list[int]]], max_length: int, batch_tokens: int, seed: int
    ):
        self.examples = examples
        self.lengths = [len(e["input_ids"]) for e in examples]
        self.max_length, self.batch_tokens, self.seed = max_length, batch_tokens, seed
        self.plan = plan_batches(self.lengths, max_length, batch_tokens, seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.plan = plan_batches(
                self.lengths,
                self.max_length,
                self.batch_tokens,
                self.seed,
                epoch,
                count=len(self.plan),
            )
            self.epoch = epoch

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, k: int) -> list[list[dict[str, list[int]]]]:
        return [[self.examples[i] for i in row] for row in self.plan[k]]


class PackedCollator:
    """One planned micro-batch -> padding-free tensors (see the module docstring). Shapes: [rows,
    longest row]."""

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
        # each token's example (daemon/training/dynamics_recorder.py)
        index = torch.full(shape, -1, dtype=torch.long)
        starts = [0]
        for r, row in enumerate(rows):
            at = 0
            for ex in row:
                n = len(ex["input_ids"])
                ids[r, at : at + n] = torch.tensor(ex["input_ids"])
                pos[r, at : at + n] = torch.arange(n)
                lab = torch.tensor(ex["labels"])
                labels[r, at : at + n] = lab
                # the last position predicts nothing: the next example is not its
                shift[r, at : at + n - 1] = lab[1:]
                real[r, at : at + n] = 1
                index[r, at : at + n] = ex.get("index", -1)
                at += n
                starts.append(starts[-1] + n)
            # tail padding: a segment of its own, never attended to
            pos[r, at:] = torch.arange(width - at)
        batch = {
            "input_ids": ids,
            "position_ids": pos,
            "labels": labels,
            "shift_labels": shift,
            "attention_mask": real,
        }
        if any("index" in ex for row in rows for ex in row):
            batch["example_index"] = index
        if self.flash:
            cu = torch.tensor(starts, dtype=torch.int32)
            longest = int((cu[1:] - cu[:-1]).max())
            batch.update(
                cu_seq_lens_q=cu, cu_seq_lens_k=cu, max_length_q=longest, max_length_k=longest
            )
        return batch


class Batching:
    """How the encoded training examples reach the Trainer: dataset, collator, Trainer class and
    per-device batch size, with a report for config.json. `train.packing = false` gives the padded
    path (PadCollator, batch_size examples a step)."""

    def __init__(
        self, encoded: list[dict[str, list[int]]], cfg: Any, pad_id: int, flash: bool = False
    ):
        from daemon.training.data import PadCollator
        from daemon.training.trainer import trainer_class

        lengths = [len(e["input_ids"]) for e in encoded]
        self.real_tokens = sum(lengths)
        if not cfg.packing:
            self.dataset: Any = encoded
            self.collator: Any = PadCollator(pad_id)
            self.trainer_class: Any = trainer_class()
            self.batch_size = cfg.batch_size
            self.report = {"packing": False, "batch_size": cfg.batch_size}
            return
        # batch_tokens = 0: batch_size examples' worth of tokens, so a step carries as much as it
        # did padded
        budget = cfg.batch_tokens or max(
            1, round(cfg.batch_size * self.real_tokens / max(1, len(encoded)))
        )
        self.dataset = PackedDataset(
            encoded, max(cfg.resolved_max_length, ROW_FLOOR), budget, cfg.seed
        )
        plan = self.dataset.plan
        self.collator = PackedCollator(pad_id, flash)
        self.trainer_class = trainer_class()
        self.batch_size = 1
        rows = [row for batch in plan for row in batch]
        width = [max(sum(lengths[i] for i in r) for r in batch) * len(batch) for batch in plan]
        self.report = {
            "packing": True,
            "batch_tokens": budget,
            "micro_batches": len(plan),
            "rows": len(rows),
            "examples_per_step": round(len(encoded) / max(1, len(plan)), 2),
            "padding_share": round(1 - self.real_tokens / max(1, sum(width)), 4),
            "flash_varlen": flash,
        }

    @property
    def items_per_epoch(self) -> int:
        """Dataset items one epoch draws (examples when padded, micro-batches when packed)."""
        return len(self.dataset)
