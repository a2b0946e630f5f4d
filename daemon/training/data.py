"""The training data path: read a curated split, encode each row into training sequences, pad them into batches.

Rendering and masking live in `daemon.chat.render` (shared with curation's length checks, evaluation and the bench).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from daemon.chat.messages import messages_of, tools_of
from daemon.chat.render import IGNORE, encode_messages


def read_split(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def encode_rows(tok: Any, rows: Iterable[dict[str, Any]], max_length: int, loss_on: str,
                reasoning_loss: bool = True) -> list[dict[str, Any]]:
    """Training sequences of curated rows: one per row, plus one per turn its template renders on its own; `index`
    is the row's position in `rows` (per-example dynamics are per row)."""
    out = []
    for i, row in enumerate(rows):
        e = encode_messages(tok, messages_of(row), max_length, loss_on, tools_of(row), reasoning_loss)
        out += [{"input_ids": s.input_ids, "labels": s.labels, "index": i} for s in e.sequences]
    return out


class PadCollator:
    """Right-pads a list of {"input_ids", "labels"} to the longest in the batch. Shapes: [batch, longest]. With the
    examples' `index`, also `example_index`: each token's example, -1 on padding."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, features: list[dict[str, list[int]]]) -> dict[str, Any]:
        import torch

        longest = max(len(f["input_ids"]) for f in features)
        ids = torch.full((len(features), longest), self.pad_id, dtype=torch.long)
        labels = torch.full((len(features), longest), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(features), longest), dtype=torch.long)
        index = torch.full((len(features), longest), -1, dtype=torch.long)
        for i, f in enumerate(features):
            n = len(f["input_ids"])
            ids[i, :n] = torch.tensor(f["input_ids"])
            labels[i, :n] = torch.tensor(f["labels"])
            mask[i, :n] = 1
            index[i, :n] = f.get("index", -1)
        batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
        if any("index" in f for f in features):
            batch["example_index"] = index
        return batch
