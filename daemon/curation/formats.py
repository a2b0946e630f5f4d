"""Recognise one input record and normalise it to chat messages (SPEC section 3).

Each format is one small function `record -> list[Message] | None`; `normalise` tries them in order. A record
that none recognises is `unknown_format`. Metadata fields (`id`, `domain`, `source`, anything else) are kept.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

ROLES = ("system", "user", "assistant", "tool")
_SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                   "chatgpt": "assistant", "bard": "assistant", "system": "system",
                   "function_call": "assistant", "observation": "tool", "tool": "tool", "function": "tool"}


@dataclass
class Message:
    role: str
    content: str
    train: bool | None = None
    """Explicit per-message loss flag (OpenAI `loss_weight`/`train`); None = the default rule."""


@dataclass
class Example:
    """One normalised record: its messages, where it came from, and the fields it carried."""

    messages: list[Message]
    fmt: str
    line: int
    raw: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def prompt_messages(self) -> list[Message]:
        """Everything before the last assistant turn."""
        last = max(i for i, m in enumerate(self.messages) if m.role == "assistant")
        return self.messages[:last]

    @property
    def answer(self) -> str:
        """The last assistant turn: the golden answer evaluations compare against."""
        return [m for m in self.messages if m.role == "assistant"][-1].content

    def to_record(self) -> dict[str, Any]:
        """The normalised row written to train/val/test.jsonl."""
        row: dict[str, Any] = {"messages": [_message_row(m) for m in self.messages]}
        row.update(self.meta)
        row["line"] = self.line
        return row


def _message_row(m: Message) -> dict[str, Any]:
    row: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.train is not None:
        row["train"] = m.train
    return row


class FormatError(ValueError):
    """The record is of a known format but malformed; `detail` is the validation code."""

    def __init__(self, detail: str, message: str):
        super().__init__(message)
        self.detail = detail


def _text(content: Any) -> str:
    """String content, or a list of parts [{"type": "text", "text"|"value": ...}] joined."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and part.get("type", "text") == "text":
                parts.append(str(part.get("text", part.get("value", ""))))
        return "".join(parts)
    if isinstance(content, dict):
        return _text([content])
    return str(content)


def from_openai(rec: dict[str, Any]) -> list[Message] | None:
    msgs = rec.get("messages")
    if not isinstance(msgs, list):
        return None
    out = []
    for m in msgs:
        if not isinstance(m, dict) or "role" not in m:
            raise FormatError("bad_role_order", "a message has no role")
        role = str(m["role"])
        role = "system" if role == "developer" else role
        if role == "function":
            role = "tool"
        if role not in ROLES:
            raise FormatError("bad_role_order", f"unknown role {role!r}")
        train = None
        if "loss_weight" in m:
            train = float(m["loss_weight"] or 0) > 0
        elif "train" in m:
            train = bool(m["train"])
        content = _text(m.get("content"))
        if not content and m.get("tool_calls"):
            import json

            content = json.dumps(m["tool_calls"], ensure_ascii=False)
        out.append(Message(role, content, train))
    return out


def from_alpaca(rec: dict[str, Any]) -> list[Message] | None:
    if "instruction" not in rec or "output" not in rec:
        return None
    out = []
    if rec.get("system"):
        out.append(Message("system", _text(rec["system"])))
    for turn in rec.get("history") or []:
        if not (isinstance(turn, (list, tuple)) and len(turn) == 2):
            raise FormatError("bad_role_order", "history entries must be [instruction, answer] pairs")
        out += [Message("user", _text(turn[0])), Message("assistant", _text(turn[1]))]
    instruction, inp = _text(rec["instruction"]), _text(rec.get("input"))
    user = f"{instruction}\n\n{inp}" if instruction and inp else (instruction or inp)
    out += [Message("user", user), Message("assistant", _text(rec["output"]))]
    return out


def from_sharegpt(rec: dict[str, Any]) -> list[Message] | None:
    conv = rec.get("conversations")
    if not isinstance(conv, list):
        return None
    out = []
    if rec.get("system"):
        out.append(Message("system", _text(rec["system"])))
    for turn in conv:
        if not isinstance(turn, dict):
            raise FormatError("bad_role_order", "a conversation turn is not an object")
        who = str(turn.get("from", turn.get("role", "")))
        role = _SHAREGPT_ROLES.get(who)
        if role is None:
            raise FormatError("bad_role_order", f"unknown speaker {who!r}")
        out.append(Message(role, _text(turn.get("value", turn.get("content")))))
    return out


def from_prompt_completion(rec: dict[str, Any]) -> list[Message] | None:
    if "prompt" not in rec or "completion" not in rec:
        return None
    return [Message("user", _text(rec["prompt"])), Message("assistant", _text(rec["completion"]))]


def from_text(rec: dict[str, Any]) -> list[Message] | None:
    if "text" not in rec or not isinstance(rec["text"], str):
        return None
    # Plain text trains on the whole text: one assistant turn with no prompt.
    return [Message("assistant", rec["text"], train=True)]


FORMATS: list[tuple[str, Callable[[dict[str, Any]], list[Message] | None], tuple[str, ...]]] = [
    ("openai", from_openai, ("messages",)),
    ("sharegpt", from_sharegpt, ("conversations", "system")),
    ("alpaca", from_alpaca, ("instruction", "input", "output", "system", "history")),
    ("prompt_completion", from_prompt_completion, ("prompt", "completion")),
    ("text", from_text, ("text",)),
]


def normalise(rec: Any, line: int) -> Example | None:
    """The Example for `rec`, None when no format recognises it. Raises FormatError for a malformed one."""
    if not isinstance(rec, dict):
        return None
    for name, fn, consumed in FORMATS:
        msgs = fn(rec)
        if msgs is not None:
            meta = {k: v for k, v in rec.items() if k not in consumed and k != "line"}
            return Example(messages=msgs, fmt=name, line=line, raw=rec, meta=meta)
    return None
