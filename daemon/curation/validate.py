"""Structural checks on a normalised example. Each failure is one stable detail code (SPEC section 4)."""

from __future__ import annotations

import re

from daemon.curation.formats import Example

_PLACEHOLDER = re.compile(r"\{\{\s*[A-Za-z_][\w.]*\s*\}\}")


def check(ex: Example) -> tuple[str, str] | None:
    """(detail code, human explanation) for the first problem found, else None."""
    msgs = ex.messages
    if not any(m.role == "assistant" for m in msgs):
        return "no_assistant_turn", "no assistant turn to learn from"
    if not ex.answer.strip():
        return "empty_output", "the assistant's answer is empty"
    first_other = next(i for i, m in enumerate(msgs) if m.role != "system")
    if any(m.role == "system" for m in msgs[first_other:]):
        return "bad_role_order", "a system message after the conversation started"
    turns = msgs[first_other:]
    if ex.fmt != "text" and turns[0].role != "user":
        return "bad_role_order", f"the conversation starts with a {turns[0].role} turn, not a user turn"
    for prev, cur in zip(turns, turns[1:]):
        if prev.role == cur.role == "user":
            return "bad_role_order", "two user turns in a row"
        if cur.role == "tool" and prev.role not in ("assistant", "tool"):
            return "bad_role_order", "a tool result that follows no assistant call"
    for m in msgs:
        hit = _PLACEHOLDER.search(m.content) if "{{" in m.content else None
        if hit:
            return "unfilled_placeholder", f"unfilled template placeholder {hit.group(0)} in a {m.role} turn"
    return None
