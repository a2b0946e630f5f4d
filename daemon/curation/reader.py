"""Read an input file as a stream of (line number, parsed object | problem).

JSONL is streamed line by line (memory does not grow with the file). A file whose first non-blank byte is `[` is a
JSON array and is parsed whole; its elements are numbered from 1. A file that cannot be read at all raises
InputFileError, which sends it to inbox/failed/ with an explanation.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemon.errors import InputFileError

_SNIFF = 8192


@dataclass
class RawLine:
    line: int
    obj: Any = None
    error: str | None = None
    """`invalid_json` or `not_utf8` when the line could not be parsed."""
    detail: str = ""
    """For errors: the validation code (`not_utf8`) or the JSON parser's message."""
    text: str = ""
    """The raw line (for rejected rows that could not be parsed)."""
    message: str = ""


def _decodes(b: bytes) -> bool:
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def sniff(path: Path) -> str:
    """'jsonl' or 'array'; raises InputFileError for an empty, binary or non-UTF-8 file."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise InputFileError(f"cannot read {path.name}: {exc}") from exc
    if size == 0:
        raise InputFileError(f"{path.name} is empty — write one JSON object per line and drop it again")
    with open(path, "rb") as fh:
        head = fh.read(_SNIFF)
    if b"\x00" in head:
        raise InputFileError(f"{path.name} is a binary file, not JSONL — export your data as UTF-8 JSONL")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # One bad line is a rejected record (not_utf8); a file whose every line is undecodable is not UTF-8.
        lines = head.split(b"\n")[:-1] or [head]
        bad = sum(1 for ln in lines if not _decodes(ln))
        if bad == len(lines) and exc.start < len(head) - 4:
            raise InputFileError(
                f"{path.name} is not UTF-8 (bad byte at offset {exc.start}) — re-save it as UTF-8") from exc
        text = head.decode("utf-8", "replace")
    stripped = text.lstrip("\ufeff \t\r\n")
    if not stripped:
        raise InputFileError(f"{path.name} has only blank lines — write one JSON object per line")
    return "array" if stripped.startswith("[") else "jsonl"


def read_records(path: Path) -> Iterator[RawLine]:
    kind = sniff(path)
    if kind == "array":
        yield from _read_array(path)
    else:
        yield from _read_jsonl(path)


def _read_array(path: Path) -> Iterator[RawLine]:
    try:
        data = json.loads(path.read_bytes().decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise InputFileError(f"{path.name} is not UTF-8 (byte {exc.start}) — re-save it as UTF-8") from exc
    except json.JSONDecodeError as exc:
        raise InputFileError(
            f"{path.name} starts like a JSON array but is not valid JSON ({exc.msg} at line {exc.lineno}, "
            f"column {exc.colno}) — fix it, or write JSONL so that one bad record does not spoil the file") from exc
    if not isinstance(data, list):
        raise InputFileError(f"{path.name} is JSON but not an array of records")
    for i, obj in enumerate(data, 1):
        yield RawLine(line=i, obj=obj)


def _read_jsonl(path: Path) -> Iterator[RawLine]:
    with open(path, "rb") as fh:
        for n, raw in enumerate(fh, 1):
            if n == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield RawLine(line=n, error="validation_failed", detail="not_utf8",
                              text=raw.decode("utf-8", "replace").rstrip("\n")[:2000],
                              message=f"invalid UTF-8 byte at column {exc.start + 1}")
                continue
            try:
                yield RawLine(line=n, obj=json.loads(text), text=text)
            except json.JSONDecodeError as exc:
                yield RawLine(line=n, error="invalid_json", detail=f"{exc.msg} at column {exc.colno}",
                              text=text.rstrip("\n")[:2000])


def read_items(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, raw line bytes) for JSONL, (element number, parsed element) for a JSON array; blank lines
    are skipped. Parsing JSONL lines is left to the caller (it may happen in a worker process)."""
    if sniff(path) == "array":
        for raw in _read_array(path):
            yield raw.line, raw.obj
        return
    with open(path, "rb") as fh:
        for n, raw in enumerate(fh, 1):
            if n == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            if raw.strip():
                yield n, raw
