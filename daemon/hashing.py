"""Content hashes of files, read in 1 MiB blocks (inbox files, prompt files, adapters, downloaded wheels)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any


def update_from_file(digest: Any, path: Path) -> Any:
    """Feed the bytes of `path` to `digest` (a hashlib object) without holding the file in memory; returns it."""
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest


def file_sha256(path: Path) -> str:
    return update_from_file(hashlib.sha256(), path).hexdigest()
