"""`trainctl rejected`: why records were rejected and what to fix; `trainctl rejected accept`:
recover close ones."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from cli.common import Commands, HomeOpt, JsonOpt, console
from cli.formatting import bar
from daemon.atomic import write_jsonl_atomic
from daemon.errors import TrainctlError
from daemon.home import Home

commands = Commands()


@commands.command("rejected")
def rejected(
    target: Optional[str] = typer.Argument(
        None,
        metavar="[PATH | accept]",
        help="A dataset folder (or its rejected.jsonl), or `accept`.",
    ),
    accept_path: Optional[Path] = typer.Argument(
        None, metavar="[PATH]", help="With `accept`: the dataset folder."
    ),
    latest: bool = typer.Option(False, "--latest", help="The newest curated dataset."),
    reason: Optional[str] = typer.Option(
        None, "--reason", help="Only this reason or validation detail."
    ),
    min_score: Optional[float] = typer.Option(
        None, "--min-score", help="accept: lowest quality_score to recover."
    ),
    to_inbox: bool = typer.Option(
        False, "--to-inbox", help="accept: write the recovered file into inbox/."
    ),
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Rejection analysis: summary, reasons, domains, the 10 closest to passing, a score histogram,
    advice.

    `trainctl rejected accept --min-score X [PATH | --latest] [--to-inbox]` writes the quality
    rejects scoring at least X as a new file (marked to pass the quality gate when curated again).
    """
    from daemon.curation.rejects import analyse, find_dataset  # only this command needs them

    h = Home.open(home, create=False)
    if target == "accept":
        if min_score is None:
            raise TrainctlError(
                "accept needs --min-score X — e.g. `trainctl "
                "rejected accept --min-score 0.4 --latest`"
            )
        _accept(h, find_dataset(h.datasets, accept_path, latest), min_score, to_inbox, json_out)
        return
    if accept_path is not None:
        raise TrainctlError(
            f"unexpected argument {accept_path} — give one dataset PATH (or `accept PATH`)"
        )
    if min_score is not None or to_inbox:
        raise TrainctlError("--min-score and --to-inbox belong to `trainctl rejected accept`")
    ds = find_dataset(h.datasets, Path(target) if target else None, latest)
    rep = analyse(ds, reason)
    if json_out:
        console.print_json(json.dumps(rep.to_dict()))
        return
    _show(rep, reason)


def _show(rep, reason: str | None) -> None:
    from daemon.curation.rejects import BINS

    n = max(1, rep.lines_read)
    title = (
        f"{rep.dataset}: {rep.total_rejected} of {rep.lines_read} "
        f"records rejected ({rep.total_rejected / n:.1%})"
    )
    console.print(f"[bold]{title}[/bold]")
    if reason:
        console.print(f"showing {rep.shown} with reason {reason!r}")
    if not rep.shown:
        console.print("Nothing rejected" + (f" for {reason!r}" if reason else "") + ".")
        return
    t = Table(title="reasons")
    for col in ("reason", "count", "% of file", "% of rejected"):
        t.add_column(col, justify="right" if col != "reason" else "left")
    for r, c in rep.by_reason.items():
        t.add_row(r, str(c), f"{c / n:.1%}", f"{c / max(1, rep.shown):.1%}")
        if r == "validation_failed":
            for d, dc in rep.by_detail.items():
                t.add_row(
                    f"  [dim]└[/dim] {d}",
                    str(dc),
                    f"{dc / n:.1%}",
                    f"{dc / max(1, rep.shown):.1%}",
                )
    console.print(t)
    if rep.by_domain:
        t = Table(title="by domain")
        t.add_column("domain")
        t.add_column("rejected", justify="right")
        t.add_column("reasons")
        for d, rs in rep.by_domain.items():
            t.add_row(d, str(sum(rs.values())), ", ".join(f"{k} {v}" for k, v in rs.items()))
        console.print(t)
    if rep.closest:
        t = Table(title="closest to passing")
        for col in ("line", "reason", "score", "threshold", "components", "answer"):
            t.add_column(col, overflow="fold")
        for c in rep.closest:
            comps = " ".join(f"{k}={v:.2f}" for k, v in c.components.items())
            t.add_row(
                str(c.line),
                c.reason,
                f"{c.score:.3f}",
                f"{c.threshold:.2f}",
                comps,
                c.preview[:60],
            )
        console.print(t)
    if rep.score_stats:
        s = rep.score_stats
        console.print(
            f"quality scores of {s['count']} quality rejects: avg "
            f"{s['avg']:.3f}, min {s['min']:.3f}, max {s['max']:.3f}"
        )
        top = max(rep.histogram) or 1
        for i, c in enumerate(rep.histogram):
            console.print(f"  {i / BINS:.1f}–{(i + 1) / BINS:.1f} {bar(c, top, 30)} {c}")
    if rep.recommendations:
        console.print("[bold]recommendations[/bold]")
        for line in rep.recommendations:
            console.print(f"  • {line}", highlight=False)


def _accept(h: Home, ds: Path, min_score: float, to_inbox: bool, json_out: bool) -> None:
    if not 0 <= min_score <= 1:
        raise TrainctlError(
            f"--min-score {min_score} is outside [0, 1] — quality scores are between 0 and 1"
        )
    from daemon.curation.rejects import recover

    rows = recover(ds, min_score)
    if not rows:
        raise TrainctlError(
            f"no quality reject in {ds.name} scores >= {min_score} — "
            f"run `trainctl rejected {ds}` to see the closest scores"
        )
    name = f"{ds.name}_recovered_{min_score:.2f}.jsonl"
    out = h.unique_path(h.inbox if to_inbox else ds, name)
    # Written under a hidden temp name and renamed: the daemon never sees half a file in the inbox.
    write_jsonl_atomic(out, rows)
    if json_out:
        console.print_json(json.dumps({"recovered": len(rows), "file": str(out)}))
        return
    console.print(f"recovered {len(rows)} records with quality_score >= {min_score} -> {out}")
    if not to_inbox:
        console.print(f"train on them: `cp {out} {h.inbox}/` or run again with --to-inbox")
