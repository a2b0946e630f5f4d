"""Per-example dynamics read off the training forward pass.

The record's format and its reading are in daemon/runs/dynamics.py.

The Trainer (daemon/training/trainer.py) hands `record_kept()` the logits of each training forward
pass's trained positions (the output layer runs on those alone, daemon/training/labelled_head.py),
or `record()` the whole pass's outputs where the model keeps its own forward, with the collators'
`example_index` (each token's row in the train split, -1 where none). From the logits the loss was
just computed from — before the optimizer step, no second pass — it takes per trained token [T]:
the loss (logsumexp - golden logit), the golden token's probability, whether it is the argmax, and
the margin (golden logit - the largest other logit), then sums them per example (`index_add_`).
Packed rows are split by example, never averaged per row; under gradient accumulation every
micro-batch adds its examples to the step.

At each optimizer step the buffered figures are written as one append to `dynamics.bin` (on several
processes they are gathered to rank 0 first, which alone writes). As training (re)starts, records
of steps after the one it starts from are dropped (a resumed run redoes those steps) and a torn
tail is cut, so that no epoch is counted twice.

Works where the model returns logits; with Liger's fused cross-entropy (no logits) nothing is
recorded and the status says so (`dynamics_unavailable`). A failure to record is logged in the
status and training goes on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from daemon.atomic import write_bytes_atomic, write_json_atomic
from daemon.chat.render import IGNORE
from daemon.runs.dynamics import DYNAMICS_FILE, FIELDS, HEADER_FILE, RECORD, read_records
from daemon.training.collectors import Collector

CHUNK_TOKENS = 2048
"""Trained tokens per float32 chunk: bounds the extra memory to about CHUNK_TOKENS x vocabulary
floats."""


def token_figures(pick: Any, targets: Any) -> tuple[Any, Any, Any, Any]:
    """The T trained tokens' logits, `pick(start, end)` -> [end - start, V], with their targets [T]
    -> per token loss, golden probability, golden-is-argmax, margin (each [T], fp32). A chunk of
    positions at a time is made float32, never all of them: on a GPU a step's logits are already a
    large share of its memory."""
    import torch

    outs = []
    for at in range(0, targets.shape[0], CHUNK_TOKENS):
        tg = targets[at : at + CHUNK_TOKENS]
        lg = pick(at, at + tg.shape[0]).float()  # [chunk, V]
        gold = lg.gather(1, tg[:, None])[:, 0]
        loss = torch.logsumexp(lg, -1) - gold
        top = lg.topk(2, dim=-1)
        first = top.indices[:, 0] == tg
        other = torch.where(first, top.values[:, 1], top.values[:, 0])
        outs.append((loss, torch.exp(-loss), first.float(), gold - other))
    return tuple(torch.cat(parts) for parts in zip(*outs))


Figures = list[tuple[int, float, float, float, float, int]]
"""Per example: (index, mean loss, mean golden probability, argmax share, mean margin, trained
tokens)."""


def sum_per_example(figures: tuple[Any, Any, Any, Any], index: Any) -> Figures:
    """Per token figures (each [T]) and each token's example [T] -> per example figures."""
    import torch

    loss, prob, first, margin = figures
    ids, inverse = torch.unique(index, return_inverse=True)
    sums = torch.zeros(len(ids), 5, dtype=torch.float32, device=loss.device)
    sums.index_add_(0, inverse, torch.stack([loss, prob, first, margin, torch.ones_like(loss)], 1))
    sums = sums.cpu().tolist()
    return [
        (int(i), s[0] / s[4], s[1] / s[4], s[2] / s[4], s[3] / s[4], int(s[4]))
        for i, s in zip(ids.cpu().tolist(), sums)
    ]


def per_example(logits: Any, targets: Any, index: Any) -> Figures:
    """Aligned logits [B, L, V], next-token targets [B, L] (IGNORE where untrained) and each
    position's example [B, L] -> per example figures."""
    import torch

    with torch.no_grad():
        keep = (targets != IGNORE) & (index >= 0)
        if not bool(keep.any()):
            return []
        rows, cols = keep.nonzero(as_tuple=True)
        figures = token_figures(lambda a, b: logits[rows[a:b], cols[a:b]], targets[keep])
        return sum_per_example(figures, index[keep])


