"""Recognise one input record and normalise it to chat messages (the formats the README lists).

Each format is one small function `record -> list[Message] | None`; `normalise` tries them in
order. A record that none recognises is `unknown_format`. Metadata fields (`id`, `domain`,
`source`, anything else) are kept. Tool definitions, tool calls, tool results and reasoning keep
their structure (daemon/chat/messages.py); a call that cannot be read (no name, arguments that are
not a JSON object) is `bad_tool_call`, tools that are not a list of named functions `bad_tools`.

The agent layouts people publish, each recognised by its shape (`Example.fmt` names it):
- `llamafactory_v1`: messages whose content is a list of `{"type": "text" | "reasoning" |
  "tool_call", "value"}` parts, a call's value a JSON string (or an object) `{"name",
  "arguments"}`, or a list of them;
- `hermes` (NousResearch function calling): ShareGPT turns, the system turn's `<tools> … </tools>`
  the tool definitions, `<tool_call>{…}</tool_call>` blocks in `gpt` turns the calls (JSON, or a
  Python dict with single quotes, which this layout is known to write), `<tool_response>` in `tool`
  turns the results;
- `xlam` (Salesforce APIGen): `query`, `tools` and `answers` (JSON strings): a one-turn record
  whose answer is the calls.
An assistant text that opens with `<think>…</think>` (DeepSeek-R1-style distillations) has it moved
to the reasoning field, in any format.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from daemon.chat.messages import Message, ToolCall, last_answer

ROLES = ("system", "user", "assistant", "tool")
_SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bard": "assistant",
    "system": "system",
    "function_call": "assistant",
    "observation": "tool",
    "tool": "tool",
    "function": "tool",
}
_REASONING_KEYS = ("reasoning_content", "reasoning", "thinking")
_REASONING_PARTS = ("reasoning", "thinking")
_TEXT_PARTS = ("text", "output_text", "input_text")


@dataclass
class Example:
    """One normalised record: its messages, the tools it defines, where it came from, and the
    fields it carried."""

    messages: list[Message]
    fmt: str
    line: int
    raw: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)
    tools: list[dict[str, Any]] | None = None
    """Tool definitions in the OpenAI shape ({"type": "function", "function": {"name", ...}}), None
    when none."""

    @property
    def answer_message(self) -> Message:
        """The last assistant turn: the golden answer evaluations compare against."""
        return self.messages[last_answer(self.messages)]

    def to_record(self) -> dict[str, Any]:
        """The normalised row written to train/val/test.jsonl (daemon/chat/messages.py shows
        one)."""
        row: dict[str, Any] = {"messages": [m.to_row() for m in self.messages]}
        if self.tools:
            row["tools"] = self.tools
        row.update(self.meta)
        row["line"] = self.line
        row["layout"] = self.fmt
        return row


class FormatError(ValueError):
    """The record is of a known format but malformed; `detail` is the validation code."""

    def __init__(self, detail: str, message: str):
        super().__init__(message)
        self.detail = detail


def _text(content: Any) -> str:
    """String content, or the text parts of a list of parts [{"type": "text", "text"|"value": ...}]
    joined."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and part.get("type", "text") in _TEXT_PARTS:
                parts.append(str(part.get("text", part.get("value", ""))))
        return "".join(parts)
    if isinstance(content, dict):
        return _text([content])
    return str(content)


