"""Content hashes of files, read in 1 MiB blocks (inbox files, prompt files, adapters, downloaded
wheels)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any


def update_from_file(digest: Any, path: Path, follow_symlinks: bool = True) -> Any:
    """Feed the bytes of `path` to `digest` (a hashlib object) without holding the file in memory;
    returns it. `follow_symlinks=False` refuses a symbolic link (OSError), for files whose origin
    is not trusted."""
    flags = os.O_RDONLY | (0 if follow_symlinks else os.O_NOFOLLOW)
    with os.fdopen(os.open(path, flags), "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest


def file_sha256(path: Path, follow_symlinks: bool = True) -> str:
    return update_from_file(hashlib.sha256(), path, follow_symlinks).hexdigest()
