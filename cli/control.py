"""Queue control: `cancel`, `pause`, `resume`, `priority`, `retry`, `checkpoint`.

daemon/service/queue_control.py holds the transitions; this module only words them. Each works with
the daemon running or not."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cli.common import Commands, HomeOpt, console
from cli.settings_flags import COMMON, Overrides, settings_flags
from daemon.home import Home
from daemon.service import queue_control

commands = Commands()

JobArg = typer.Argument(..., help="The job's id (`trainctl queue`).")
Wait = typer.Option(600.0, "--timeout", help="Seconds to wait for a running job's checkpoint.")


def _say(line: str) -> None:
    console.print(line, highlight=False)


@commands.command("cancel")
def cancel_cmd(job: int = JobArg, home: HomeOpt = None, timeout: float = Wait) -> None:
    """Stop a job for good: a running one saves a checkpoint first (kept); its file goes to
    inbox/failed/."""
    h = Home.open(home, create=False)
    j = queue_control.cancel(h, job, wait=timeout, progress=_say)
    where = (
        "stays where it is"
        if Path(j.file_path).parent.parent != h.inbox
        else "goes to inbox/failed/"
    )
    _say(
        f"[yellow]job {j.id} cancelled[/yellow]: {j.message}; "
        f"its file {where}; `trainctl retry {j.id}` runs it again"
    )


@commands.command("pause")
def pause_cmd(job: int = JobArg, home: HomeOpt = None, timeout: float = Wait) -> None:
    """Checkpoint a running job now and hold it (its GPUs free for other jobs) until `trainctl
    resume JOB`."""
    h = Home.open(home, create=False)
    j = queue_control.pause(h, job, wait=timeout, progress=_say)
    _say(f"[yellow]job {j.id} paused[/yellow]: {j.message}")


@commands.command("resume")
def resume_cmd(job: int = JobArg, home: HomeOpt = None) -> None:
    """Put a paused job back in line; the daemon continues it from its checkpoint."""
    h = Home.open(home, create=False)
    j = queue_control.resume(h, job)
    _say(f"[green]job {j.id} back in line[/green] (priority {j.priority}): {j.message}")


@commands.command("priority")
def priority_cmd(
    job: int = JobArg,
    priority: int = typer.Argument(..., help="Higher starts first; default 0."),
    home: HomeOpt = None,
) -> None:
    """Set a waiting job's priority: higher starts first, equal priorities by arrival."""
    h = Home.open(home, create=False)
    j = queue_control.set_priority(h, job, priority)
    _say(f"job {j.id} ({j.state.value}): priority {j.priority}")


@commands.command("retry")
@settings_flags(*(name for name in COMMON if name not in ("nproc", "gpus_per_job")))
def retry_cmd(
    overrides: Overrides,
    job: int = JobArg,
    home: HomeOpt = None,
    fresh: bool = typer.Option(
        False,
        "--fresh",
        help="Start over: curate again and train from step 0 "
        "(the earlier run folder is kept as job-N.try-K).",
    ),
) -> None:
    """Queue a failed or cancelled job again: same file and settings (flags change some, and start
    it over)."""
    h = Home.open(home, create=False)
    ov = overrides
    if ov:
        from daemon.config import load_settings

        load_settings(h.settings_file, ov)  # report bad values before touching the job
    j = queue_control.retry(h, job, ov, fresh=fresh)
    _say(
        f"[green]job {j.id} queued again[/green]: "
        f"{j.message}; the daemon runs it when its turn comes"
    )


@commands.command("checkpoint")
def checkpoint_cmd(
    job: Optional[int] = typer.Argument(None, help="The training job (default: the only one)."),
    home: HomeOpt = None,
    timeout: float = Wait,
    no_wait: bool = typer.Option(False, "--no-wait", help="Ask and return at once."),
) -> None:
    """Make the training job save a complete checkpoint at the end of its current step, and keep
    training."""
    h = Home.open(home, create=False)
    j, step = queue_control.checkpoint(h, job, wait=0 if no_wait else timeout)
    if step is None:
        _say(f"asked job {j.id} for a checkpoint at the end of its current step")
    else:
        _say(f"[green]job {j.id} saved checkpoint-{step}[/green] (complete); it keeps training")
