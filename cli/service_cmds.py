"""Running trainctl as a service: `logs` (the daemon's or a job's output, `-f` to follow) and
`service install` (a systemd user unit). `daemon --detach` is in cli/work.py with the daemon
command."""

from __future__ import annotations

from typing import Optional

import typer

from cli.common import Commands, HomeOpt, command, console
from daemon.errors import TrainctlError
from daemon.home import Home
from daemon.jobs import ACTIVE, JobQueue, pid_alive
from daemon.service import instance_lock
from daemon.service.background import follow, install_unit, systemd_unit, tail, unit_name

commands = Commands()
service_app = typer.Typer(help="Run the daemon under systemd.", no_args_is_help=True)


@commands.command("logs")
def logs_cmd(
    job: Optional[int] = typer.Argument(
        None, help="A job's id: its worker's output (default: the daemon's log)."
    ),
    home: HomeOpt = None,
    follow_: bool = typer.Option(
        False,
        "--follow",
        "-f",
        help="Keep printing what is added (until the job or the daemon ends, or Ctrl-C).",
    ),
    lines: int = typer.Option(
        40, "--lines", "-n", help="How many of the last lines to print first."
    ),
) -> None:
    """The daemon's log (data/logs/daemon.log), or one job's output (data/logs/job-N.log)."""
    h = Home.open(home, create=False)
    if job is None:
        path = h.daemon_log
        if not path.exists():
            raise TrainctlError(
                f"no daemon log yet in {path} — start one with `trainctl daemon` (or --detach)"
            )

        def going() -> bool:
            return instance_lock.held(h.status_dir)
    else:
        path = h.job_log(job)
        with JobQueue(h.jobs_db, readonly=True) as q:
            j = q.get(job)
        if not path.exists():
            raise TrainctlError(
                f"no output of job {job} yet (it is {j.state.value}) — the daemon writes {path} "
                "when it starts the job; a foreground `trainctl train` prints to its terminal"
            )

        def going() -> bool:
            with JobQueue(h.jobs_db, readonly=True) as q:
                now = q.get(job)
            return now.state in ACTIVE and pid_alive(now.worker_pid) or now.state.value == "queued"

    if lines > 0:
        text = tail(path, lines)
        if text:
            console.print(text, markup=False, highlight=False, soft_wrap=True)
    if not follow_:
        return
    try:
        for chunk in follow(path, going):
            console.out(chunk, end="", highlight=False)
    except KeyboardInterrupt:
        pass


@command(service_app, "install")
def install_cmd(
    home: HomeOpt = None,
    print_: bool = typer.Option(False, "--print", help="Print the unit instead of writing it."),
    force: bool = typer.Option(False, "--force", help="Replace a unit of the same name."),
) -> None:
    """Write a systemd user unit that runs the daemon on this home and restarts it if it fails."""
    h = Home.open(home, create=False)
    if print_:
        console.out(systemd_unit(h), end="")
        return
    path = install_unit(h, force=force)
    name = unit_name(h)
    console.print(f"[green]wrote {path}[/green]", highlight=False)
    console.print(
        "start it now and at every login:  systemctl --user "
        f"daemon-reload && systemctl --user enable --now {name}\n"
        "keep it running after you log out: loginctl enable-linger $USER\n"
        f"its log: trainctl logs -f   (or journalctl --user -u {name})",
        highlight=False,
    )
