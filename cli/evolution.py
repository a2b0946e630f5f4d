"""`trainctl evolution [DATASET]`: how every training example was learned (per-example dynamics
from the training passes: confidence, variability, correctness, forgetting, AUM, cartography class,
suspected label errors) and the probe snapshots' learning curve; `--example ID` one example;
`--probe` the probe set's examples (the model's own outputs at each snapshot); `trainctl evolution
export` a copy of the dataset without the suspects (or with only one class), to train again. Every
view says which epochs its figures use: after one epoch the classes cannot be told apart, and the
view lists when each example was first answered right instead. Reads JSON and the dynamics record
only (no torch)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Optional

import typer
from rich.table import Table
from typer.core import TyperGroup

from cli.common import HomeOpt, JsonOpt, command, console
from cli.formatting import bar, clip, sparkline
from daemon.chat.answers import readable
from daemon.errors import TrainctlError
from daemon.home import Home

if TYPE_CHECKING:
    from daemon.runs.dynamics import RunDynamics
    from daemon.runs.snapshots import Evolution

CLASSES = ("easy", "ambiguous", "hard")
COLOUR = {"easy": "green", "ambiguous": "yellow", "hard": "red"}
WITHOUT = ("suspect_label", "hard", "ambiguous")
ONLY = ("hard", "ambiguous", "suspect_label")


class _ShowByDefault(TyperGroup):
    """`trainctl evolution [DATASET] [options]` runs `show`; `trainctl evolution export ...` the
    subcommand."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in ("--help", "-h")):
            args = ["show", *args]
        return super().parse_args(ctx, args)


evolution_app = typer.Typer(
    cls=_ShowByDefault,
    help="How every training example was learned: per-example "
    "dynamics, cartography, suspected label errors, probe snapshots.",
)


def _snapshots(h: Home, dataset: str | None) -> Evolution | None:
    # (statistics is slow to import: only when the command runs)
    from daemon.runs.snapshots import datasets, load

    for d in reversed(datasets(h.evolution_root)):
        if dataset is None or d.name == dataset or d.name.startswith(dataset):
            return load(d)
    return None


def pick_sources(h: Home, dataset: str | None) -> tuple[RunDynamics | None, Evolution | None]:
    from daemon.runs.dynamics import latest

    dyn, evo = latest(h.runs, dataset), _snapshots(h, dataset)
    if dyn is None and evo is None:
        if dataset is None:
            raise TrainctlError(
                "no evolution yet — per-example dynamics and "
                "snapshots are written while a job trains"
            )
        raise TrainctlError(
            f"no evolution for dataset {dataset!r} — `trainctl evolution` shows "
            "the latest; `trainctl queue` lists the jobs and their datasets"
        )
    # the snapshots of the same dataset as the dynamics, if any
    if dyn is not None and evo is None:
        evo = _snapshots(h, dyn.dataset)
    return dyn, evo


