"""What a person asks of a job: cancel, pause, resume, priority, retry, checkpoint.

Each is a guarded transition of the job state machine (daemon/jobs.py), refused with a line saying
why and what to do instead. They work with the daemon running or not:
  * a job that is not running changes state here and now (the daemon, running or started later,
    sees the new state);
  * a running job (the daemon's child, or a foreground `trainctl train`) is asked: `pause` and
    `cancel` record the request in the job's row and send its worker SIGTERM; it saves a checkpoint
    at the end of the step and ends PAUSED or CANCELLED instead of INTERRUPTED. A worker that dies
    before recording it (killed while curating) is settled by whoever notices first: the daemon,
    the next daemon start, or the command itself.
  * `checkpoint` leaves a request file the training loop answers at the end of its step
    (daemon/training/run_control.py).
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from daemon.atomic import write_text_atomic
from daemon.errors import JobError
from daemon.home import Home
from daemon.jobs import ACTIVE, STOPPED_AS_ASKED, TERMINAL, Job, JobQueue, JobState, pid_alive
from daemon.runs.checkpoints import (
    CHECKPOINT_REQUEST,
    complete_checkpoint_steps,
    job_checkpoints_dir,
)
from daemon.service.file_settings import merge
from daemon.service.inbox_files import file_away, take_back


def _running(job: Job) -> bool:
    return job.state in ACTIVE and pid_alive(job.worker_pid)


def _ended(job: Job) -> str:
    """`job 3 is done` plus what a person may want instead, for refusals."""
    hint = {
        JobState.DONE: f" (its adapter: {job.adapter_dir}; to train the file again: `trainctl "
        "train FILE --force`)",
        JobState.FAILED: f" — `trainctl retry {job.id}` runs it again",
        JobState.CANCELLED: f" — `trainctl retry {job.id}` runs it again",
        JobState.SKIPPED: " (same content as an earlier job; `trainctl train FILE --force` trains "
        "it)",
    }
    return f"job {job.id} is {job.state.value}{hint.get(job.state, '')}"


def _ask_to_stop(
    home: Home, q: JobQueue, job: Job, request: str, wait: float, progress: Callable[[str], None]
) -> Job:
    """Record `request` (pause/cancel) on a running job and send its worker SIGTERM; wait up to
    `wait` seconds for it to save its checkpoint and stop. A worker that dies without settling the
    job is settled here."""
    q.update(job.id, request=request)
    try:
        os.kill(job.worker_pid or 0, signal.SIGTERM)
    except ProcessLookupError:
        pass
    progress(
        f"asked job {job.id} to {request}: it saves a checkpoint at the end of its current step"
    )
    deadline = time.time() + wait
    while time.time() < deadline:
        now = q.get(job.id)
        if now.state not in ACTIVE:
            return now
        if not pid_alive(now.worker_pid):
            break
        time.sleep(0.2)
    now = q.get(job.id)
    if now.state in ACTIVE and not pid_alive(now.worker_pid):
        now = q.stopped(job.id, "its worker stopped")
        file_away(home, q, now)
        return q.get(job.id)
    if now.state in ACTIVE:
        raise JobError(
            f"job {job.id} is still saving after {wait:.0f}s; it "
            f"will {request} when it has — check `trainctl queue`"
        )
    return now


def cancel(
    home: Home, job_id: int, wait: float = 600, progress: Callable[[str], None] = print
) -> Job:
    """Stop a job for good: a running one saves its checkpoint first; its file goes to
    inbox/failed/."""
    with JobQueue(home.jobs_db) as q:
        job = q.get(job_id)
        if job.state in TERMINAL:
            raise JobError(f"{_ended(job)} — nothing to cancel")
        if _running(job):
            return _ask_to_stop(home, q, job, "cancel", wait, progress)
        if job.state in ACTIVE:  # its worker is gone (daemon killed): settle it as asked
            q.update(job.id, request="cancel")
            job = q.stopped(job.id, "cancelled")
        else:
            job = q.transition(
                job.id,
                JobState.CANCELLED,
                error="cancelled",
                request=None,
                message="cancelled" + ("; its checkpoints are kept" if job.run_dir else ""),
            )
        file_away(home, q, job)
        return q.get(job.id)


def pause(
    home: Home, job_id: int, wait: float = 600, progress: Callable[[str], None] = print
) -> Job:
    """Checkpoint a running (or interrupted) job and hold it, its devices free, until `trainctl
    resume`."""
    with JobQueue(home.jobs_db) as q:
        job = q.get(job_id)
        if job.state in TERMINAL:
            raise JobError(f"{_ended(job)} — nothing to pause")
        if job.state == JobState.PAUSED:
            raise JobError(
                f"job {job.id} is already paused — `trainctl resume {job.id}` continues it"
            )
        if job.state == JobState.QUEUED:
            raise JobError(
                f"job {job.id} is queued and has not started — nothing "
                f"to pause; `trainctl priority {job.id} -1` lets other "
                f"jobs go first, `trainctl cancel {job.id}` drops it"
            )
        if _running(job):
            return _ask_to_stop(home, q, job, "pause", wait, progress)
        if job.state in ACTIVE:  # its worker is gone (daemon killed): settle it as asked
            q.update(job.id, request="pause")
            return q.stopped(job.id, "paused")
        return q.transition(job.id, JobState.PAUSED, message=STOPPED_AS_ASKED[JobState.PAUSED])


def resume(home: Home, job_id: int) -> Job:
    """A paused job back in line: the daemon continues it from its checkpoint."""
    with JobQueue(home.jobs_db) as q:
        job = q.get(job_id)
        if job.state != JobState.PAUSED:
            if job.state in TERMINAL:
                raise JobError(f"{_ended(job)} — only a paused job can be resumed")
            raise JobError(
                f"job {job.id} is {job.state.value}, not paused — "
                + (
                    "it is running"
                    if job.state in ACTIVE
                    else "the daemon runs it when its turn comes"
                )
            )
        return q.transition(
            job.id,
            JobState.INTERRUPTED,
            message="resumed; continues from its checkpoint when the daemon starts it",
        )


def set_priority(home: Home, job_id: int, priority: int) -> Job:
    """Higher starts first (among jobs still waiting); equal priorities start by arrival."""
    with JobQueue(home.jobs_db) as q:
        job = q.get(job_id)
        if job.state in TERMINAL:
            raise JobError(f"{_ended(job)} — priority orders jobs that are still to run")
        q.update(job.id, priority=priority)
        return q.get(job.id)


def retry(
    home: Home,
    job_id: int,
    overrides: dict[str, dict[str, Any]] | None = None,
    fresh: bool = False,
) -> Job:
    """A failed or cancelled job queued again, on the same file with the same settings (`overrides`
    changes some).

    With the same settings, a job that had started training continues from its newest complete
    checkpoint on its curated dataset. New settings (or `fresh`) start over: the file is curated
    again and the earlier run folder is kept beside the new one as job-N.try-K."""
    with JobQueue(home.jobs_db) as q:
        job = q.get(job_id)
        if job.state not in (JobState.FAILED, JobState.CANCELLED):
            if job.state in TERMINAL:
                raise JobError(f"{_ended(job)} — retry runs a failed or cancelled job again")
            raise JobError(
                f"job {job.id} is {job.state.value} — retry runs a failed or cancelled job again"
            )
        if not Path(job.file_path).exists():
            raise JobError(
                f"job {job.id}'s file {job.file_path} is gone — drop the file into inbox/ again"
            )
        run_dir = home.run_dir(job.id)
        trained = (run_dir / "config.json").exists()
        fields: dict[str, Any] = {
            "error": None,
            "request": None,
            "worker_pid": None,
            "finished_at": None,
            "message": "retried",
        }
        if overrides or fresh or not trained:
            if run_dir.exists():
                n = 1
                while run_dir.with_name(f"{run_dir.name}.try-{n}").exists():
                    n += 1
                os.rename(run_dir, run_dir.with_name(f"{run_dir.name}.try-{n}"))
                fields["message"] = (
                    f"retried from the start (the earlier run is in {run_dir.name}.try-{n})"
                )
            fields.update(dataset_dir=None, run_dir=None, adapter_dir=None)
        else:
            fields["message"] = "retried; continues from its newest complete checkpoint"
        if overrides:
            fields["overrides"] = json.dumps(merge(job.overrides_dict, overrides))
        job = q.transition(job.id, JobState.QUEUED, **fields)
        take_back(home, q, job)
        return q.get(job.id)


def running_job(home: Home, job_id: int | None) -> Job:
    """The training job `checkpoint` means: `job_id`, or the only one training."""
    with JobQueue(home.jobs_db, readonly=True) as q:
        if job_id is not None:
            job = q.get(job_id)
            if not (job.state == JobState.TRAINING and pid_alive(job.worker_pid)):
                raise JobError(
                    f"job {job.id} is {job.state.value}, not training "
                    "— only a training job saves a checkpoint"
                )
            return job
        training = [
            j
            for j in q.newest(limit=10_000, states={JobState.TRAINING})
            if pid_alive(j.worker_pid)
        ]
    if not training:
        raise JobError("no job is training — `trainctl queue` shows the jobs")
    if len(training) > 1:
        raise JobError(
            f"{len(training)} jobs are training ({', '.join(str(j.id) for j in training)}) "
            "— name one: `trainctl checkpoint JOB`"
        )
    return training[0]


def checkpoint(home: Home, job_id: int | None = None, wait: float = 600) -> tuple[Job, int | None]:
    """Ask the training job for a complete checkpoint now; returns (job, its step) once saved, or
    (job, None) without waiting (`wait` = 0)."""
    job = running_job(home, job_id)
    run_dir, ckpts = home.run_dir(job.id), job_checkpoints_dir(home, job.id)
    before = set(complete_checkpoint_steps(ckpts))
    write_text_atomic(run_dir / CHECKPOINT_REQUEST, f"{time.time()}\n")
    deadline = time.time() + wait
    with JobQueue(home.jobs_db, readonly=True) as q:
        while time.time() < deadline:
            if not (run_dir / CHECKPOINT_REQUEST).exists():
                new = sorted(set(complete_checkpoint_steps(ckpts)) - before)
                if new:
                    return job, new[-1]
            now = q.get(job.id)
            if now.state != JobState.TRAINING:
                (run_dir / CHECKPOINT_REQUEST).unlink(missing_ok=True)
                raise JobError(
                    f"job {job.id} stopped training ({now.state.value}) before saving: "
                    + (now.message or "")
                )
            time.sleep(0.2)
    if wait:
        raise JobError(
            f"job {job.id} has not saved within {wait:.0f}s; "
            "it will at the end of its current step"
        )
    return job, None