def per_example_kept(logits: Any, targets: Any, index: Any) -> Figures:
    """The same from the logits of the trained positions only: logits [K, V], targets [K], examples
    [K]."""
    import torch

    with torch.no_grad():
        mine = index >= 0
        if not bool(mine.any()):
            return []
        if not bool(mine.all()):
            logits, targets, index = logits[mine], targets[mine], index[mine]
        return sum_per_example(token_figures(lambda a, b: logits[a:b], targets), index)


def aligned(outputs: Any, inputs: dict[str, Any], index: Any) -> tuple[Any, Any, Any] | None:
    """(logits, targets, index) with position t's logits beside the token it predicts; None without
    logits."""
    logits = (
        getattr(outputs, "logits", None)
        if not isinstance(outputs, dict)
        else outputs.get("logits")
    )
    if logits is None:
        return None
    # packed rows: targets already shifted, -100 at each example's end
    if inputs.get("shift_labels") is not None:
        return logits, inputs["shift_labels"], index
    labels = inputs["labels"]
    return logits[:, :-1], labels[:, 1:], index[:, 1:]


class DynamicsRecorder(Collector):
    name = "dynamics"

    def __init__(self, run_dir: Path, dataset: str, train_split: Path, examples: int):
        self.path = run_dir / DYNAMICS_FILE
        self.header = {
            "dataset": dataset,
            "train_split": str(train_split),
            "examples": examples,
            "format": RECORD.format,
            "fields": list(FIELDS),
            "measured": "training forward pass, before the optimizer step (train mode: dropout "
            "on)",
        }
        self.header_path = run_dir / HEADER_FILE
        self.buffer: list[tuple[int, float, float, float, float, int]] = []
        self.epoch = 0
        self.passes = 0
        self.unavailable: str | None = None
        self.errors: list[str] = []

    # -- recording (called by the Trainer's compute_loss)
    # ----------------------------------------------------------
    def record(self, outputs: Any, inputs: dict[str, Any], index: Any) -> None:
        try:
            parts = aligned(outputs, inputs, index)
            if parts is None:
                self.unavailable = "the model returned no logits (fused cross-entropy)"
                return
            self.buffer += per_example(*parts)
        except Exception as exc:  # per-example dynamics must never stop training
            self.errors.append(f"{type(exc).__name__}: {exc}")

    def record_kept(self, logits: Any, targets: Any, index: Any) -> None:
        """The same from the output layer run on the trained positions only
        (daemon/training/labelled_head.py): logits [K, V], targets [K] and each position's example
        [K]."""
        try:
            self.buffer += per_example_kept(logits, targets, index)
        except Exception as exc:  # per-example dynamics must never stop training
            self.errors.append(f"{type(exc).__name__}: {exc}")

    # -- Trainer hooks
    # ---------------------------------------------------------------------------------------------
    def on_train_begin(self, args, state, control, **kw):
        if not _is_writer():
            return
        write_json_atomic(self.header_path, self.header)
        kept = read_records(self.path, max_step=state.global_step)
        if self.path.exists() and len(kept) * RECORD.size != self.path.stat().st_size:
            # Steps after the checkpoint this run resumes from are redone: their records go (as
            # does a torn tail)
            write_bytes_atomic(self.path, b"".join(RECORD.pack(*r) for r in kept))

    def on_epoch_begin(self, args, state, control, **kw):
        self.epoch = int(state.epoch + 1e-9)

    def on_step_end(self, args, state, control, **kw):
        rows, self.buffer = self.buffer, []
        rows = _gather(rows)
        if rows is None or not rows:
            return
        self.passes += len(rows)
        data = b"".join(
            RECORD.pack(i, self.epoch, state.global_step, lo, p, c, m, n)
            for i, lo, p, c, m, n in rows
        )
        try:
            # one append per step; a torn tail is cut at the next start
            with open(self.path, "ab") as fh:
                fh.write(data)
        except OSError as exc:
            self.errors.append(f"step {state.global_step}: {exc}")

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"dynamics_passes": self.passes} if self.passes else {}
        if self.unavailable:
            out["dynamics_unavailable"] = self.unavailable
        if self.errors:
            out["dynamics_errors"] = self.errors[-3:]
        return out


def _is_writer() -> bool:
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def _gather(rows: list[Any]) -> list[Any] | None:
    """Every process's rows on rank 0 (None on the others); the rows themselves with one
    process."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return rows
    everyone: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, rows)
    return [r for part in everyone for r in part] if dist.get_rank() == 0 else None
