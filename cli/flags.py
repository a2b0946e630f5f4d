"""`trainctl flags`: flagged examples, one per (job, example): the current model's mistakes (filter
by job, reason or text, sort, statistics, golden beside model output), `flags add`, `flags resolve
ID`, `flags reopen ID`, `flags export OUT [--to-inbox]` (each example once), `flags trend` (per
job). Reads and writes JSON only."""

from __future__ import annotations

import json
from typing import Optional

import typer
from rich.table import Table

from cli.common import HomeOpt, JsonOpt, command, console, reports_errors
from cli.formatting import bar, clip, dash
from daemon.atomic import write_jsonl_atomic
from daemon.chat.answers import readable
from daemon.errors import TrainctlError
from daemon.home import Home
from daemon.runs.flag_store import REASONS, SORTS, FlagStore, one_per_example, to_training_record

flags_app = typer.Typer(
    help="Flagged examples: what the model gets wrong at each evaluation.",
    invoke_without_command=True,
    no_args_is_help=False,
)


def _store(home: str | None, create: bool = False) -> tuple[Home, FlagStore]:
    h = Home.open(home, create=create)
    return h, FlagStore(h.flagged_file)


@flags_app.callback()
@reports_errors
def flags_list(
    ctx: typer.Context,
    reason: Optional[str] = typer.Option(
        None, "--reason", help=f"Only one reason: {', '.join(REASONS)}."
    ),
    sort: str = typer.Option("recent", "--sort", help=f"{', '.join(SORTS)}."),
    limit: int = typer.Option(20, "--limit", help="Show at most N (0 = all)."),
    stats: bool = typer.Option(False, "--stats", help="Only the statistics."),
    all_: bool = typer.Option(False, "--all", help="Include resolved flags."),
    job: Optional[int] = typer.Option(None, "--job", help="Only this job's flags."),
    search: Optional[str] = typer.Option(
        None,
        "--search",
        help="Only flags whose prompt, golden answer, output or notes contain TEXT (any case).",
    ),
    full: bool = typer.Option(
        False, "--full", help="Show prompt, golden answer and output whole."
    ),
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Flagged examples, newest first: reason, step, loss, golden answer beside the model's
    output."""
    if ctx.invoked_subcommand is not None:
        return
    _, store = _store(home)
    flags = store.load()
    rows = store.query(
        reason,
        sort.replace("-", "_"),
        limit or None,
        include_resolved=all_,
        flags=flags,
        job=job,
        search=search,
    )
    st = store.stats(flags, job=job)
    if json_out:
        console.print_json(json.dumps(st if stats else {"stats": st, "flags": rows}))
        return
    whose = f" of job {job}" if job is not None else ""
    console.print(
        f"[bold]flags[/bold]{whose}: {st['open']} open, {st['resolved']} resolved; by reason: "
        + (", ".join(f"{k} {v}" for k, v in st["by_reason"].items()) or "none")
        + f"; average loss {dash(st['avg_loss'], '{:.3f}')}"
    )
    if stats:
        return
    if not rows:
        console.print(
            "No flags"
            + (f" with reason {reason!r}" if reason else "")
            + (f" containing {search!r}" if search else "")
            + ". They appear after the fixed "
            "evaluations of a training job (or `trainctl flags add`)."
        )
        return
    shortened = False

    def cut(text: str, size: int = 60) -> str:
        """The text whole with --full, else clipped with a …; notes whether anything was
        clipped."""
        nonlocal shortened
        if full:
            return text
        shown = clip(text, size)
        shortened = shortened or shown != " ".join(str(text).split())
        return shown

    t = Table()
    for col in (
        "id",
        "job",
        "reason",
        "step",
        "loss",
        "file",
        "prompt",
        "golden",
        "model output",
        "time",
        "notes",
    ):
        t.add_column(col, overflow="fold")
    for f in rows:
        colour = "green" if f.get("matches") else "red"
        output = readable(f.get("output") or "") or (
            "(scored only)" if f.get("scored_only") else ""
        )
        t.add_row(
            str(f["id"]) + (" ✓" if f.get("resolved") else ""),
            dash(f.get("job")),
            f["reason"],
            dash(f.get("step")),
            dash(f.get("loss"), "{:.3f}"),
            dash(f.get("file")),
            cut(f.get("prompt", "")),
            cut(readable(f.get("golden", ""))),
            f"[{colour}]{cut(output)}[/{colour}]",
            (f.get("timestamp") or "")[:19],
            cut(f.get("notes") or f.get("change") or "", 40),
        )
    console.print(t)
    if shortened:
        console.print("… marks cut text: --full shows it whole")


@command(flags_app, "add")
def flags_add(
    prompt: str = typer.Option(..., "--prompt", help="The question or prompt."),
    golden: str = typer.Option(..., "--golden", help="The right answer."),
    output: str = typer.Option("", "--output", help="What the model said."),
    notes: str = typer.Option("", "--notes"),
    home: HomeOpt = None,
) -> None:
    """Add a manual flag."""
    _, store = _store(home, create=True)
    (fid,) = store.add(
        [
            {
                "reason": "manual",
                "prompt": prompt,
                "golden": golden,
                "output": output,
                "notes": notes,
                "matches": output.strip() == golden.strip() if output else None,
            }
        ]
    )
    console.print(f"flag {fid} added")


@command(flags_app, "resolve")
def flags_resolve(
    flag_id: int = typer.Argument(..., metavar="ID"),
    notes: str = typer.Option("", "--notes"),
    home: HomeOpt = None,
) -> None:
    """Mark a flag resolved (it stays in the file; `flags --all` shows it)."""
    _, store = _store(home)
    store.resolve(flag_id, notes or None)
    console.print(f"flag {flag_id} resolved")


@command(flags_app, "reopen")
def flags_reopen(
    flag_id: int = typer.Argument(..., metavar="ID"),
    notes: str = typer.Option("", "--notes"),
    home: HomeOpt = None,
) -> None:
    """Open a resolved flag again (the next evaluations may resolve it again when the model gets it
    right)."""
    _, store = _store(home)
    store.reopen(flag_id, notes or None)
    console.print(f"flag {flag_id} open again")


@command(flags_app, "export")
def flags_export(
    out: Optional[str] = typer.Argument(
        None,
        metavar="OUT",
        help="JSONL file to write (relative to the home folder; it must stay inside it).",
    ),
    to_inbox: bool = typer.Option(
        False, "--to-inbox", help="Write it into inbox/ to re-train now."
    ),
    reason: Optional[str] = typer.Option(None, "--reason"),
    job: Optional[int] = typer.Option(None, "--job", help="Only this job's flags."),
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Open flags as training records (prompt + golden answer), each example once, to a file or the
    inbox."""
    h, store = _store(home)
    if (out is None) == (not to_inbox):
        raise TrainctlError(
            "give OUT or --to-inbox (one of them) — e.g. `trainctl flags export fixes.jsonl`"
        )
    rows = one_per_example(store.query(reason, "oldest", job=job))
    if not rows:
        raise TrainctlError(
            "no open flag to export — `trainctl flags --all` lists resolved ones too"
        )
    dest = h.unique_path(h.inbox, "flagged_examples.jsonl") if to_inbox else h.inside(out or "")
    # Atomic (hidden temp name, then rename): the daemon never picks up half a file.
    write_jsonl_atomic(dest, (to_training_record(f) for f in rows))
    if json_out:
        console.print_json(json.dumps({"exported": len(rows), "file": str(dest)}))
    else:
        console.print(f"exported {len(rows)} flags -> {dest}")


TREND_REASONS = ("mismatch", "high_loss", "error")


@command(flags_app, "trend")
def flags_trend(
    job: Optional[int] = typer.Option(
        None, "--job", help="Only this job (default: every job, each on its own)."
    ),
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Per job and evaluation step: the examples the model got wrong, and those it got right
    again."""
    _, store = _store(home)
    trend = store.trend(job)
    if json_out:
        console.print_json(json.dumps(trend))
        return
    if not trend:
        console.print(
            "No evaluation flags yet" + (f" for job {job}" if job is not None else "") + "."
        )
        return
    top = max(sum(row.get(r, 0) for r in TREND_REASONS) for row in trend) or 1
    t = Table(title="wrong examples per evaluation step, per job")
    for col in ("job", "step", "wrong", "", *TREND_REASONS, "right again"):
        t.add_column(col)
    for row in trend:
        wrong = sum(row.get(r, 0) for r in TREND_REASONS)
        t.add_row(
            str(row["job"]),
            str(row["step"]),
            str(wrong),
            bar(wrong, top, 20),
            *(str(row.get(r, 0)) for r in TREND_REASONS),
            str(row.get("resolved", 0)),
        )
    console.print(t)
