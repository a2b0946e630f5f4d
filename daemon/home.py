"""The home folder: the one place that knows the layout of inbox/, status/ and data/.

Every path under the home folder is built here. Names that come from users (file, dataset, run
names) go through `safe_name` / `inside`, so that `../`, absolute paths and symlinks pointing out
are refused.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from daemon.errors import HomeError

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def resolve_home(home: str | os.PathLike[str] | None = None) -> Path:
    """--home, else $TRAINCTL_HOME, else the current directory."""
    raw = home or os.environ.get("TRAINCTL_HOME") or os.getcwd()
    path = Path(raw).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise HomeError(f"home folder {path} is a file — pass a folder with --home")
    return path


def safe_name(name: str) -> str:
    """A user-given name reduced to one harmless path component (no separators, no leading
    dots)."""
    cleaned = _SAFE.sub("_", Path(name).name).lstrip(".")
    if not cleaned:
        raise HomeError(
            f"name {name!r} has no usable characters — use letters, digits, '.', '_' or '-'"
        )
    return cleaned[:120]


@dataclass(frozen=True)
class Home:
    """Paths of one trainctl home folder: inbox/, status/ and data/ with everything a job
    leaves."""

    root: Path

    @classmethod
    def open(cls, home: str | os.PathLike[str] | None = None, create: bool = True) -> Home:
        h = cls(resolve_home(home))
        if create:
            h.ensure()
        return h

    def ensure(self) -> None:
        for folder in self._working_folders():
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise HomeError(self._unwritable(folder, exc.strerror or str(exc))) from exc

    def check_writable(self) -> None:
        """HomeError naming the first folder the daemon or a job must write to and cannot (a
        read-only disk, permissions), before any work starts rather than as a traceback halfway
        through it."""
        for folder in (*self._working_folders(), self.logs):
            if folder.exists() and not os.access(folder, os.W_OK):
                raise HomeError(self._unwritable(folder, "not writable"))

    def _working_folders(self) -> tuple[Path, ...]:
        return (
            self.inbox,
            self.inbox_done,
            self.inbox_failed,
            self.inbox_processing,
            self.status_dir,
            self.data,
            self.datasets,
            self.runs,
            self.models,
        )

    def _unwritable(self, folder: Path, reason: str) -> str:
        return (
            f"cannot write to {folder} ({reason}) — make {self.root} writable (`chmod -R u+w "
            f"{self.root}`, or remount its disk read-write), or use another home with --home"
        )

    # inbox/
    @property
    def inbox(self) -> Path:
        return self.root / "inbox"

    @property
    def inbox_done(self) -> Path:
        return self.inbox / "done"

    @property
    def inbox_failed(self) -> Path:
        return self.inbox / "failed"

    @property
    def inbox_processing(self) -> Path:
        """Files taken from the inbox wait here while their job is queued or running."""
        return self.inbox / "processing"

    # status/
    @property
    def status_dir(self) -> Path:
        return self.root / "status"

    @property
    def training_status(self) -> Path:
        return self.status_dir / "training_status.json"

    @property
    def daemon_status(self) -> Path:
        return self.status_dir / "daemon.json"

    # data/
    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def jobs_db(self) -> Path:
        return self.data / "jobs.db"

    @property
    def datasets(self) -> Path:
        return self.data / "datasets"

    @property
    def runs(self) -> Path:
        return self.data / "runs"

    @property
    def models(self) -> Path:
        return self.data / "models"

    @property
    def flagged_file(self) -> Path:
        return self.data / "flagged_examples" / "flagged_examples.json"

    @property
    def evolution_root(self) -> Path:
        return self.data / "evolution_snapshots"

    @property
    def bench_root(self) -> Path:
        return self.data / "bench"

    @property
    def logs(self) -> Path:
        return self.data / "logs"

    @property
    def daemon_log(self) -> Path:
        """data/logs/daemon.log: what the daemon says (a detached daemon's whole output)."""
        return self.logs / "daemon.log"

    @property
    def notify_outbox(self) -> Path:
        """data/notify/outbox/: notices written before they are sent, removed once delivered."""
        return self.data / "notify" / "outbox"

    @property
    def notify_failed(self) -> Path:
        """data/notify/failed/: notices every retry failed to deliver."""
        return self.data / "notify" / "failed"

    def job_log(self, job_id: int) -> Path:
        """data/logs/job-N.log: the output of job N's worker (curation, training, torchrun), every
        attempt."""
        return self.logs / f"job-{int(job_id):05d}.log"

    @property
    def settings_file(self) -> Path:
        return self.root / "trainctl.toml"

    def job_status(self, job_id: int) -> Path:
        """status/jobs/job-N.json: the live status of one job (training_status.json is the latest
        written by any job; with several jobs at once each keeps its own here)."""
        return self.status_dir / "jobs" / f"job-{int(job_id):05d}.json"

    def run_dir(self, job_id: int) -> Path:
        return self.runs / f"job-{int(job_id):05d}"

    def dataset_dir(self, name: str, stamp: str) -> Path:
        return self.datasets / f"{safe_name(name)}_{stamp}"

    def evolution_dir(self, dataset: str) -> Path:
        return self.inside(self.evolution_root / safe_name(dataset))

    def bench_dir(self, run_name: str) -> Path:
        return self.inside(self.bench_root / safe_name(run_name))

    def inside(self, path: str | os.PathLike[str]) -> Path:
        """`path` (relative to the home, or absolute) resolved, refused if it leaves the home
        folder."""
        p = Path(path)
        if not p.is_absolute():
            p = self.root / p
        resolved = p.resolve()
        if resolved != self.root and self.root not in resolved.parents:
            raise HomeError(
                f"{path} is outside the home folder {self.root} — use a path inside it"
            )
        return resolved

    def unique_path(self, folder: Path, name: str) -> Path:
        """folder/name, or name.1, .2 ... if taken, so that nothing is overwritten (x.jsonl ->
        x.1.jsonl: the inbox still sees a .jsonl file)."""
        name = safe_name(name)
        stem, ext = name, ""
        for suffix in (".jsonl", ".json"):
            if name.lower().endswith(suffix):
                stem, ext = name[: -len(suffix)], name[-len(suffix) :]
                break
        candidate = folder / name
        n = 1
        while candidate.exists():
            candidate = folder / f"{stem}.{n}{ext}"
            n += 1
        return candidate
