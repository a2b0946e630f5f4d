"""A bench run's state machine and its run.json: fingerprint, progress, sessions.

results.jsonl is the truth about which prompts are answered; run.json says what the run is (its
fingerprint, so that a resume with another model, adapter, prompt file or sampling settings is
refused) and a progress summary for `bench list`, rewritten atomically every few seconds. Nothing
here imports torch.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from daemon.atomic import read_json, write_json_atomic
from daemon.errors import BenchError
from daemon.jobs import Job, JobQueue, JobState, pid_alive


class BenchState(str, Enum):
    CREATED = "created"  # run.json written, no prompt sent yet
    # a process is generating (if its pid is gone, it was killed: see `shown_state`)
    RUNNING = "running"
    STOPPED = "stopped"  # stopped by SIGINT/SIGTERM after flushing; `--resume` continues
    # the backend failed (model not loadable, engine crash); `--resume` retries
    FAILED = "failed"
    COMPLETED = "completed"  # every prompt has exactly one result (some may be error lines)


_ALLOWED: dict[BenchState, set[BenchState]] = {
    BenchState.CREATED: {BenchState.RUNNING, BenchState.FAILED},
    # RUNNING -> RUNNING: a killed run resumed (the run's lock proves its old process is gone).
    BenchState.RUNNING: {
        BenchState.RUNNING,
        BenchState.COMPLETED,
        BenchState.STOPPED,
        BenchState.FAILED,
    },
    BenchState.STOPPED: {BenchState.RUNNING, BenchState.FAILED},
    BenchState.FAILED: {BenchState.RUNNING, BenchState.FAILED},
    # A completed run is reopened only to retry its error lines (--retry-errors).
    BenchState.COMPLETED: {BenchState.RUNNING},
}

FINGERPRINT_KEYS = (
    "model",
    "adapter",
    "adapter_sha256",
    "prompts_sha256",
    "backend",
    "max_tokens",
    "temperature",
    "top_p",
    "seed",
)
_WHAT = {
    "model": "model",
    "adapter": "adapter",
    "adapter_sha256": "adapter weights",
    "prompts_sha256": "prompt file content",
    "backend": "backend",
    "max_tokens": "max_tokens",
    "temperature": "temperature",
    "top_p": "top_p",
    "seed": "seed",
}


@dataclass
class Progress:
    done: int = 0
    """Prompts with a result line (answers + errors)."""
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    active_seconds: float = 0.0
    """Wall time spent generating, summed over sessions (a resumed run does not count the time it
    was dead)."""


@dataclass
class RunInfo:
    name: str
    fingerprint: dict[str, Any]
    prompts_path: str
    total: int
    state: BenchState = BenchState.CREATED
    pid: int | None = None
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    sessions: int = 0
    message: str = ""
    job_id: int | None = None
    progress: Progress = field(default_factory=Progress)
    engine: dict[str, str] | None = None
    """The engine of the latest session: {"backend": "vllm" | "hf", "version": ...}."""
    limit: int | None = None
    """`--limit N`: the run answers the first N prompts (total is then at most N)."""

    def transition(self, new: BenchState, message: str | None = None) -> None:
        if new not in _ALLOWED[self.state]:
            raise BenchError(
                f"bench run {self.name!r} cannot go from {self.state.value} to {new.value}"
            )
        self.state = new
        if message is not None:
            self.message = message
        if new is BenchState.COMPLETED:
            self.finished_at = time.time()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["state"] = self.state.value
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunInfo:
        d = dict(d)
        d["state"] = BenchState(d["state"])
        d["progress"] = Progress(**d.get("progress", {}))
        return cls(**d)

    def save(self, path: Path) -> None:
        self.updated_at = time.time()
        write_json_atomic(path, self.to_dict())

    @property
    def shown_state(self) -> str:
        """The state for people: a `running` run whose process is gone was killed (resume it)."""
        if self.state is BenchState.RUNNING and not pid_alive(self.pid):
            return "killed"
        return self.state.value

    @property
    def output_tokens_per_s(self) -> float:
        p = self.progress
        return p.completion_tokens / p.active_seconds if p.active_seconds > 0 else 0.0


def load_run(run_dir: Path, name: str = "run.json") -> RunInfo | None:
    """The run's run.json (`name`: a data-parallel rank's own run.rank-R.json)."""
    doc = read_json(run_dir / name)
    return RunInfo.from_dict(doc) if doc else None


def results_files(run_dir: Path) -> list[Path]:
    """Every results file of a run: results.jsonl, and one results.rank-R.jsonl per data-parallel
    rank. Each prompt has its one result line in exactly one of them; together they are the run's
    results."""
    files = [run_dir / "results.jsonl"] if (run_dir / "results.jsonl").exists() else []
    return files + sorted(run_dir.glob("results.rank-*.jsonl"))


def shard_of(custom_id: str, ranks: int) -> int:
    """The data-parallel rank that answers `custom_id`: a hash, the same in every session and on
    every machine."""
    return int.from_bytes(hashlib.sha256(custom_id.encode()).digest()[:8], "big") % ranks


def fingerprint_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What differs between two fingerprints, in words."""
    changes = []
    for key in FINGERPRINT_KEYS:
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if key.endswith("sha256"):
            changes.append(f"{_WHAT[key]} changed (sha256 {str(a)[:12]}… → {str(b)[:12]}…)")
        else:
            changes.append(f"{_WHAT[key]} was {a!r}, now {b!r}")
    return changes


def list_runs(bench_root: Path) -> list[tuple[Path, RunInfo]]:
    runs = []
    if bench_root.exists():
        for d in sorted(bench_root.iterdir()):
            info = load_run(d) if d.is_dir() else None
            if info is not None:
                runs.append((d, info))
    return runs


def count_lines(path: Path) -> int:
    """Complete lines in a file (a torn last line is not counted): `bench list` shows the truth,
    cheaply."""
    n = 0
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                n += block.count(b"\n")
    except FileNotFoundError:
        return 0
    return n


def finished_job(home: Any, job_id: int, if_empty: str) -> tuple[Job, Path]:
    """A done training job with an adapter, and its held-out test split (`bench run --job`, `bench
    sweep`); `if_empty` ends the message when that split is empty."""
    if not home.jobs_db.exists():
        raise BenchError(
            "there are no training jobs yet — `trainctl train FILE` or the daemon makes one"
        )
    with JobQueue(home.jobs_db, readonly=True) as q:
        job = q.get(job_id)
    if job.state is not JobState.DONE or not job.adapter_dir or not job.dataset_dir:
        raise BenchError(
            f"job {job_id} is {job.state.value}, not done with an "
            "adapter — `trainctl queue` shows the finished jobs"
        )
    test = Path(job.dataset_dir) / "test.jsonl"
    if not test.exists() or test.stat().st_size == 0:
        raise BenchError(f"job {job_id}'s test split ({test}) is empty{if_empty}")
    return job, test