def _json(value: Any, what: str, detail: str) -> Any:
    """`value` parsed when it is a JSON string, else as it is."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value) if value.strip() else None
    except ValueError as exc:
        raise FormatError(detail, f"{what}: not valid JSON ({exc})") from None


def tool_call(obj: Any, where: str) -> ToolCall:
    """One call from any of the shapes people write: OpenAI {"id", "type", "function": {"name",
    "arguments"}}, flat {"name", "arguments"|"parameters"}, a `tool_call` content part. Arguments
    may be a JSON string."""
    if not isinstance(obj, dict):
        raise FormatError("bad_tool_call", f"{where}: a tool call is not an object")
    function = obj.get("function")
    fn: dict[str, Any] = function if isinstance(function, dict) else obj
    name = fn.get("name")
    if not isinstance(name, str) or not name.strip():
        raise FormatError("bad_tool_call", f"{where}: a tool call has no function name")
    args = _json(
        fn.get("arguments", fn.get("parameters", fn.get("input"))),
        f"{where}: the arguments of {name}",
        "bad_tool_call",
    )
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise FormatError(
            "bad_tool_call", f"{where}: the arguments of {name} are not a JSON object"
        )
    cid = obj.get("id", obj.get("call_id"))
    return ToolCall(name, args, str(cid) if cid is not None else None)


def tool_definitions(value: Any) -> list[dict[str, Any]] | None:
    """A record's tools as OpenAI tools: a list (or JSON string of a list) of {"type": "function",
    "function": {...}} or of bare function definitions ({"name", "description", "parameters"})."""
    value = _json(value, "tools", "bad_tools")
    if value in (None, [], ""):
        return None
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        raise FormatError("bad_tools", "tools must be a list of function definitions")
    out = []
    for t in value:
        fn = (
            t.get("function") if isinstance(t, dict) and isinstance(t.get("function"), dict) else t
        )
        if (
            not isinstance(fn, dict)
            or not isinstance(fn.get("name"), str)
            or not fn["name"].strip()
        ):
            raise FormatError("bad_tools", "a tool definition has no function name")
        out.append({"type": "function", "function": fn})
    return out


def _reasoning(m: dict[str, Any]) -> str:
    for key in _REASONING_KEYS:
        v = m.get(key)
        if isinstance(v, str) and v.strip():
            return v
        if isinstance(v, (list, dict)):
            return _text(v) or _part_text(v)
    return ""


def _part_text(v: Any) -> str:
    parts = v if isinstance(v, list) else [v]
    return "".join(
        str(p.get("text", p.get("reasoning", p.get("thinking", p.get("value", "")))))
        for p in parts
        if isinstance(p, dict)
    )


def _value_calls(part: dict[str, Any], where: str) -> list[ToolCall]:
    """A LLaMA-Factory v1 `tool_call` part: its `value` is one call or a list of them, as JSON text
    or objects."""
    value = _json(part["value"], f"{where}: the tool call", "bad_tool_call")
    return [tool_call(c, where) for c in (value if isinstance(value, list) else [value])]


def _parts(content: Any, where: str) -> tuple[str, str, list[ToolCall]]:
    """(text, reasoning, tool calls) of a message's content: a string, or a list of typed parts."""
    if not isinstance(content, list):
        return _text(content), "", []
    text, reasoning, calls = [], [], []
    for part in content:
        kind = part.get("type", "text") if isinstance(part, dict) else "text"
        if kind in _REASONING_PARTS:
            reasoning.append(_part_text(part))
        elif kind in ("tool_call", "function_call", "tool_use"):
            if (
                isinstance(part, dict)
                and "value" in part
                and "name" not in part
                and "function" not in part
            ):
                calls += _value_calls(part, where)
            else:
                calls.append(tool_call(part, where))
        else:
            text.append(_text([part]))
    return "".join(text), "\n".join(r for r in reasoning if r), calls


def from_openai(rec: dict[str, Any]) -> list[Message] | None:
    msgs = rec.get("messages")
    if not isinstance(msgs, list):
        return None
    out = []
    for n, m in enumerate(msgs, 1):
        if not isinstance(m, dict) or "role" not in m:
            raise FormatError("bad_role_order", "a message has no role")
        where = f"message {n}"
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
        content, reasoning, calls = _parts(m.get("content"), where)
        reasoning = _reasoning(m) or reasoning
        raw_calls = m.get("tool_calls")
        if isinstance(raw_calls, list):
            calls += [tool_call(c, where) for c in raw_calls]
        elif raw_calls is not None:
            raise FormatError("bad_tool_call", f"{where}: tool_calls is not a list")
        if isinstance(m.get("function_call"), dict):  # the pre-tools OpenAI field
            calls.append(tool_call(m["function_call"], where))
        if role != "assistant" and (calls or reasoning):
            raise FormatError(
                "bad_tool_call", f"{where}: a {role} turn carries tool calls or reasoning"
            )
        name = m.get("name") if role == "tool" and isinstance(m.get("name"), str) else None
        cid = m.get("tool_call_id")
        out.append(
            Message(
                role, content, train, reasoning, calls, str(cid) if cid is not None else None, name
            )
        )
    return out


