"""Structural checks on a normalised example. Each failure is one stable detail code
(the `detail` of a rejected record, listed by `trainctl rejected`)."""

from __future__ import annotations

import re

from daemon.chat.formats import Example
from daemon.chat.messages import tool_names

_PLACEHOLDER = re.compile(r"\{\{\s*[A-Za-z_][\w.]*\s*\}\}")


def check(ex: Example) -> tuple[str, str] | None:
    """(detail code, human explanation) for the first problem found, else None."""
    msgs = ex.messages
    if not any(m.role == "assistant" for m in msgs):
        return "no_assistant_turn", "no assistant turn to learn from"
    answer = msgs[max(i for i, m in enumerate(msgs) if m.role == "assistant")]
    if not answer.content.strip() and not answer.tool_calls:
        what = "has reasoning but no answer" if answer.reasoning.strip() else "is empty"
        return "empty_output", f"the assistant's last turn {what}"
    first_other = next(i for i, m in enumerate(msgs) if m.role != "system")
    if any(m.role == "system" for m in msgs[first_other:]):
        return "bad_role_order", "a system message after the conversation started"
    turns = msgs[first_other:]
    if ex.fmt != "text" and turns[0].role != "user":
        return (
            "bad_role_order",
            f"the conversation starts with a {turns[0].role} turn, not a user turn",
        )
    for prev, cur in zip(turns, turns[1:]):
        if prev.role == cur.role == "user":
            return "bad_role_order", "two user turns in a row"
        if cur.role == "tool" and prev.role not in ("assistant", "tool"):
            return "bad_role_order", "a tool result that follows no assistant call"
    # the first non-system turn is a user turn (above)
    if ex.fmt != "text" and not turns[0].content.strip():
        first = next(i for i, m in enumerate(msgs) if m.role == "assistant")
        if not any(m.content.strip() for m in msgs[:first] if m.role != "assistant"):
            return (
                "empty_prompt",
                "nothing before the first assistant turn: no user, system or tool content",
            )
    known = tool_names(ex.tools)
    for m in msgs:
        if known and m.tool_calls:
            unknown = [c.name for c in m.tool_calls if c.name not in known]
            if unknown:
                return "unknown_tool", (
                    f"a call to {unknown[0]!r}, which the record's tools "
                    f"do not define (defined: {', '.join(sorted(known))})"
                )
        if "{{" in m.content or "{{" in m.reasoning:
            hit = _PLACEHOLDER.search(m.content) or _PLACEHOLDER.search(m.reasoning)
            if hit:
                return (
                    "unfilled_placeholder",
                    f"unfilled template placeholder {hit.group(0)} in a {m.role} turn",
                )
    return None
