"""`trainctl queue`: every job with its state, file, times, dataset and adapter, and the error if it failed."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from cli.common import Commands, HomeOpt, JsonOpt, console
from cli.formatting import clock, dash, duration
from daemon.devices import Placement
from daemon.home import Home
from daemon.jobs import ACTIVE, JobQueue, pid_alive
from daemon.service.file_settings import describe

commands = Commands()


@commands.command("queue")
def queue(home: HomeOpt = None, json_out: JsonOpt = False,
          limit: int = typer.Option(50, help="Show at most this many jobs, newest first.")) -> None:
    """Jobs with state, file, times, dataset and adapter paths, and the error of failed ones."""
    h = Home.open(home, create=False)
    if not h.jobs_db.exists():
        if json_out:
            console.print("[]")
        else:
            console.print("No jobs yet — drop a .jsonl file into inbox/ and run `trainctl daemon`.")
        return
    with JobQueue(h.jobs_db, readonly=True) as q:
        jobs = q.newest(limit=limit)
    if json_out:
        console.print_json(json.dumps([j.to_dict() for j in jobs], default=str))
        return
    t = Table(title=f"jobs in {h.root}")
    for col in ("id", "state", "file", "settings", "created", "took", "devices", "dataset / adapter",
                "message / error"):
        # short values kept whole on a narrow terminal; the rest wraps
        t.add_column(col, overflow="fold", no_wrap=col in ("id", "took"))
    colours = {"done": "green", "failed": "red", "training": "cyan", "curating": "cyan", "interrupted": "yellow",
               "paused": "yellow", "cancelled": "red", "skipped": "dim", "queued": "white"}
    for j in jobs:
        # CURATING/TRAINING whose worker is gone (the daemon killed, not restarted yet): say so, not "training"
        state = j.state.value
        if j.state in ACTIVE and not pid_alive(j.worker_pid):
            state = f"{state}: stopped (daemon not running)"
        took = (j.finished_at or 0) - (j.started_at or 0) if j.finished_at and j.started_at else None
        c = colours.get(j.state.value, "white")
        where = "\n".join(_in_home(h, x) for x in (j.dataset_dir, j.adapter_dir) if x) or "—"
        msg = f"[red]{j.error}[/red]" if j.error else dash(j.message)
        devices = Placement.from_dict(j.devices_dict).describe() if j.devices_dict else "—"
        own = " ".join(x for x in (f"priority={j.priority}" if j.priority else "", describe(j.overrides_dict),
                                   f"({Path(j.settings_file).name})" if j.settings_file else "") if x)
        t.add_row(str(j.id), f"[{c}]{state}[/{c}]", j.file_name, own or "—", clock(j.created_at),
                  duration(took), devices, where, msg)
    console.print(t)


def _in_home(h: Home, path: str) -> str:
    """A path relative to the home folder (named in the title) when it lies inside it."""
    try:
        return str(Path(path).relative_to(h.root))
    except ValueError:
        return path
