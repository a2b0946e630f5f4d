"""Inbox watching: a watchdog observer feeds candidate files; the stable-file rule decides when one
is complete.

A file is queued only when all hold:
  * it is a regular *.jsonl / *.json file directly in inbox/, not hidden and not a temp name
    (*.tmp, *.part, ~);
  * its size and mtime have not changed for `stable_seconds`;
  * no process has it open for writing (Linux: /proc/*/fd), so a slow copier holding it open is
    waited for.
Renaming a finished file into inbox/ is the safest way to drop one; it is picked up at once.

A data file's own settings (`x.toml` beside `x.jsonl`) travel with it: while the sidecar exists,
its size and mtime are part of what must stay unchanged, so a sidecar dropped just after its data
file (within the stable window) restarts the clock and the pair is taken together; a sidecar alone
waits for its data file.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path

SUFFIXES = (".jsonl", ".json")
_TEMP_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".swp", "~")


def is_candidate(path: Path) -> bool:
    name = path.name
    return (
        not name.startswith(".")
        and name.lower().endswith(SUFFIXES)
        and not name.lower().endswith(_TEMP_SUFFIXES)
    )


def open_for_writing(path: Path) -> bool:
    """True if some process has `path` open with write access (best effort; False where /proc is
    absent)."""
    proc = Path("/proc")
    if not proc.is_dir():
        return False
    try:
        target = os.stat(path)
    except OSError:
        return False
    me = os.getpid()
    for pid_dir in proc.iterdir():
        if not pid_dir.name.isdigit() or int(pid_dir.name) == me:
            continue
        fd_dir = pid_dir / "fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                st = os.stat(fd_dir / fd)
            except OSError:
                continue
            if st.st_ino != target.st_ino or st.st_dev != target.st_dev:
                continue
            try:
                flags = int((pid_dir / "fdinfo" / fd).read_text().split("flags:")[1].split()[0], 8)
            except (OSError, IndexError, ValueError):
                return True
            if flags & (os.O_WRONLY | os.O_RDWR):
                return True
    return False


@dataclass
class _Seen:
    signature: tuple[object, ...]
    """(size, mtime) of the data file and of its sidecar (None while there is none)."""
    since: float


def _signature(path: Path) -> tuple[object, ...]:
    st = path.stat()
    try:
        side = os.lstat(path.with_suffix(".toml"))
        side_sig: tuple[int, int] | None = (side.st_size, side.st_mtime_ns)
    except FileNotFoundError:
        side_sig = None
    return (st.st_size, st.st_mtime_ns, side_sig)


class InboxWatcher:
    """Collects candidate files from watchdog events and periodic scans; `ready()` returns the
    complete ones."""

    def __init__(self, inbox: Path, stable_seconds: float = 0.5):
        self.inbox = inbox
        self.stable_seconds = stable_seconds
        self._pending: dict[Path, _Seen | None] = {}
        self._lock = threading.Lock()
        self._observer = None

    def start(self) -> None:
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        watcher = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event):  # created, modified, moved (dest), closed
                if event.is_directory:
                    return
                for p in (getattr(event, "dest_path", None), event.src_path):
                    if p:
                        watcher.note(Path(os.fsdecode(p)))

        observer = Observer()
        observer.schedule(Handler(), str(self.inbox), recursive=False)
        observer.start()
        self._observer = observer
        self.scan()

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None

    def note(self, path: Path) -> None:
        if path.parent == self.inbox and is_candidate(path):
            with self._lock:
                self._pending.setdefault(path, None)

    def scan(self) -> None:
        """Pick up files that arrived without an event (before start, or missed)."""
        try:
            for p in self.inbox.iterdir():
                if not p.is_dir():  # links, FIFOs and devices too: the daemon refuses them by name
                    self.note(p)
        except FileNotFoundError:
            pass

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def ready(self) -> list[Path]:
        now = time.monotonic()
        out = []
        with self._lock:
            items = list(self._pending.items())
        for path, seen in items:
            try:
                mode = os.lstat(path).st_mode
                # Anything but a regular file is refused unread at once (nothing to wait for; a
                # FIFO's or a link's target is never stat-ed or opened)
                sig = _signature(path) if stat.S_ISREG(mode) else None
            except FileNotFoundError:
                with self._lock:
                    self._pending.pop(path, None)
                continue
            if sig is None:
                if not stat.S_ISDIR(mode):
                    out.append(path)
                with self._lock:
                    self._pending.pop(path, None)
                continue
            if seen is None or sig != seen.signature:
                seen = _Seen(sig, now)  # (re)start the stability clock
                with self._lock:
                    self._pending[path] = seen
            if now - seen.since < self.stable_seconds:
                continue
            if open_for_writing(path) or (
                sig[2] is not None and open_for_writing(path.with_suffix(".toml"))
            ):
                continue  # a writer still holds it: keep waiting however long the pause
            out.append(path)
            with self._lock:
                self._pending.pop(path, None)
        return sorted(out, key=lambda p: p.lstat().st_mtime_ns if os.path.lexists(p) else 0)
