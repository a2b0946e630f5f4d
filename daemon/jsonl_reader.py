"""Read an input file as a stream of (line number, raw line | parsed element).

JSONL is streamed line by line (memory does not grow with the file); lines are parsed by the
curator's workers. A file whose first non-blank byte is `[` is a JSON array and is parsed whole;
its elements are numbered from 1. A file that cannot be read at all raises InputFileError, which
sends it to inbox/failed/ with an explanation. Only regular files are opened, and never through a
symbolic link (O_NOFOLLOW): the commands resolve a path the user typed before they hand it here, so
a link reaching this far was dropped into the inbox by someone else.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from daemon.errors import InputFileError

_SNIFF = 8192
_WIDE_BOMS = (
    (b"\xff\xfe\x00\x00", "UTF-32"),
    (b"\x00\x00\xfe\xff", "UTF-32"),
    (b"\xff\xfe", "UTF-16"),
    (b"\xfe\xff", "UTF-16"),
)
"""Byte-order marks of the wide encodings (UTF-32 first: its little-endian mark begins like
UTF-16's)."""


def open_input(path: Path) -> BinaryIO:
    """`path` opened for reading if it is a regular file reached without a symbolic link; else
    InputFileError. Non-blocking at open, so a FIFO is refused instead of waited on."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InputFileError(
                f"{path.name} is a symbolic link: trainctl "
                "reads only regular files — copy the data itself"
            ) from exc
        raise InputFileError(f"cannot read {path.name}: {exc.strerror}") from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise InputFileError(
            f"{path.name} is not a regular file — copy the data itself into a file"
        )
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def _decodes(b: bytes) -> bool:
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def sniff(path: Path) -> str:
    """'jsonl' or 'array'; raises InputFileError for an empty, binary or non-UTF-8 file."""
    with open_input(path) as fh:
        size = os.fstat(fh.fileno()).st_size
        head = fh.read(_SNIFF)
    if size == 0:
        raise InputFileError(
            f"{path.name} is empty — write one JSON object per line and drop it again"
        )
    wide = next((name for bom, name in _WIDE_BOMS if head.startswith(bom)), None)
    if wide is not None:
        raise InputFileError(
            f"{path.name} is {wide} text (it starts with a {wide} byte-order mark), not "
            f"UTF-8 — re-save it as UTF-8 (e.g. `iconv -f {wide} -t UTF-8`) and drop it again"
        )
    if b"\x00" in head:
        raise InputFileError(
            f"{path.name} is a binary file, not JSONL — export your data as UTF-8 JSONL"
        )
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # One bad line is a rejected record (not_utf8); a file whose every line is undecodable is
        # not UTF-8.
        lines = head.split(b"\n")[:-1] or [head]
        bad = sum(1 for ln in lines if not _decodes(ln))
        if bad == len(lines) and exc.start < len(head) - 4:
            raise InputFileError(
                f"{path.name} is not UTF-8 (bad byte at offset {exc.start}) — re-save it as UTF-8"
            ) from exc
        text = head.decode("utf-8", "replace")
    stripped = text.lstrip("\ufeff \t\r\n")
    if not stripped:
        raise InputFileError(f"{path.name} has only blank lines — write one JSON object per line")
    return "array" if stripped.startswith("[") else "jsonl"


def _read_array(path: Path) -> list[Any]:
    try:
        with open_input(path) as fh:
            data = json.loads(fh.read().decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise InputFileError(
            f"{path.name} is not UTF-8 (byte {exc.start}) — re-save it as UTF-8"
        ) from exc
    except json.JSONDecodeError as exc:
        raise InputFileError(
            f"{path.name} starts like a JSON array but is not valid JSON "
            f"({exc.msg} at line {exc.lineno}, column {exc.colno}) — fix it, "
            "or write JSONL so that one bad record does not spoil the file"
        ) from exc
    if not isinstance(data, list):
        raise InputFileError(f"{path.name} is JSON but not an array of records")
    return data


def read_items(path: Path, counts: dict[str, int] | None = None) -> Iterator[tuple[int, Any]]:
    """(line number, raw line bytes) for JSONL, (element number, parsed element) for a JSON array;
    blank lines are skipped (and counted in `counts["blank"]` when given). Parsing JSONL lines is
    left to the caller (it may happen in a worker process)."""
    if sniff(path) == "array":
        yield from enumerate(_read_array(path), 1)
        return
    with open_input(path) as fh:
        for n, raw in enumerate(fh, 1):
            if n == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            if raw.strip():
                yield n, raw
            elif counts is not None:
                counts["blank"] = counts.get("blank", 0) + 1
