"""Tokenise chat examples and mask the prompt: labels are -100 everywhere but the trained turns.

The chat template is rendered once for the whole conversation and once per turn prefix; character offsets of the
fast tokenizer map each token to the turn it came from. That works for any template that renders a prefix of a
conversation as a prefix of the whole (nearly all do), so hub models and `builtin:tiny` share one path.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemon.curation.formats import Message

IGNORE = -100


class EncodeError(ValueError):
    def __init__(self, detail: str, message: str):
        super().__init__(message)
        self.detail = detail


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    full_length: int
    """Token count before truncation."""

    @property
    def trainable(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE)


def _render(tok: Any, msgs: list[dict[str, str]], gen: bool = False) -> str:
    if not msgs:
        return ""
    return tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)


def trains_on(m: Message, loss_on: str) -> bool:
    """Whether message `m` carries loss."""
    if m.train is not None:
        return m.train
    return m.role == "assistant" or loss_on == "all"


def _turn_end(rendered: str, start: int, eos: str | None) -> int:
    """Where a trained turn's loss ends in `rendered` (which ends with that turn): just after its end-of-turn token
    (the tokenizer's eos, e.g. ChatML's `<|im_end|>`), so that the newline a template writes after it, which the
    model never has to produce, carries no label; without an eos in the turn, after its last non-space character."""
    if eos:
        k = rendered.rfind(eos, start)
        if k >= 0:
            return k + len(eos)
    return max(start, len(rendered.rstrip()))


def encode_messages(tok: Any, messages: list[Message], max_length: int, loss_on: str = "assistant") -> Encoded:
    """input_ids and labels for one conversation, truncated to max_length (right side)."""
    rows = [{"role": m.role, "content": m.content} for m in messages]
    full = _render(tok, rows)
    spans: list[tuple[int, int]] = []  # character ranges [start, end) of `full` that carry loss
    for k, m in enumerate(messages):
        if not trains_on(m, loss_on):
            continue
        # An assistant turn's loss starts after its generation prompt (the role marker); other turns at their start.
        before = _render(tok, rows[:k], gen=m.role == "assistant")
        after = _render(tok, rows[: k + 1])
        if not full.startswith(after) or (m.role == "assistant" and not after.startswith(before)):
            raise EncodeError("no_trainable_tokens", "the chat template does not render turns as prefixes")
        spans.append((len(before), _turn_end(after, len(before), tok.eos_token)))
    enc = tok(full, add_special_tokens=False, return_offsets_mapping=True)
    ids: list[int] = enc["input_ids"]
    labels = [IGNORE] * len(ids)
    for i, (s, e) in enumerate(enc["offset_mapping"]):
        # A token trains if it starts inside a trained span (special tokens too: the end-of-turn must be learned).
        if any(a <= s < b for a, b in spans) and e > s:
            labels[i] = ids[i]
    return Encoded(input_ids=ids[:max_length], labels=labels[:max_length], full_length=len(ids))


def count_tokens(tok: Any, texts: list[str]) -> list[int]:
    """Token counts of many texts in one batched call into the fast tokenizer."""
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is not None:
        return [len(e.ids) for e in backend.encode_batch(texts, add_special_tokens=False)]
    return [len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"]]


def length_and_first_trained(tok: Any, conversations: list[list[Message]], loss_on: str) -> list[tuple[int, int]]:
    """(tokens of the whole conversation, tokens before the first trained one) for each conversation, batched.
    After right truncation to L a conversation keeps a trained token iff the second number is < L."""
    fulls, prefixes = [], []
    for msgs in conversations:
        rows = [{"role": m.role, "content": m.content} for m in msgs]
        fulls.append(_render(tok, rows))
        k = next((i for i, m in enumerate(msgs) if trains_on(m, loss_on)), len(msgs))
        prefixes.append(_render(tok, rows[:k], gen=k < len(msgs) and msgs[k].role == "assistant"))
    counts = count_tokens(tok, fulls + prefixes)
    return list(zip(counts[: len(fulls)], counts[len(fulls):]))


def prompt_text(tok: Any, messages: list[Message]) -> str:
    """The rendered prompt (all turns before the last assistant one) with the generation prompt appended."""
    last = max(i for i, m in enumerate(messages) if m.role == "assistant")
    rows = [{"role": m.role, "content": m.content} for m in messages[:last]]
    if not rows:
        return _render(tok, [{"role": "user", "content": ""}], gen=True)
    return _render(tok, rows, gen=True)


def question_and_answer(messages: list[Message]) -> tuple[str, str]:
    """What people read as the question (the last user turn before the last assistant turn, "" if none) and the
    golden answer (that assistant turn)."""
    last = max(i for i, m in enumerate(messages) if m.role == "assistant")
    users = [m.content for m in messages[:last] if m.role == "user"]
    return (users[-1] if users else ""), messages[last].content


def messages_of(row: dict[str, Any]) -> list[Message]:
    return [Message(m["role"], m["content"], m.get("train")) for m in row["messages"]]


def read_split(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def encode_rows(tok: Any, rows: Iterable[dict[str, Any]], max_length: int, loss_on: str) -> list[dict[str, list[int]]]:
    out = []
    for row in rows:
        e = encode_messages(tok, messages_of(row), max_length, loss_on)
        if e.trainable:
            out.append({"input_ids": e.input_ids, "labels": e.labels})
    return out


class PadCollator:
    """Right-pads a list of {"input_ids", "labels"} to the longest in the batch. Shapes: [batch, longest]."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, features: list[dict[str, list[int]]]) -> dict[str, Any]:
        import torch

        longest = max(len(f["input_ids"]) for f in features)
        ids = torch.full((len(features), longest), self.pad_id, dtype=torch.long)
        labels = torch.full((len(features), longest), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(features), longest), dtype=torch.long)
        for i, f in enumerate(features):
            n = len(f["input_ids"])
            ids[i, :n] = torch.tensor(f["input_ids"])
            labels[i, :n] = torch.tensor(f["labels"])
            mask[i, :n] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}