def from_alpaca(rec: dict[str, Any]) -> list[Message] | None:
    if "instruction" not in rec or "output" not in rec:
        return None
    out = []
    if rec.get("system"):
        out.append(Message("system", _text(rec["system"])))
    for turn in rec.get("history") or []:
        if not (isinstance(turn, (list, tuple)) and len(turn) == 2):
            raise FormatError(
                "bad_role_order", "history entries must be [instruction, answer] pairs"
            )
        out += [Message("user", _text(turn[0])), Message("assistant", _text(turn[1]))]
    instruction, inp = _text(rec["instruction"]), _text(rec.get("input"))
    user = f"{instruction}\n\n{inp}" if instruction and inp else (instruction or inp)
    out += [Message("user", user), Message("assistant", _text(rec["output"]))]
    return out


def from_sharegpt(rec: dict[str, Any]) -> list[Message] | None:
    """ShareGPT, with the tool-use turns of LLaMA-Factory/Glaive-style sets: `function_call` turns
    (a JSON call, or a list of calls) are assistant calls — merged into the assistant turn just
    before when that one made none — and `observation` turns are tool results."""
    conv = rec.get("conversations")
    if not isinstance(conv, list):
        return None
    out: list[Message] = []
    if rec.get("system"):
        out.append(Message("system", _text(rec["system"])))
    for n, turn in enumerate(conv, 1):
        if not isinstance(turn, dict):
            raise FormatError("bad_role_order", "a conversation turn is not an object")
        who = str(turn.get("from", turn.get("role", "")))
        role = _SHAREGPT_ROLES.get(who)
        if role is None:
            raise FormatError("bad_role_order", f"unknown speaker {who!r}")
        value = turn.get("value", turn.get("content"))
        where = f"turn {n}"
        if who == "function_call":
            calls = _json(value, f"{where}: the function call", "bad_tool_call")
            calls = [tool_call(c, where) for c in (calls if isinstance(calls, list) else [calls])]
            if out and out[-1].role == "assistant" and not out[-1].tool_calls:
                out[-1].tool_calls = calls
            else:
                out.append(Message("assistant", "", tool_calls=calls))
            continue
        content, reasoning, calls = _parts(value, where)
        name = turn.get("name") if role == "tool" and isinstance(turn.get("name"), str) else None
        out.append(
            Message(
                role,
                content,
                reasoning=_reasoning(turn) or reasoning if role == "assistant" else "",
                tool_calls=calls,
                name=name,
            )
        )
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


# Non-empty blocks only: the layout's system prompt also names the tags ("within <tools></tools>
# XML tags")
_HERMES_TOOLS = re.compile(r"<tools>(?!\s*</tools>)(.*?)</tools>", re.S)
_HERMES_CALL = re.compile(r"<tool_call>(?!\s*</tool_call>)(.*?)</tool_call>", re.S)
_HERMES_RESPONSE = re.compile(r"^\s*<tool_response>(.*?)</tool_response>\s*$", re.S)
_THINK = re.compile(r"^\s*<think>(.*?)</think>\s*", re.S)


