"""One daemon per home folder: an exclusive `flock` on status/daemon.lock, held for the daemon's
life.

The kernel releases the lock when the daemon dies, however it dies, so a pid in daemon.json that a
reboot (or chance) gave to another process never blocks a new daemon, and `trainctl stop` never
signals that other process. Children do not inherit the lock (subprocess closes inherited
descriptors), so a surviving training child never keeps it either.
"""

from __future__ import annotations

import fcntl
from pathlib import Path
from typing import IO


def lock_path(status_dir: Path) -> Path:
    return status_dir / "daemon.lock"


def hold(status_dir: Path) -> IO[str] | None:
    """Take the lock and return its open file (keep it open while the daemon lives); None if
    another process holds it."""
    status_dir.mkdir(parents=True, exist_ok=True)
    fh = open(lock_path(status_dir), "a")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        return None
    return fh


def held(status_dir: Path) -> bool:
    """Whether a live daemon holds the lock (checked by trying to take it for a moment)."""
    try:
        fh = open(lock_path(status_dir))  # read-only: asking writes nothing
    except FileNotFoundError:
        return False
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        return False  # it was free (closing the file releases it again)
