"""Atomic state files: write a temporary file beside the target, fsync, then `os.replace`.

A kill at any instant leaves either the old or the new file, never half of one.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


@contextmanager
def atomic_open(path: Path, mode: str = "wb", durable: bool = True) -> Iterator[IO[Any]]:
    """Open a temporary file beside `path`; on a clean exit fsync it (if `durable`) and rename it
    over `path`.

    The rename alone makes the write atomic against a killed process; the fsync makes it survive a
    power cut too. `durable=False` is for live views rewritten every moment (the training status),
    where that costs more than it saves."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as fh:
            yield fh
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_bytes_atomic(path: Path, data: bytes, durable: bool = True) -> None:
    with atomic_open(path, "wb", durable) as fh:
        fh.write(data)


def write_text_atomic(path: Path, text: str, durable: bool = True) -> None:
    write_bytes_atomic(path, text.encode("utf-8"), durable)


def write_json_atomic(path: Path, obj: Any, indent: int | None = 2, durable: bool = True) -> None:
    write_text_atomic(
        path, json.dumps(obj, indent=indent, ensure_ascii=False, default=str) + "\n", durable
    )


def write_jsonl_atomic(path: Path, rows: Any) -> None:
    """A whole JSONL file at once (e.g. a new file for the inbox: the daemon never sees half of
    it)."""
    write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def read_json(path: Path, default: Any = None) -> Any:
    """Read a JSON file; `default` when it does not exist."""
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        return default


def iter_jsonl(path: Path):
    """Yield the parsed rows of a JSONL file, skipping a torn (unterminated, unparsable) last
    line."""
    try:
        fh = open(path, encoding="utf-8")
    except FileNotFoundError:
        return
    with fh:
        for line in fh:
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                if line.endswith("\n"):
                    raise
                return  # a torn last line: the writer was killed mid-append


def _json_line(row: Any) -> bytes:
    return json.dumps(row, ensure_ascii=False, default=str).encode("utf-8")


class JsonlAppender:
    """Appends JSON lines to a file kept open for many rows (training metrics, bench results). Each
    line is written and flushed to the OS at once, so a reader or a killed process never sees half
    of one; it is fsynced at most every `fsync_seconds` and at close (None: never, left to the OS).
    `dumps` turns a row into bytes."""

    def __init__(
        self,
        path: Path,
        fsync_seconds: float | None = None,
        dumps: Callable[[Any], bytes] = _json_line,
    ):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.fh = open(path, "ab")
        self.fsync_seconds = fsync_seconds
        self.dumps = dumps
        self.last_sync = time.monotonic()

    def write(self, row: Any) -> None:
        self.fh.write(self.dumps(row) + b"\n")
        self.fh.flush()
        if (
            self.fsync_seconds is not None
            and time.monotonic() - self.last_sync >= self.fsync_seconds
        ):
            self.sync()

    def sync(self) -> None:
        os.fsync(self.fh.fileno())
        self.last_sync = time.monotonic()

    def close(self) -> None:
        if self.fsync_seconds is not None:
            self.sync()
        self.fh.close()


def append_jsonl(path: Path, row: Any, fsync: bool = False) -> None:
    """Append one JSON line. With fsync the line survives a power cut once this returns."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(row, ensure_ascii=False, default=str) + "\n").encode("utf-8")
    with open(path, "ab") as fh:
        fh.write(line)
        fh.flush()
        if fsync:
            os.fsync(fh.fileno())


def repair_torn_tail(path: Path) -> int:
    """Cut a JSONL file back to its last complete line. Returns the number of bytes removed."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return 0
    if size == 0:
        return 0
    with open(path, "rb+") as fh:
        # Walk back from the end to the last newline; everything after it is a torn write.
        block = 1 << 16
        pos = size
        keep = 0
        while pos > 0:
            start = max(0, pos - block)
            fh.seek(start)
            chunk = fh.read(pos - start)
            idx = chunk.rfind(b"\n")
            if idx >= 0:
                keep = start + idx + 1
                break
            pos = start
        if keep == size:
            # Ends in a newline; the last line may still be garbage from a torn multi-write. Check
            # it.
            return 0
        fh.truncate(keep)
        fh.flush()
        os.fsync(fh.fileno())
        return size - keep
