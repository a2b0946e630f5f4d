"""What an answer says, read back from text: its reasoning, its prose and its tool calls; and when
two agree.

Golden answers (Message.as_text) and model outputs are both text in the documented rendering: an
optional `<think>...</think>` block, the prose, and one `<tool_call>{"name": ..., "arguments":
{...}}</tool_call>` block per call (Hermes/Qwen-style templates write calls the same way; a bare
JSON call `{"name": ..., "arguments"|"parameters":
...}` as the whole answer, the Llama 3 way, is read too). Exact match compares the prose
(whitespace-normalised) and the calls (by name and parsed arguments, in order); reasoning is shown
but not compared, since two correct traces rarely agree word for word.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

_THINK = re.compile(r"<think>(.*?)(?:</think>|$)", re.S)
_CALL = re.compile(r"<tool_call>(.*?)(?:</tool_call>|$)", re.S)


def normalise_answer(text: str) -> str:
    """Surrounding whitespace dropped, inner whitespace collapsed."""
    return " ".join(text.split())


@dataclass
class Answer:
    reasoning: str
    prose: str
    """The answer text with reasoning and calls taken out, whitespace-normalised."""
    calls: list[tuple[str, Any]] = field(default_factory=list)
    """(name, parsed arguments) per call; a call whose JSON does not parse is (\"\", its raw
    text)."""

    def key(self) -> str:
        """One canonical string for the prose and the calls: equal keys, equal answers (bench
        agreement)."""
        if not self.calls:
            return self.prose
        calls = " ".join(
            f"{n}({json.dumps(a, sort_keys=True, ensure_ascii=False)})" for n, a in self.calls
        )
        return f"{self.prose} {calls}".strip()


def _call(raw: str) -> tuple[str, Any]:
    try:
        obj = json.loads(raw)
    except ValueError:
        return "", normalise_answer(raw)
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return "", obj
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):  # OpenAI writes arguments as a JSON string
        try:
            args = json.loads(args)
        except ValueError:
            pass
    return obj["name"], args


def parse_answer(text: str) -> Answer:
    reasoning = " ".join(normalise_answer(m) for m in _THINK.findall(text))
    rest = _THINK.sub(" ", text)
    # the opening tag was in the prompt (a template that starts the thinking itself)
    if "</think>" in rest:
        head, _, rest = rest.rpartition("</think>")
        reasoning = normalise_answer(f"{head} {reasoning}")
    calls = [_call(raw.strip()) for raw in _CALL.findall(rest)]
    prose = normalise_answer(_CALL.sub(" ", rest))
    if not calls and prose.startswith("{") and prose.endswith("}"):
        whole = _call(prose)
        if whole[0]:
            calls, prose = [whole], ""
    return Answer(reasoning, prose, calls)


def same_answer(output: str, golden: str) -> bool:
    """Exact match: same prose (whitespace-normalised) and same calls (name and parsed arguments,
    in order)."""
    if normalise_answer(output) == normalise_answer(golden):
        return True
    a, b = parse_answer(output), parse_answer(golden)
    return a.prose == b.prose and a.calls == b.calls


def readable(text: str) -> str:
    """An answer for a terminal: `thinking: ...`, the prose, each call as `→ name({arguments})`;
    plain text as is."""
    a = parse_answer(text)
    if not a.calls and not a.reasoning:
        return text
    lines = [f"thinking: {a.reasoning}"] if a.reasoning else []
    if a.prose:
        lines.append(a.prose)
    lines += [f"→ {n or '?'}({json.dumps(args, ensure_ascii=False)})" for n, args in a.calls]
    return "\n".join(lines)


def openai_message(text: str, call_id: str = "call") -> dict[str, Any]:
    """A model's output as an OpenAI chat message: when it calls tools, `tool_calls` (arguments as
    a JSON string, as OpenAI writes them), `content` the text around the calls (None when there is
    none) and its `<think>` block as `reasoning_content`; otherwise the text as it is."""
    a = parse_answer(text)
    if not a.calls or not all(name for name, _ in a.calls):
        return {"role": "assistant", "content": text}
    content = _CALL.sub("", _THINK.sub("", text)).rpartition("</think>")[2].strip()
    msg: dict[str, Any] = {
        "role": "assistant",
        "content": content or None,
        "tool_calls": [
            {
                "id": f"{call_id}_{i}",
                "type": "function",
                "function": {"name": name, "arguments": json.dumps(args, ensure_ascii=False)},
            }
            for i, (name, args) in enumerate(a.calls)
        ],
    }
    if a.reasoning:
        msg["reasoning_content"] = a.reasoning
    return msg


def answer_of_message(msg: dict[str, Any]) -> str:
    """The inverse: an OpenAI assistant message (content, tool_calls, reasoning_content) as one
    answer text."""
    from daemon.chat.messages import Message, ToolCall

    calls = []
    for c in msg.get("tool_calls") or []:
        fn = c.get("function", c)
        args = fn.get("arguments")
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except ValueError:
                pass
        calls.append(ToolCall(str(fn.get("name", "")), args if args is not None else {}))
    m = Message(
        "assistant",
        msg.get("content") or "",
        reasoning=msg.get("reasoning_content") or "",
        tool_calls=calls,
    )
    return m.as_text()
