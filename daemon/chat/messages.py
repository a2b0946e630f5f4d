"""A conversation as trainctl keeps it from curation to training, evaluation and the bench.

A message carries, besides its role and text: the reasoning that came before the answer, the tool
calls an assistant turn makes (several per turn), and, on a tool result, which call it answers. A
record may also define the tools the assistant can call. The normalised row written to
train/val/test.jsonl (README "What a curated row looks like"):

    {"messages": [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "", "reasoning": "I need the forecast.",
         "tool_calls": [{"id": "call_1", "type": "function",
                         "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
        {"role": "tool", "content": "{\"temp\": 21}", "tool_call_id": "call_1", "name":
        "get_weather"}, {"role": "assistant", "content": "It is 21 °C."}],
     "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {...}}}],
     ...the record's own fields..., "line": 7}

Arguments are kept parsed (a JSON object), so that calls compare by value and templates serialise
them themselves. Keys that a message does not use are left out, so a plain chat row is exactly what
it was before tools existed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ToolCall:
    name: str
    arguments: dict[str, Any]
    id: str | None = None

    def to_row(self) -> dict[str, Any]:
        row: dict[str, Any] = {
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }
        if self.id is not None:
            row = {"id": self.id, **row}
        return row

    def as_text(self) -> str:
        """The call as the documented fallback rendering writes it (and as model outputs are
        parsed)."""
        return json.dumps({"name": self.name, "arguments": self.arguments}, ensure_ascii=False)


@dataclass
class Message:
    role: str
    """system, user, assistant or tool."""
    content: str
    train: bool | None = None
    """Explicit per-message loss flag (OpenAI `loss_weight`/`train`); None = the default rule."""
    reasoning: str = ""
    """An assistant turn's reasoning (thinking) before its answer; "" when there is none."""
    tool_calls: list[ToolCall] = field(default_factory=list)
    """The calls an assistant turn makes, in order."""
    tool_call_id: str | None = None
    """On a tool result: the id of the call it answers, when the record gives one."""
    name: str | None = None
    """On a tool result: the function that produced it, when the record gives one."""

    def to_row(self) -> dict[str, Any]:
        row: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.reasoning:
            row["reasoning"] = self.reasoning
        if self.tool_calls:
            row["tool_calls"] = [c.to_row() for c in self.tool_calls]
        if self.tool_call_id is not None:
            row["tool_call_id"] = self.tool_call_id
        if self.name is not None:
            row["name"] = self.name
        if self.train is not None:
            row["train"] = self.train
        return row

    @property
    def prose(self) -> str:
        """The words of the turn people read as text: its reasoning and its answer (not the calls'
        JSON)."""
        return f"{self.reasoning}\n{self.content}" if self.reasoning else self.content

    def as_text(self) -> str:
        """The whole turn as one readable text, in the documented fallback rendering: `<think>`
        reasoning, the answer, then one `<tool_call>` block per call. A plain turn is just its
        content. This is the golden answer that evaluations show and compare (daemon.chat.answers
        parses it back into parts)."""
        if not self.reasoning and not self.tool_calls:
            return self.content
        body = "\n".join(
            ([self.content] if self.content else [])
            + [f"<tool_call>\n{c.as_text()}\n</tool_call>" for c in self.tool_calls]
        )
        return f"<think>\n{self.reasoning}\n</think>\n\n{body}" if self.reasoning else body


def message_from_row(row: dict[str, Any]) -> Message:
    """The inverse of Message.to_row (reads train/val/test.jsonl rows)."""
    calls = []
    for c in row.get("tool_calls") or []:
        fn = c.get("function", c)
        calls.append(ToolCall(fn["name"], fn.get("arguments") or {}, c.get("id")))
    return Message(
        row["role"],
        row.get("content") or "",
        row.get("train"),
        row.get("reasoning") or "",
        calls,
        row.get("tool_call_id"),
        row.get("name"),
    )


def messages_of(row: dict[str, Any]) -> list[Message]:
    return [message_from_row(m) for m in row["messages"]]


def tools_of(row: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The tool definitions of a curated row (OpenAI shape), None when it defines none."""
    return row.get("tools") or None


def tool_names(tools: list[dict[str, Any]] | None) -> set[str]:
    return {t["function"]["name"] for t in tools or []}


def last_answer(messages: list[Message]) -> int:
    """Index of the last assistant turn: the golden answer evaluations compare against."""
    return max(i for i, m in enumerate(messages) if m.role == "assistant")


def question_and_answer(messages: list[Message]) -> tuple[str, str]:
    """What people read as the question (the last user turn before the last assistant turn, "" if
    none) and the golden answer (that assistant turn, its reasoning and calls included:
    Message.as_text)."""
    last = last_answer(messages)
    users = [m.content for m in messages[:last] if m.role == "user"]
    return (users[-1] if users else ""), messages[last].as_text()


def text_bytes(messages: list[Message], tools: list[dict[str, Any]] | None) -> int:
    """UTF-8 bytes of everything a renderer writes from these messages and tools, plus what the
    fallback rendering wraps around calls, reasoning and the tool block (a bound the curator
    compares with max_length)."""
    n = 0
    for m in messages:
        n += len(m.content.encode("utf-8"))
        if m.reasoning:
            n += len(m.reasoning.encode("utf-8")) + 32
        for c in m.tool_calls:
            n += len(c.as_text().encode("utf-8")) + 96
    if tools:
        n += len(json.dumps(tools, ensure_ascii=False).encode("utf-8")) + 1024
    return n
