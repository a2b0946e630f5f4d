"""`trainctl queue`: every job with its state, file, times and message; `--wide` adds its settings,
devices, dataset and adapter. Fits 80 columns without folding a word, as `docker ps` and `kubectl
get` do."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from cli.common import Commands, HomeOpt, JsonOpt, console
from cli.formatting import clock, dash, duration
from daemon.devices import Placement
from daemon.home import Home
from daemon.jobs import ACTIVE, Job, JobQueue, pid_alive
from daemon.service.file_settings import describe

commands = Commands()


WIDE_FROM = 160
"""Terminal columns from which the queue shows every column by itself (as `--wide` does)."""
COLOURS = {
    "done": "green",
    "failed": "red",
    "training": "cyan",
    "curating": "cyan",
    "interrupted": "yellow",
    "paused": "yellow",
    "cancelled": "red",
    "skipped": "dim",
    "queued": "white",
}


@commands.command("queue")
def queue(
    home: HomeOpt = None,
    json_out: JsonOpt = False,
    limit: int = typer.Option(50, help="Show at most this many jobs, newest first."),
    wide: bool = typer.Option(
        False,
        "--wide",
        "-w",
        help="Every column (settings, devices, dataset and "
        "adapter paths, whole messages); the default on terminals of 160+ columns.",
    ),
) -> None:
    """Jobs with state, file, times and messages; `--wide` adds settings, devices, dataset and
    adapter."""
    h = Home.open(home, create=False)
    if not h.jobs_db.exists():
        if json_out:
            console.print("[]")
        else:
            console.print(
                "No jobs yet — drop a .jsonl file into inbox/ and run `trainctl daemon`."
            )
        return
    with JobQueue(h.jobs_db, readonly=True) as q:
        jobs = q.newest(limit=limit)
    if json_out:
        console.print_json(json.dumps([j.to_dict() for j in jobs], default=str))
        return
    if not jobs:
        console.print("No jobs yet — drop a .jsonl file into inbox/ and run `trainctl daemon`.")
        return
    if wide or console.width >= WIDE_FROM:
        console.print(_wide_table(h, jobs))
        return
    # Narrow (as `docker ps`): one line a job, the short columns whole and the rest cut with …;
    # what was cut from an error or a stopped worker is said in full under the table.
    rows: list[tuple[str, str, str, str, str, str]] = []
    notes: list[str] = []
    for j in jobs:
        state, stopped = _state(j)
        if stopped:
            notes.append(f"{j.id}: {state}")
            state = f"{j.state.value} (stopped)"
        if j.error:
            notes.append(f"{j.id}: [red]{escape(j.error)}[/red]")
        note = " · ".join(x for x in (_own_settings(j), j.error or j.message or "") if x) or "—"
        rows.append(
            (str(j.id), state, j.file_name, _short_clock(j.created_at), duration(_took(j)), note)
        )
    heads = ("ID", "STATE", "FILE", "CREATED", "TOOK", "NOTE")
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(heads[:5])]
    widths[2] = min(widths[2], 24)
    # The last column takes what is left (rich would squeeze the short columns away instead)
    room = max(len(heads[5]), console.width - sum(widths) - 2 * len(heads))
    t = Table(title=f"jobs in {h.root}", box=None, padding=(0, 1), header_style="bold")
    for head, width in zip(heads, [*widths, room]):
        t.add_column(
            head,
            no_wrap=True,
            overflow="ellipsis",
            width=width,
            justify="right" if head == "ID" else "left",
        )
    for (jid, state, file, created, took, note), j in zip(rows, jobs):
        c = COLOURS.get(j.state.value, "white")
        t.add_row(jid, f"[{c}]{escape(state)}[/{c}]", escape(file), created, took, escape(note))
    console.print(t)
    for line in notes:
        console.print(line, highlight=False)
    if jobs:
        console.print(
            "[dim]`trainctl queue --wide` shows settings, devices, dataset and adapter paths[/dim]"
        )


def _state(j: Job) -> tuple[str, bool]:
    """The state as said, and whether its worker is gone: CURATING/TRAINING whose worker died (the
    daemon killed, not restarted yet) say so, not "training"."""
    if j.state in ACTIVE and not pid_alive(j.worker_pid):
        return f"{j.state.value}: stopped (daemon not running)", True
    return j.state.value, False


def _own_settings(j: Job) -> str:
    """What this job sets for itself: its priority, flags and a per-file settings file."""
    return " ".join(
        x
        for x in (
            f"priority={j.priority}" if j.priority else "",
            describe(j.overrides_dict),
            f"({Path(j.settings_file).name})" if j.settings_file else "",
        )
        if x
    )


def _took(j: Job) -> float | None:
    return (j.finished_at or 0) - (j.started_at or 0) if j.finished_at and j.started_at else None


def _short_clock(ts: float | None) -> str:
    """`19:02` today, `12-04 19:02` another day of this year, the date before that."""
    if not ts:
        return "—"
    now, then = time.localtime(), time.localtime(ts)
    if then[:3] == now[:3]:
        return time.strftime("%H:%M", then)
    return time.strftime("%m-%d %H:%M" if then.tm_year == now.tm_year else "%Y-%m-%d", then)


def _wide_table(h: Home, jobs: list[Job]) -> Table:
    t = Table(title=f"jobs in {h.root}")
    for col in (
        "id",
        "state",
        "file",
        "settings",
        "created",
        "took",
        "devices",
        "dataset / adapter",
        "message / error",
    ):
        # short values kept whole on a narrow terminal; the rest wraps
        t.add_column(col, overflow="fold", no_wrap=col in ("id", "took"))
    for j in jobs:
        state, _ = _state(j)
        c = COLOURS.get(j.state.value, "white")
        where = "\n".join(_in_home(h, x) for x in (j.dataset_dir, j.adapter_dir) if x) or "—"
        msg = f"[red]{escape(j.error)}[/red]" if j.error else escape(dash(j.message))
        devices = Placement.from_dict(j.devices_dict).describe() if j.devices_dict else "—"
        t.add_row(
            str(j.id),
            f"[{c}]{state}[/{c}]",
            j.file_name,
            _own_settings(j) or "—",
            clock(j.created_at),
            duration(_took(j)),
            devices,
            where,
            msg,
        )
    return t


def _in_home(h: Home, path: str) -> str:
    """A path relative to the home folder (named in the title) when it lies inside it."""
    try:
        return str(Path(path).relative_to(h.root))
    except ValueError:
        return path
