"""The training data path: read a curated split, encode each row into training sequences, pad them
into batches.

Rendering and masking live in `daemon.chat.render` (shared with curation's length checks,
evaluation and the bench).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daemon.chat.messages import Message, messages_of, tools_of
from daemon.chat.render import (
    IGNORE,
    Encoded,
    count_tokens,
    encode_messages,
    exchange_starts,
    trains_on,
)


def read_split(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def resolve_max_length(cfg: Any, dataset_dir: Path, tok: Any) -> dict[str, Any] | None:
    """Turn `train.max_length = "auto"` into a number, in place; returns what it resolved to and
    why (None when max_length was a number). The curation's choice is taken when it was made for
    this model and loss; a dataset curated otherwise (without a tokenizer, for another model) is
    measured here, all of its train split."""
    from daemon.chat.render import measure_lengths
    from daemon.models.max_length import ceiling, choose

    if isinstance(cfg.max_length, int):
        return None
    stats = _json(dataset_dir / "stats.json").get("max_length") or {}
    settings = _json(dataset_dir / "metadata.json").get("settings") or {}
    if (
        isinstance(stats.get("value"), int)
        and settings.get("model") == cfg.model
        and settings.get("loss_on") == cfg.loss_on
    ):
        cfg.max_length = stats["value"]
        return {**stats, "chosen_at": "curation"}
    rows = read_split(dataset_dir / "train.jsonl")
    lengths = measure_lengths(tok, [(messages_of(r), tools_of(r)) for r in rows], cfg.loss_on)
    top = ceiling(
        getattr(tok, "name_or_path", "") or "",
        tok,
        cfg.batch_size,
        cfg.batch_tokens if cfg.packing else 0,
        cfg.gradient_checkpointing,
        cfg.device,
    )
    chosen = choose([n.whole for n in lengths], len(rows), top)
    cfg.max_length = chosen.value
    return {**chosen.to_dict(), "chosen_at": "training (the train split)"}


def _json(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


@dataclass
class TrainedParts:
    """Per layout (`layout` of a curated row: openai, llamafactory_v1, hermes, xlam, sharegpt,
    ...): how many records carried tools, calls and reasoning, and how many calls and reasoning
    tokens reached the loss. A turn counts as trained when it trains and survives the cut to
    max_length whole; reasoning tokens are counted on their own (within a token or two of their
    count in context)."""

    tok: Any
    loss_on: str
    reasoning_loss: bool
    by_layout: dict[str, Counter[str]] = field(default_factory=dict)

    def add(self, row: dict[str, Any], messages: list[Message], e: Encoded) -> None:
        c = self.by_layout.setdefault(str(row.get("layout") or "unknown"), Counter())
        c["records"] += 1
        c["with_tools"] += bool(row.get("tools"))
        c["with_calls"] += any(m.tool_calls for m in messages)
        c["with_reasoning"] += any(m.reasoning for m in messages)
        c["shortened"] += bool(e.dropped)
        c["cut"] += e.cut
        if e.cut:  # cut at the right end: which turns kept their end is not counted
            return
        head, _ = exchange_starts(messages)
        kept = messages[:head] + messages[head + e.dropped :]
        trained = [m for m in kept if m.role == "assistant" and trains_on(m, self.loss_on)]
        c["calls_trained"] += sum(len(m.tool_calls) for m in trained)
        if self.reasoning_loss:
            texts = [m.reasoning for m in trained if m.reasoning]
            c["reasoning_tokens_trained"] += sum(count_tokens(self.tok, texts)) if texts else 0

    def report(self) -> dict[str, dict[str, int]]:
        return {layout: dict(c) for layout, c in sorted(self.by_layout.items())}

    def summary(self) -> str:
        """One line: the layouts and what reached the loss."""
        total: Counter[str] = Counter()
        for c in self.by_layout.values():
            total.update(c)
        line = ", ".join(
            f"{layout} {c['records']}" for layout, c in sorted(self.by_layout.items())
        )
        line += (
            f"; {total['calls_trained']} calls and "
            f"{total['reasoning_tokens_trained']} reasoning tokens trained"
        )
        if total["shortened"]:
            line += f"; {total['shortened']} records lost their oldest turns to max_length"
        return line


def encode_rows(
    tok: Any,
    rows: Iterable[dict[str, Any]],
    max_length: int,
    loss_on: str,
    reasoning_loss: bool = True,
    parts: TrainedParts | None = None,
) -> list[dict[str, Any]]:
    """Training sequences of curated rows: one per row, plus one per turn its template renders on
    its own; `index` is the row's position in `rows` (per-example dynamics are per row). `parts`
    counts what was trained."""
    out = []
    for i, row in enumerate(rows):
        messages = messages_of(row)
        e = encode_messages(tok, messages, max_length, loss_on, tools_of(row), reasoning_loss)
        if parts is not None:
            parts.add(row, messages, e)
        out += [{"input_ids": s.input_ids, "labels": s.labels, "index": i} for s in e.sequences]
    return out


class PadCollator:
    """Right-pads a list of {"input_ids", "labels"} to the longest in the batch. Shapes: [batch,
    longest]. With the examples' `index`, also `example_index`: each token's example, -1 on
    padding."""

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