@command(evolution_app, "show")
def show(
    dataset: Optional[str] = typer.Argument(
        None, help="Dataset folder name (default: the latest)."
    ),
    example: Optional[str] = typer.Option(
        None, "--example", help="One example (its id, its train index, or a probe id like ex_012)."
    ),
    cls: Optional[str] = typer.Option(
        None, "--class", help="Only easy, ambiguous or hard examples."
    ),
    sort: Optional[str] = typer.Option(
        None,
        "--sort",
        help="aum | confidence | forgetting | variability "
        "| first_right: most worth a look first (default: aum; first_right after one epoch).",
    ),
    probe: bool = typer.Option(
        False, "--probe", help="The probe snapshots' examples and outputs instead."
    ),
    limit: int = typer.Option(15, "--limit", help="Examples listed (0 = all)."),
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Which examples were learned, late, never, or forgotten; suspected label errors; the learning
    curve."""
    from daemon.runs.dynamics import SORTS

    if cls is not None and cls not in CLASSES:
        raise TrainctlError(f"unknown class {cls!r} — use one of {', '.join(CLASSES)}")
    if sort is not None and sort not in SORTS:
        raise TrainctlError(f"unknown sort {sort!r} — use one of {', '.join(SORTS)}")
    dyn, evo = pick_sources(Home.open(home, create=False), dataset)
    sort = sort or default_sort(dyn)
    if probe and evo is None:
        raise TrainctlError(
            "no probe snapshots for this dataset — they need train.evolution_examples > 0"
        )
    if example is not None:
        _one(dyn, evo, example, json_out)
        return
    if json_out:
        console.print_json(json.dumps(show_doc(dyn, evo, cls, sort, limit)))
        return
    if evo is not None:
        _curve(evo)
    if dyn is not None and not probe:
        _whole(dyn, cls, sort, limit)
    elif evo is not None:
        _probe_table(evo, cls, limit)


def default_sort(dyn: RunDynamics | None) -> str:
    """AUM (it survives memorisation); after a single epoch, when each example was first answered
    right."""
    return "first_right" if dyn is not None and len(dyn.epochs_used) < 2 else "aum"


def show_doc(
    dyn: RunDynamics | None, evo: Evolution | None, cls: str | None, sort: str, limit: int
) -> dict[str, Any]:
    """`trainctl evolution --json` (and the UI's evolution view): the snapshot curve, the probe
    examples, and every training example's dynamics, `limit` of them (0 = all) in `sort` order, of
    class `cls` only if given."""
    doc: dict[str, Any] = {}
    if evo is not None:
        doc.update(
            dataset=evo.dataset,
            curve=evo.curve,
            probe_classes=evo.classes(),
            probe_examples=[e.to_dict() for e in evo.hardest() if cls is None or e.cls == cls][
                : limit or None
            ],
        )
    if dyn is not None:
        rows = [e for e in dyn.sorted(sort) if cls is None or e.cls == cls]
        doc.update(
            dataset=dyn.dataset,
            run=str(dyn.run_dir),
            classes=dyn.classes(),
            suspect_label=len(dyn.suspects()),
            suspects_note=dyn.suspects_note or None,
            epochs={
                "recorded": dyn.epochs,
                "used": [e + 1 for e in dyn.epochs_used],
                "said": dyn.epochs_said(),
            },
            learning_until_step=dyn.window_end,
            sort=sort,
            examples=[e.to_dict() for e in rows[: limit or None]],
        )
    return doc


def find_example(dyn: RunDynamics | None, evo: Evolution | None, example: str) -> tuple[Any, Any]:
    """(its per-epoch dynamics, its probe entry): either may be None, not both; `example` is the
    record's id, its index, or a probe id."""
    d = next(
        (e for e in (dyn.examples if dyn else []) if example in (e.example_id, str(e.index))), None
    )
    p = None
    if evo is not None:
        try:
            p = evo.get(example)
        except TrainctlError:
            p = next(
                (
                    e
                    for e in evo.examples
                    if d is not None and str(e.metadata.get("id")) == d.example_id
                ),
                None,
            )
    if d is None and p is None:
        raise TrainctlError(
            f"no example {example!r} — use an id from `trainctl evolution` "
            "(the record's id, train_00012, or a probe id like ex_003)"
        )
    return d, p


def example_doc(d: Any, p: Any) -> dict[str, Any]:
    """`trainctl evolution EXAMPLE --json` (and the UI's example view): the example's per-epoch
    dynamics and, when it is in the probe set, its snapshot curve with outputs."""
    return {"dynamics": d.to_dict() if d else None, "probe": p.to_dict(curve=True) if p else None}


def _curve(evo: Evolution) -> None:
    console.print(
        f"[bold]evolution[/bold] of {evo.dataset}: {len(evo.curve)} "
        f"snapshots of {len(evo.examples)} probe examples",
        highlight=False,
    )
    t = Table(title="accuracy and loss over snapshots (probe set)")
    for col in ("step", "accuracy", "", "avg loss", ""):
        t.add_column(col)
    top_loss = max((c["avg_loss"] for c in evo.curve), default=1.0) or 1.0
    for c in evo.curve:
        t.add_row(
            str(c["step"]),
            f"{100 * c['accuracy']:.0f}%",
            bar(int(1000 * c["accuracy"]), 1000, 25),
            f"{c['avg_loss']:.3f}",
            bar(int(1000 * c["avg_loss"]), int(1000 * top_loss), 25),
        )
    console.print(t)
    console.print(
        "accuracy "
        + sparkline([c["accuracy"] for c in evo.curve])
        + "   loss "
        + sparkline([c["avg_loss"] for c in evo.curve])
    )


def _whole(dyn: RunDynamics, cls: str | None, sort: str, limit: int) -> None:
    from daemon.chat.messages import messages_of, question_and_answer

    counts = dyn.classes()
    epochs = max((len(e.epochs) for e in dyn.examples), default=0)
    forgot = sum(1 for e in dyn.examples if e.forgetting_events)
    suspects = dyn.suspects()
    one = len(dyn.epochs_used) < 2
    console.print(
        f"[bold]every training example[/bold] of {dyn.dataset} ({len(dyn.examples)} "
        f"examples, {epochs} epoch(s), read off the training passes up to step {dyn.steps})",
        highlight=False,
    )
    console.print(f"figures from {dyn.epochs_said()}", highlight=False)
    if one:
        never = sum(1 for e in dyn.examples if e.first_right_step is None)
        console.print(
            "[yellow]classes need two or more epochs[/yellow]; what one epoch can "
            f"say: {len(dyn.examples) - never} examples answered right in their pass, "
            f"{never} not (those seen late, when the model knew the task, first)",
            highlight=False,
        )
    else:
        console.print(
            f"[green]easy {counts['easy']}[/green], [yellow]ambiguous "
            f"{counts['ambiguous']}[/yellow], [red]hard {counts['hard']}[/red]; forgotten at "
            f"least once {forgot}; [bold red]suspected label errors {len(suspects)}[/bold red]",
            highlight=False,
        )
    if dyn.suspects_note and not (one and not dyn.window_reason):  # (one epoch: said just above)
        console.print(f"no suspected label errors reported: {dyn.suspects_note}", highlight=False)
    rows = [e for e in dyn.sorted(sort) if cls is None or e.cls == cls]
    t = Table(
        title=f"examples by {sort}, most worth a look first" + (f" — class {cls}" if cls else "")
    )
    cols = (
        ("id", "line", "seen at", "first right", "conf", "AUM")
        if one
        else ("id", "line", "class", "conf", "var", "right", "forgets", "AUM", "")
    )
    for col in (*cols, "question", "golden"):
        t.add_column(col, overflow="fold")
    for e in rows[: limit or None]:
        question, golden = question_and_answer(messages_of(e.row)) if e.row else ("", "")
        first = "never" if e.first_right_step is None else f"step {e.first_right_step}"
        cells = (
            (
                e.example_id,
                str(e.row.get("line", "—")),
                f"step {e.first_seen_step}",
                first,
                f"{e.confidence:.3f}",
                f"{e.aum:+.2f}",
            )
            if one
            else (
                e.example_id,
                str(e.row.get("line", "—")),
                f"[{COLOUR[e.cls]}]{e.cls}[/]",
                f"{e.confidence:.3f}",
                f"{e.variability:.3f}",
                f"{100 * e.correctness:.0f}%",
                str(e.forgetting_events),
                f"{e.aum:+.2f}",
                "[bold red]suspect[/]" if e.suspect else "",
            )
        )
        t.add_row(*cells, clip(question, 40), clip(readable(golden), 30))
    console.print(t)
    if limit and len(rows) > limit:
        console.print(f"… {len(rows) - limit} more (--limit 0 shows all)")
    if suspects:
        console.print(
            "suspected label errors are flagged too (`trainctl flags --reason suspect_label`); "
            "`trainctl evolution export --without suspect_label --to-inbox` trains a cleaned copy"
        )


def _probe_table(evo: Evolution, cls: str | None, limit: int) -> None:
    counts = evo.classes()
    never = sum(1 for e in evo.examples if e.first_learned is None)
    forgot = sum(1 for e in evo.examples if e.forgetting_events)
    console.print(
        f"probe classes: [green]easy {counts['easy']}[/green], [yellow]ambiguous "
        f"{counts['ambiguous']}[/yellow], [red]hard {counts['hard']}[/red]; "
        f"never learned {never}; forgotten at least once {forgot}"
    )
    rows = [e for e in evo.hardest() if cls is None or e.cls == cls]
    et = Table(
        title="probe examples, hardest first (lowest confidence)"
        + (f" — class {cls}" if cls else "")
    )
    for col in (
        "id",
        "class",
        "confidence",
        "variability",
        "first learned",
        "forgets",
        "input",
        "expected",
        "last output",
    ):
        et.add_column(col, overflow="fold")
    for e in rows[: limit or None]:
        first = e.first_learned
        et.add_row(
            e.example_id,
            f"[{COLOUR[e.cls]}]{e.cls}[/]",
            f"{e.confidence:.3f}",
            f"{e.variability:.3f}",
            "never" if first is None else f"step {first}",
            str(e.forgetting_events),
            clip(e.input),
            clip(readable(e.expected), 30),
            clip(readable(e.outputs[-1]) if e.outputs else "", 30),
        )
    console.print(et)
    if limit and len(rows) > limit:
        console.print(
            f"… {len(rows) - limit} more (--limit 0 shows "
            "all); --example ID shows one learning curve"
        )


def _one(dyn: RunDynamics | None, evo: Evolution | None, example: str, json_out: bool) -> None:
    """The example's per-epoch dynamics and, when it is in the probe set, its snapshot curve."""
    d, p = find_example(dyn, evo, example)
    if json_out:
        console.print_json(json.dumps(example_doc(d, p)))
        return
    if d is not None:
        one = dyn is not None and len(dyn.epochs_used) < 2
        cls = "no class after one epoch" if one else d.cls
        first = "never" if d.first_right_step is None else f"step {d.first_right_step}"
        console.print(
            f"[bold]{d.example_id}[/bold] (line {d.row.get('line', '—')}; {cls}; "
            + (f"seen at step {d.first_seen_step}, first right {first}; " if one else "")
            + "confidence "
            f"{d.confidence:.3f}, variability {d.variability:.3f}, correct in "
            f"{100 * d.correctness:.0f}% of epochs, {d.forgetting_events} forgetting events, AUM "
            f"{d.aum:+.2f}" + ("; [bold red]suspected label error[/]" if d.suspect else "") + ")",
            highlight=False,
        )
        t = Table(title="per epoch, from the training passes")
        for col in ("epoch", "loss", "golden prob", "", "argmax share", "margin"):
            t.add_column(col)
        for ep, lo, pr, c, m in zip(d.epochs, d.loss, d.prob, d.correct, d.margin):
            t.add_row(
                str(ep + 1),
                f"{lo:.3f}",
                f"{pr:.3f}",
                bar(int(1000 * pr), 1000, 20),
                f"{100 * c:.0f}%",
                f"{m:+.2f}",
            )
        console.print(t)
    if p is not None:
        first = p.first_learned
        learned = "never" if first is None else f"at step {first}"
        console.print(
            f"[bold]{p.example_id}[/bold] in the probe set ({p.cls}; confidence "
            f"{p.confidence:.3f}, variability {p.variability:.3f}; first "
            f"learned {learned}; {p.forgetting_events} forgetting events)",
            highlight=False,
        )
        console.print(f"input: {p.input}\nexpected: {readable(p.expected)}", highlight=False)
        console.print("golden probability " + sparkline(p.prob))
        t = Table(title="learning curve")
        for col in ("step", "correct", "loss", "golden prob", "", "model output"):
            t.add_column(col, overflow="fold")
        for s, ok, lo, pr, o in zip(p.steps, p.correct, p.loss, p.prob, p.outputs):
            t.add_row(
                str(s),
                "[green]yes[/green]" if ok else "[red]no[/red]",
                f"{lo:.3f}",
                f"{pr:.3f}",
                bar(int(1000 * pr), 1000, 20),
                clip(readable(o), 60),
            )
        console.print(t)


@command(evolution_app, "export")
def export(
    dataset: Optional[str] = typer.Argument(
        None, help="Dataset folder name (default: the latest)."
    ),
    out: Optional[str] = typer.Option(
        None, "--out", help="JSONL file to write (inside the home folder)."
    ),
    to_inbox: bool = typer.Option(
        False, "--to-inbox", help="Write it into inbox/ to train again now."
    ),
    without: Optional[list[str]] = typer.Option(
        None,
        "--without",
        help=f"Leave out: {', '.join(WITHOUT)} (repeatable; default suspect_label).",
    ),
    only: Optional[str] = typer.Option(
        None,
        "--only",
        help=f"Only the training records that are "
        f"{' | '.join(ONLY)} (to look at them or fix them by hand).",
    ),
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """The dataset's records (every split) without the suspected label errors (or a class), to
    train again; with --only, just the training records of one class or the suspects."""
    from daemon.atomic import iter_jsonl, write_jsonl_atomic
    from daemon.runs.dynamics import latest

    if only is not None and without:
        raise TrainctlError(
            "--only and --without do not go together — --only hard "
            "writes the hard records, --without hard everything else"
        )
    if only is not None and only not in ONLY:
        raise TrainctlError(f"unknown --only {only!r} — use one of {', '.join(ONLY)}")
    without = without or (["suspect_label"] if only is None else [])
    bad = [w for w in without if w not in WITHOUT]
    if bad:
        raise TrainctlError(f"unknown --without {bad[0]!r} — use one of {', '.join(WITHOUT)}")
    if (out is None) == (not to_inbox):
        raise TrainctlError(
            "give --out FILE or --to-inbox (one of them) — e.g. `trainctl "
            "evolution export --without suspect_label --to-inbox`"
        )
    h = Home.open(home, create=False)
    dyn = latest(h.runs, dataset)
    if dyn is None:
        raise TrainctlError(
            "no per-example dynamics "
            + (f"for dataset {dataset!r} " if dataset else "")
            + "— they are recorded while a job trains (train.dynamics = true)"
        )
    if only is not None and len(dyn.epochs_used) < 2 and only != "suspect_label":
        raise TrainctlError(
            f"classes need two or more epochs, and {dyn.dataset} has "
            f"{dyn.epochs_said()} — train with --epochs 2 or more"
        )
    drop = {
        e.index
        for e in dyn.examples
        if ("suspect_label" in without and e.suspect) or e.cls in without
    }
    keep = {
        e.index for e in dyn.examples if (only == "suspect_label" and e.suspect) or e.cls == only
    }
    folder = h.datasets / dyn.dataset
    records, total = [], 0
    for split in ("train", "val", "test"):
        for i, row in enumerate(iter_jsonl(folder / f"{split}.jsonl")):
            total += 1
            if (split == "train" and i in drop) or (
                only is not None and (split != "train" or i not in keep)
            ):
                continue
            records.append({k: v for k, v in row.items() if k not in ("line", "quality_score")})
    dest = (
        h.unique_path(h.inbox, f"{dyn.dataset}.clean.jsonl") if to_inbox else h.inside(out or "")
    )
    write_jsonl_atomic(dest, records)  # atomic: the daemon never picks up half a file
    if json_out:
        console.print_json(
            json.dumps(
                {"file": str(dest), "written": len(records), "left_out": total - len(records)}
            )
        )
    else:
        said = f"only {only}" if only else ", ".join(without)
        console.print(
            f"{len(records)} of {total} records -> {dest} "
            f"(left out {total - len(records)}: {said})",
            highlight=False,
        )
