"""Where a job's file lives, with the settings file that came with it (x.toml beside x.jsonl):
inbox/processing/ while the job waits or runs, inbox/done/ or inbox/failed/ (with an .error.txt)
once it ends, and back in processing/ when `trainctl retry` queues it again. The daemon and the
queue commands both move files through here.

Every move is one rename (atomic on one file system) followed by the row's new path: a kill in
between leaves the file where a person looks for it, at worst with the queue still naming its old
place.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

from daemon.atomic import write_text_atomic
from daemon.home import Home
from daemon.jobs import TERMINAL, Job, JobQueue, JobState

_FAILED_STATES = (JobState.FAILED, JobState.CANCELLED)
REFUSED = "refused, not read"
"""The queue message of a job whose file was refused unread (see `refusal`)."""


def sidecar_of(data_file: Path) -> Path:
    """x.jsonl -> x.toml: the per-file settings a person drops beside a data file."""
    return data_file.with_suffix(".toml")


def refusal(path: Path) -> str | None:
    """Why an inbox entry must not be read at all, or None for a regular file of its own.

    Only files dropped into the inbox themselves are read: a symbolic link, a hard link (the same
    file under another name, possibly outside the home), a FIFO, a device or a socket would let
    whoever can write to the inbox make the daemon read something else (`ln -s /etc/passwd
    inbox/x.jsonl`), or hang on it. Decided from `lstat`, without opening the entry."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    mode = st.st_mode
    kind = (
        "a symbolic link"
        if stat.S_ISLNK(mode)
        else "a named pipe (FIFO)"
        if stat.S_ISFIFO(mode)
        else "a device"
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
        else "a socket"
        if stat.S_ISSOCK(mode)
        else "a folder"
        if stat.S_ISDIR(mode)
        else None
    )
    if kind is not None:
        return (
            f"{path.name} is {kind}, not a regular file: trainctl reads only files copied "
            "into inbox/ — copy the data itself in (cp, not ln -s) and drop it again"
        )
    if st.st_nlink > 1:
        return (
            f"{path.name} is a hard link (the same file also has another "
            "name, maybe outside the inbox): trainctl reads only files "
            "copied into inbox/ — copy the data itself in (cp, not ln)"
        )
    return None


def processing_name(file_name: str) -> str:
    """The name a file takes in processing/: prefixed with when it was taken, so equal names never
    collide."""
    return f"{time.strftime('%Y%m%d%H%M%S')}-{file_name}"


def _move_with_sidecar(home: Home, q: JobQueue, job: Job, dest: Path) -> Path:
    os.rename(job.file_path, dest)
    fields: dict[str, str] = {"file_path": str(dest)}
    if job.settings_file and os.path.lexists(job.settings_file):
        side = sidecar_of(dest)
        os.rename(job.settings_file, side)
        fields["settings_file"] = str(side)
    q.update(job.id, **fields)
    return dest


def file_away(home: Home, q: JobQueue, job: Job) -> None:
    """Move an ended job's file out of processing/: done/ for DONE and SKIPPED; failed/ with an
    .error.txt for FAILED and CANCELLED. A file elsewhere (a foreground `trainctl train` of the
    user's own file) stays put."""
    src = Path(job.file_path)
    # lexists: a refused symbolic link is filed away too, even when what it points at is gone
    if (
        job.state not in TERMINAL
        or not os.path.lexists(src)
        or src.parent != home.inbox_processing
    ):
        return  # a paused or interrupted job keeps its file in processing/
    failed = job.state in _FAILED_STATES
    try:
        dest = _move_with_sidecar(
            home,
            q,
            job,
            home.unique_path(home.inbox_failed if failed else home.inbox_done, job.file_name),
        )
    except FileNotFoundError:
        return  # moved a moment ago by the other party (the daemon, or `trainctl cancel`)
    if failed:
        write_text_atomic(dest.with_name(dest.name + ".error.txt"), error_text(job))


def take_back(home: Home, q: JobQueue, job: Job) -> None:
    """A retried job's file goes back to processing/ (from failed/ or done/), its .error.txt
    removed."""
    src = Path(job.file_path)
    if src.parent not in (home.inbox_failed, home.inbox_done):
        return  # a foreground job's own file, or already in processing/
    _move_with_sidecar(
        home, q, job, home.unique_path(home.inbox_processing, processing_name(job.file_name))
    )
    src.with_name(src.name + ".error.txt").unlink(missing_ok=True)


def error_text(job: Job) -> str:
    """The .error.txt beside a file in inbox/failed/: what happened and what to do."""
    if job.state == JobState.CANCELLED:
        parts = [
            f"trainctl stopped {job.file_name} (job {job.id}): "
            f"it was cancelled (`trainctl cancel {job.id}`).",
            "",
            "Its checkpoints are kept" + (f" in {job.run_dir}" if job.run_dir else "") + ".",
            "",
            f"`trainctl retry {job.id}` queues it again.",
        ]
        return "\n".join(parts) + "\n"
    if job.message == REFUSED:
        parts = [f"trainctl did not read {job.file_name} (job {job.id}).", "", f"Why: {job.error}"]
        return "\n".join(parts) + "\n"
    bad_input = job.message in ("bad input", "bad settings")
    advice = (
        "Fix the file (see the reason above) and drop it into inbox/ again."
        if bad_input
        else "The file itself was read; the training job failed. Fix the cause above, then run "
        f"`trainctl retry {job.id}` (or move the file back into inbox/, "
        "or run `trainctl train FILE` to see the error in the foreground)."
    )
    parts = [
        f"trainctl could not process {job.file_name} (job {job.id}).",
        "",
        f"Why: {job.error}",
        "",
        advice,
    ]
    if job.dataset_dir:
        parts += ["", f"Rejected records and their reasons: trainctl rejected {job.dataset_dir}"]
    return "\n".join(parts) + "\n"
