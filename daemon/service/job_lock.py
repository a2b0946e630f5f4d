"""One writer per job: the worker of a job holds an exclusive `flock` on
data/runs/job-N/worker.lock.

After a kill -9 of the daemon alone, its worker lives on for a few seconds (the death signal makes
it save a checkpoint first). A daemon restarted at once could start a second worker on the same job
meanwhile; that one waits here until the first has let go (the kernel releases the lock however a
process ends), so two processes never write one run folder. The lock file says which pid holds it,
for the waiting line.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from daemon.errors import TrainingError

LOCK_NAME = "worker.lock"


def hold_job(
    run_dir: Path,
    job_id: int,
    echo: Callable[[str], None],
    wait_seconds: float = 900.0,
    poll: float = 0.2,
) -> IO[str]:
    """Take job `job_id`'s lock, waiting up to `wait_seconds` for a previous worker to let go; keep
    the returned file open for the worker's life. Raises TrainingError if the other worker never
    lets go."""
    run_dir.mkdir(parents=True, exist_ok=True)
    handle = open(run_dir / LOCK_NAME, "a+")
    deadline = time.monotonic() + wait_seconds
    said = False
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            holder = _holder(handle)
            if time.monotonic() > deadline:
                handle.close()
                raise TrainingError(
                    f"job {job_id}'s previous worker (pid {holder or 'unknown'}) "
                    f"still holds {run_dir / LOCK_NAME} after {wait_seconds:.0f}s — "
                    f"end it (kill {holder or 'PID'}), then `trainctl retry {job_id}`"
                ) from None
            if not said:
                echo(
                    f"job {job_id}: waiting for its previous worker (pid "
                    f"{holder or 'unknown'}) to finish saving before this one starts"
                )
                said = True
            time.sleep(poll)
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def _holder(handle: IO[str]) -> int | None:
    handle.seek(0)
    text = handle.read().strip()
    return int(text) if text.isdigit() else None
