"""Read a bench prompt file as a stream of `BenchPrompt`s.

Accepted lines: OpenAI Batch API requests (`custom_id`, `method`, `url`, `body.messages`,
`body.tools`, `body.max_tokens`, `body.temperature`, `body.top_p`) or any training record
(daemon/chat/formats.py). For a training record that ends with an assistant turn, the prompt is
everything before it and the answer is kept as the `reference`. The id is `custom_id`, else `id`,
else `line-N`. A line that cannot be run becomes a prompt with an `error`, so that it still ends
with exactly one (error) result.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daemon.chat.formats import FormatError, normalise
from daemon.errors import BenchError
from daemon.hashing import update_from_file
from daemon.jsonl_reader import read_items


@dataclass
class BenchPrompt:
    custom_id: str
    line: int
    messages: list[dict[str, Any]] = field(default_factory=list)
    """The chat to answer, as normalised rows (daemon.chat.messages): the model writes the next
    assistant turn."""
    tools: list[dict[str, Any]] | None = None
    """The tools the model may call (`body.tools` of a batch line, a record's `tools`), rendered as
    in training."""
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    reference: str | None = None
    """The golden answer, when the record carried one (a test split, an Alpaca record)."""
    metadata: dict[str, Any] = field(default_factory=dict)
    """The record's other fields (body.metadata for batch lines): `bench compare --name-field`
    reads them."""
    error: str | None = None
    """Why this line cannot be run (`invalid_json`, `unknown_format`, `invalid_request`); None for
    a good prompt."""


def _number(value: Any, kind: type) -> Any:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{value!r} is not a number")
    return kind(value)


def _from_batch_line(rec: dict[str, Any], line: int) -> BenchPrompt:
    body = rec.get("body")
    cid = str(rec["custom_id"])
    if not isinstance(body, dict):
        return BenchPrompt(cid, line, error="invalid_request: body is not an object")
    msgs = body.get("messages")
    if not isinstance(msgs, list) and isinstance(body.get("prompt"), str):
        msgs = [{"role": "user", "content": body["prompt"]}]  # /v1/completions style
    if not isinstance(msgs, list) or not msgs:
        return BenchPrompt(cid, line, error="invalid_request: body.messages is missing or empty")
    try:
        parsed = normalise(
            {"messages": msgs, "tools": body.get("tools", body.get("functions"))}, line
        )
        assert parsed is not None
        max_tokens = _number(body.get("max_completion_tokens", body.get("max_tokens")), int)
        temperature = _number(body.get("temperature"), float)
        top_p = _number(body.get("top_p"), float)
    except (FormatError, ValueError) as exc:
        return BenchPrompt(cid, line, error=f"invalid_request: {exc}")
    metadata = body.get("metadata")
    meta: dict[str, Any] = metadata if isinstance(metadata, dict) else {}
    return BenchPrompt(
        cid,
        line,
        [m.to_row() for m in parsed.messages],
        parsed.tools,
        max_tokens,
        temperature,
        top_p,
        metadata=dict(meta),
    )


def _from_record(rec: Any, line: int) -> BenchPrompt:
    cid = (
        str(rec.get("custom_id", rec.get("id", f"line-{line}")))
        if isinstance(rec, dict)
        else f"line-{line}"
    )
    if isinstance(rec, dict) and "prompt" in rec and "completion" not in rec:
        user = {"role": "user", "content": rec["prompt"]}
        rec = {k: v for k, v in rec.items() if k != "prompt"} | {"messages": [user]}
    try:
        ex = normalise(rec, line)
    except FormatError as exc:
        return BenchPrompt(cid, line, error=f"invalid_request: {exc}")
    if ex is None:
        return BenchPrompt(
            cid, line, error="unknown_format: not a batch request nor a training record"
        )
    msgs = ex.messages
    reference = None
    if ex.fmt == "text":
        msgs = [type(msgs[0])("user", msgs[0].content)]  # plain text is the prompt itself
    elif msgs and msgs[-1].role == "assistant":
        reference, msgs = msgs[-1].as_text(), msgs[:-1]
    if not msgs:
        return BenchPrompt(cid, line, error="invalid_request: no prompt before the answer")
    meta = {k: v for k, v in ex.meta.items() if k not in ("custom_id", "id")}
    return BenchPrompt(
        cid, line, [m.to_row() for m in msgs], ex.tools, reference=reference, metadata=meta
    )


def iter_prompts(path: Path) -> Iterator[BenchPrompt]:
    """Every prompt of the file in order, one per non-blank line (or array element)."""
    for line, item in read_items(path):
        if isinstance(item, bytes):
            try:
                item = json.loads(item)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                yield BenchPrompt(f"line-{line}", line, error=f"invalid_json: {exc}")
                continue
        if isinstance(item, dict) and "custom_id" in item and "body" in item:
            yield _from_batch_line(item, line)
        else:
            yield _from_record(item, line)


@dataclass
class PromptFileInfo:
    sha256: str
    total: int


def scan_prompt_file(path: Path) -> PromptFileInfo:
    """One streaming pass: content hash (what a resumed run must match) and prompt count. Refuses
    duplicate ids, which would make "one result per custom_id" impossible."""
    digest = update_from_file(hashlib.sha256(), path)
    seen: dict[str, int] = {}
    dups: list[str] = []
    total = 0
    for p in iter_prompts(path):
        total += 1
        if p.custom_id in seen:
            dups.append(f"{p.custom_id!r} (lines {seen[p.custom_id]} and {p.line})")
        else:
            seen[p.custom_id] = p.line
    if dups:
        shown = "; ".join(dups[:5]) + (f"; and {len(dups) - 5} more" if len(dups) > 5 else "")
        raise BenchError(f"{path.name} repeats custom_id {shown} — every prompt needs its own id")
    if total == 0:
        raise BenchError(f"{path.name} has no prompts — write one request per line")
    return PromptFileInfo(digest.hexdigest(), total)
