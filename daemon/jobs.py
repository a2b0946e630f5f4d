"""The job queue (SQLite, data/jobs.db) and the job state machine.

One row per inbox file. The daemon and its training child both write here; WAL mode and a busy
timeout let the CLI read while they do. Every state change goes through `transition`, which refuses
illegal moves.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from daemon.errors import JobError


class JobState(str, Enum):
    QUEUED = "queued"  # waiting in line; its file sits in inbox/processing/
    CURATING = "curating"  # a worker is turning the file into a dataset
    TRAINING = "training"  # a worker is fine-tuning on that dataset
    # stopped, or its worker died; resumes from its last checkpoint on the next start
    INTERRUPTED = "interrupted"
    # stopped on request (`trainctl pause`) with a checkpoint; waits for `trainctl resume`
    PAUSED = "paused"
    DONE = "done"  # adapter written; file moved to inbox/done/
    # gave up; `error` says why; file moved to inbox/failed/ with an .error.txt
    FAILED = "failed"
    # stopped for good on request (`trainctl cancel`); checkpoints kept; file in failed/
    CANCELLED = "cancelled"
    # same content as an earlier job; not trained again; file moved to inbox/done/
    SKIPPED = "skipped"


TERMINAL = frozenset({JobState.DONE, JobState.FAILED, JobState.CANCELLED, JobState.SKIPPED})
ACTIVE = frozenset({JobState.CURATING, JobState.TRAINING})
WAITING = frozenset({JobState.QUEUED, JobState.INTERRUPTED})
"""States the daemon starts jobs from."""

_ALLOWED: dict[JobState, frozenset[JobState]] = {
    # QUEUED -> TRAINING: a retried job whose dataset is already curated
    JobState.QUEUED: frozenset(
        {
            JobState.CURATING,
            JobState.TRAINING,
            JobState.FAILED,
            JobState.SKIPPED,
            JobState.CANCELLED,
        }
    ),
    JobState.CURATING: frozenset(
        {
            JobState.TRAINING,
            JobState.FAILED,
            JobState.INTERRUPTED,
            JobState.PAUSED,
            JobState.CANCELLED,
        }
    ),
    JobState.TRAINING: frozenset(
        {JobState.DONE, JobState.FAILED, JobState.INTERRUPTED, JobState.PAUSED, JobState.CANCELLED}
    ),
    JobState.INTERRUPTED: frozenset(
        {
            JobState.CURATING,
            JobState.TRAINING,
            JobState.FAILED,
            JobState.PAUSED,
            JobState.CANCELLED,
        }
    ),
    # resume: back in line, from its checkpoint
    JobState.PAUSED: frozenset({JobState.INTERRUPTED, JobState.CANCELLED}),
    JobState.DONE: frozenset(),
    JobState.FAILED: frozenset({JobState.QUEUED}),  # retry
    JobState.CANCELLED: frozenset({JobState.QUEUED}),  # retry
    JobState.SKIPPED: frozenset(),
}

STOP_REQUESTS = {"pause": JobState.PAUSED, "cancel": JobState.CANCELLED}
"""A running job asked to stop (`request` column) ends in this state instead of INTERRUPTED."""
STOPPED_AS_ASKED = {
    JobState.PAUSED: "paused; `trainctl resume` continues from its checkpoint",
    JobState.CANCELLED: "cancelled; its checkpoints are kept",
}
"""The message of a job stopped because `trainctl pause` / `cancel` asked it to."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    file_name TEXT NOT NULL,      -- the name it was dropped under
    file_path TEXT NOT NULL,      -- where the file is now (processing/, done/ or failed/)
    sha256 TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    updated_at REAL NOT NULL,
    dataset_dir TEXT,
    run_dir TEXT,
    adapter_dir TEXT,
    error TEXT,
    message TEXT,
    worker_pid INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    forced INTEGER NOT NULL DEFAULT 0,
    overrides TEXT,               -- JSON: per-job overrides (flags, [files."x.jsonl"], x.toml)
    devices TEXT,                 -- JSON: its placement (GPUs, processes, port); daemon.devices
    priority INTEGER NOT NULL DEFAULT 0,  -- higher starts first; equal by arrival
    request TEXT,                 -- stop asked of the running job: pause or cancel (STOP_REQUESTS)
    settings_file TEXT            -- the x.toml that came with the file (moved along with it)
);
CREATE INDEX IF NOT EXISTS jobs_sha ON jobs(sha256);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
"""

_ADDED_COLUMNS = {
    "devices": "TEXT",
    "priority": "INTEGER NOT NULL DEFAULT 0",
    "request": "TEXT",
    "settings_file": "TEXT",
}
"""Columns added after the first release, with their declarations: an older queue gets them on
open."""


@dataclass
class Job:
    id: int
    file_name: str
    file_path: str
    sha256: str
    state: JobState
    created_at: float
    started_at: float | None
    finished_at: float | None
    updated_at: float
    dataset_dir: str | None
    run_dir: str | None
    adapter_dir: str | None
    error: str | None
    message: str | None
    worker_pid: int | None
    attempts: int
    forced: int
    overrides: str | None
    devices: str | None = None
    """JSON of the job's placement (daemon.devices.Placement) while it runs and after: GPUs,
    processes, port."""
    priority: int = 0
    """Higher starts first; jobs of equal priority start in order of arrival."""
    request: str | None = None
    """`pause` or `cancel` asked of the job while it ran; applied when its worker stops."""
    settings_file: str | None = None
    """The settings file that came with the data file (x.toml beside x.jsonl), where it is now."""

    @property
    def devices_dict(self) -> dict[str, Any] | None:
        return json.loads(self.devices) if self.devices else None

    @property
    def overrides_dict(self) -> dict[str, dict[str, Any]]:
        return json.loads(self.overrides) if self.overrides else {}

    def to_dict(self) -> dict[str, Any]:
        d = dict(vars(self))
        d["state"] = self.state.value
        d.pop("overrides")
        d["overrides"] = self.overrides_dict
        d["devices"] = self.devices_dict
        return d


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still "exists"; treat it as dead.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _create_whole(db_path: Path) -> None:
    """Make a new queue appear whole: built under a temporary name, then linked into place (never
    over one another process has just made). A reader that finds the file (`trainctl queue`,
    `status`) finds its table too; created in place, it could meet an empty database in the instant
    before the schema ("no such table: jobs")."""
    if db_path.exists():
        return
    db_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = db_path.with_name(f".{db_path.name}.{os.getpid()}.new")
    conn = sqlite3.connect(tmp)
    try:
        conn.execute("PRAGMA journal_mode=WAL")  # kept in the file's header
        conn.executescript(_SCHEMA)
    finally:
        conn.close()  # checkpoints and removes its -wal: the file holds everything
    try:
        os.link(tmp, db_path)
    except FileExistsError:
        pass  # another process made it first: use that one
    finally:
        tmp.unlink(missing_ok=True)


class JobQueue:
    def __init__(self, db_path: Path, readonly: bool = False):
        self.path = db_path
        if readonly:
            self.conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)
        else:
            _create_whole(db_path)
            self.conn = sqlite3.connect(db_path, timeout=30)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.executescript(_SCHEMA)
            cols = {r[1] for r in self.conn.execute("PRAGMA table_info(jobs)")}
            for col, decl in _ADDED_COLUMNS.items():  # a queue written by an older trainctl
                if col not in cols:
                    self.conn.execute(f"ALTER TABLE jobs ADD COLUMN {col} {decl}")
        self.conn.row_factory = sqlite3.Row
        self.conn.execute("PRAGMA busy_timeout=30000")

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> JobQueue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def _job(row: sqlite3.Row) -> Job:
        d = dict(row)
        d["state"] = JobState(d["state"])
        return Job(**d)

    def enqueue(
        self,
        file_name: str,
        file_path: Path,
        sha256: str,
        forced: bool = False,
        overrides: dict[str, Any] | None = None,
        initial: JobState = JobState.QUEUED,
        worker_pid: int | None = None,
        priority: int = 0,
        settings_file: Path | None = None,
    ) -> Job:
        """A new job. `initial` is QUEUED (the daemon picks it up) or CURATING (a foreground run
        owns it)."""
        if initial not in (JobState.QUEUED, JobState.CURATING):
            raise JobError(f"a job cannot start in state {initial.value}")
        now = time.time()
        with self.conn:
            cur = self.conn.execute(
                "INSERT INTO jobs (file_name, file_path, sha256, state, created_at, "
                "updated_at, forced, overrides, worker_pid, started_at, priority, "
                "settings_file) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    file_name,
                    str(file_path),
                    sha256,
                    initial.value,
                    now,
                    now,
                    int(forced),
                    json.dumps(overrides) if overrides else None,
                    worker_pid,
                    now if initial == JobState.CURATING else None,
                    priority,
                    str(settings_file) if settings_file else None,
                ),
            )
        return self.get(int(cur.lastrowid or 0))

    def get(self, job_id: int) -> Job:
        row = self.conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise JobError(f"no job {job_id} — run `trainctl queue` to see the jobs")
        return self._job(row)

    def newest(self, limit: int = 50, states: set[JobState] | None = None) -> list[Job]:
        """Up to `limit` jobs, newest first (only those in `states`, when given)."""
        rows = self.conn.execute(
            "SELECT * FROM jobs ORDER BY id DESC LIMIT ?", (limit,)
        ).fetchall()
        jobs = [self._job(r) for r in rows]
        return [j for j in jobs if states is None or j.state in states]

    def counts(self) -> dict[str, int]:
        rows = self.conn.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        out = {s.value: 0 for s in JobState}
        out.update({r[0]: r[1] for r in rows})
        return out

    def find_same_content(
        self, sha256: str, exclude_id: int | None = None, overrides: dict[str, Any] | None = None
    ) -> Job | None:
        """An earlier job with this content and these setting overrides that finished or is still
        going (failed, cancelled and skipped ones don't count): the same data with other settings
        is another experiment."""
        rows = self.conn.execute(
            "SELECT * FROM jobs WHERE sha256 = ? AND state "
            "NOT IN (?, ?, ?) AND id != ? ORDER BY id",
            (
                sha256,
                JobState.FAILED.value,
                JobState.CANCELLED.value,
                JobState.SKIPPED.value,
                exclude_id or -1,
            ),
        ).fetchall()
        return next(
            (j for j in map(self._job, rows) if j.overrides_dict == (overrides or {})), None
        )

    def next_runnable(self, exclude: set[int] | frozenset[int] = frozenset()) -> Job | None:
        """The highest priority first; within one priority interrupted jobs (they hold
        checkpoints), then the oldest queued one. `exclude`: jobs the daemon has just started
        (their worker has not moved them on yet)."""
        rows = self.conn.execute(
            "SELECT * FROM jobs WHERE state IN (?, ?) ORDER BY "
            "priority DESC, CASE state WHEN ? THEN 0 ELSE 1 END, id",
            (JobState.INTERRUPTED.value, JobState.QUEUED.value, JobState.INTERRUPTED.value),
        ).fetchall()
        return next((self._job(r) for r in rows if r["id"] not in exclude), None)

    def transition(
        self,
        job_id: int,
        new: JobState,
        only_from: frozenset[JobState] | None = None,
        **fields: Any,
    ) -> Job:
        """Move a job to `new`, refusing moves the state machine does not allow. `only_from`: do
        nothing (and return the job as it is) unless it is in one of these states, checked in the
        same transaction, for moves two processes may race to make."""
        allowed_cols = {
            "file_path",
            "started_at",
            "finished_at",
            "dataset_dir",
            "run_dir",
            "adapter_dir",
            "error",
            "message",
            "worker_pid",
            "attempts",
            "devices",
            "request",
            "overrides",
            "settings_file",
        }
        bad = set(fields) - allowed_cols
        if bad:
            raise JobError(f"cannot set {sorted(bad)} on a job")
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            row = self.conn.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise JobError(f"no job {job_id} — run `trainctl queue` to see the jobs")
            old = JobState(row[0])
            if only_from is not None and old not in only_from:
                return self._job(
                    self.conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
                )
            if new != old and new not in _ALLOWED[old]:
                raise JobError(f"job {job_id} cannot go from {old.value} to {new.value}")
            now = time.time()
            fields["updated_at"] = now
            if new in TERMINAL:
                fields.setdefault("finished_at", now)
            cols = ", ".join(f"{k} = ?" for k in fields)
            self.conn.execute(
                f"UPDATE jobs SET state = ?, {cols} WHERE id = ?",
                (new.value, *fields.values(), job_id),
            )
        return self.get(job_id)

    def update(self, job_id: int, **fields: Any) -> None:
        """Set fields without a state change (paths, message)."""
        if not fields:
            return
        fields["updated_at"] = time.time()
        cols = ", ".join(f"{k} = ?" for k in fields)
        with self.conn:
            self.conn.execute(f"UPDATE jobs SET {cols} WHERE id = ?", (*fields.values(), job_id))

    def stopped(self, job_id: int, message: str) -> Job:
        """A running job's worker stopped before the end: INTERRUPTED (resumes on the next start),
        or PAUSED / CANCELLED when that is what was asked of it. Whoever notices first settles it
        (the worker, the daemon, the command that asked); later calls find it settled and change
        nothing."""
        job = self.get(job_id)
        new = STOP_REQUESTS.get(job.request or "", JobState.INTERRUPTED)
        if new != JobState.INTERRUPTED:
            message = STOPPED_AS_ASKED[new]
        return self.transition(
            job_id,
            new,
            only_from=ACTIVE,
            worker_pid=None,
            request=None,
            message=message,
            **({"error": "cancelled"} if new == JobState.CANCELLED else {}),
        )

    def recover_orphans(self) -> list[Job]:
        """Jobs left CURATING/TRAINING by a worker that is gone (daemon killed): mark them
        INTERRUPTED (or what was asked of them)."""
        out = []
        for job in self.newest(limit=10_000, states=set(ACTIVE)):
            if not pid_alive(job.worker_pid):
                out.append(self.stopped(job.id, "its worker stopped unexpectedly; will resume"))
        return out