def _lenient_json(text: str, what: str, detail: str) -> Any:
    """JSON, or a Python literal (single-quoted dicts): the Hermes layout writes both."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        raise FormatError(detail, f"{what}: neither JSON nor a Python literal") from None


def _hermes_tools(text: str) -> list[Any]:
    """The definitions inside `<tools>`: a JSON list, or one object per line (the layout writes
    either)."""
    body = text.strip()
    if not body:
        return []
    try:
        found = _lenient_json(body, "the <tools> block", "bad_tools")
        return found if isinstance(found, list) else [found]
    except FormatError:
        return [
            _lenient_json(line, "a tool in the <tools> block", "bad_tools")
            for line in body.splitlines()
            if line.strip()
        ]


def _is_hermes(rec: dict[str, Any]) -> bool:
    conv = rec.get("conversations")
    return isinstance(conv, list) and any(
        isinstance(t, dict)
        and isinstance(t.get("value"), str)
        and ("<tools>" in t["value"] or "<tool_call>" in t["value"])
        for t in conv
    )


def from_hermes(rec: dict[str, Any]) -> list[Message] | None:
    """NousResearch's function-calling layout (module docstring); None when the record does not use
    it."""
    if not _is_hermes(rec):
        return None
    msgs = from_sharegpt({k: v for k, v in rec.items() if k != "tools"})
    assert msgs is not None  # _is_hermes: it has conversations
    for n, m in enumerate(msgs, 1):
        if m.role == "system":
            m.content = _HERMES_TOOLS.sub("", m.content).strip()
        elif m.role == "assistant" and _HERMES_CALL.search(m.content):
            where = f"turn {n}"
            for block in _HERMES_CALL.findall(m.content):
                found = _lenient_json(
                    block.strip(), f"{where}: a <tool_call> block", "bad_tool_call"
                )
                m.tool_calls.extend(
                    tool_call(c, where) for c in (found if isinstance(found, list) else [found])
                )
            m.content = _HERMES_CALL.sub("", m.content).strip()
        elif m.role == "tool":
            response = _HERMES_RESPONSE.match(m.content)
            if response:
                m.content = response.group(1).strip()
    return msgs


def hermes_tool_definitions(rec: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The tools a Hermes record defines in its system turn (or its own `tools` field)."""
    found: list[Any] = []
    for t in rec.get("conversations") or []:
        if isinstance(t, dict) and t.get("from") == "system" and isinstance(t.get("value"), str):
            for block in _HERMES_TOOLS.findall(t["value"]):
                found += _hermes_tools(block)
    return tool_definitions(found) if found else tool_definitions(rec.get("tools"))


def from_xlam(rec: dict[str, Any]) -> list[Message] | None:
    """Salesforce xLAM / APIGen: the query, and the calls that answer it."""
    if "query" not in rec or "answers" not in rec:
        return None
    answers = _json(rec["answers"], "answers", "bad_tool_call")
    if not isinstance(answers, list):
        raise FormatError("bad_tool_call", "answers: not a list of calls")
    calls = [tool_call(c, f"answer {n}") for n, c in enumerate(answers, 1)]
    return [Message("user", _text(rec["query"])), Message("assistant", "", tool_calls=calls)]


def split_inline_reasoning(msgs: list[Message]) -> None:
    """An assistant text that opens with `<think>…</think>` and has no reasoning field: the block
    becomes it."""
    for m in msgs:
        if m.role == "assistant" and not m.reasoning and m.content.lstrip().startswith("<think>"):
            found = _THINK.match(m.content)
            if found:
                m.reasoning, m.content = found.group(1).strip(), m.content[found.end() :]


def _uses_value_parts(rec: dict[str, Any]) -> bool:
    msgs = rec.get("messages")
    return isinstance(msgs, list) and any(
        isinstance(m, dict)
        and isinstance(m.get("content"), list)
        and any(isinstance(p, dict) and "value" in p for p in m["content"])
        for m in msgs
    )


TOOL_FIELDS = ("tools", "functions")
"""Record fields holding tool definitions (any format): OpenAI `tools`, the older `functions`,
ShareGPT's string."""

FORMATS: list[tuple[str, Callable[[dict[str, Any]], list[Message] | None], tuple[str, ...]]] = [
    ("openai", from_openai, ("messages",)),
    ("hermes", from_hermes, ("conversations", "system")),
    ("sharegpt", from_sharegpt, ("conversations", "system")),
    ("xlam", from_xlam, ("query", "answers")),
    ("alpaca", from_alpaca, ("instruction", "input", "output", "system", "history")),
    ("prompt_completion", from_prompt_completion, ("prompt", "completion")),
    ("text", from_text, ("text",)),
]


def normalise(rec: Any, line: int) -> Example | None:
    """The Example for `rec`, None when no format recognises it. Raises FormatError for a malformed
    one."""
    if not isinstance(rec, dict):
        return None
    for name, fn, consumed in FORMATS:
        msgs = fn(rec)
        if msgs is not None:
            tools = (
                hermes_tool_definitions(rec)
                if name == "hermes"
                else tool_definitions(rec.get("tools", rec.get("functions")))
            )
            if name != "text":  # plain text trains as it is
                split_inline_reasoning(msgs)
            meta = {
                k: v
                for k, v in rec.items()
                if k not in consumed and k not in TOOL_FIELDS and k != "line"
            }
            layout = "llamafactory_v1" if name == "openai" and _uses_value_parts(rec) else name
            return Example(messages=msgs, fmt=layout, line=line, raw=rec, meta=meta, tools=tools)
    return None
