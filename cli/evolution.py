"""`trainctl evolution [DATASET] [--example ID]`: the learning curve over snapshots, per-example learning events and
cartography classes, one example's learning curve. Reads JSON only."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Optional

import typer
from rich.table import Table

from cli.app import HomeOpt, JsonOpt, app, command, console
from cli.render import bar, clip, sparkline
from daemon.chat.answers import readable
from daemon.errors import TrainctlError
from daemon.home import Home

if TYPE_CHECKING:
    from daemon.evolution import Evolution

CLASSES = ("easy", "ambiguous", "hard")


def _pick(h: Home, dataset: str | None) -> Evolution:
    from daemon.evolution import datasets, load  # (statistics is slow to import: only when the command runs)

    found = datasets(h.evolution_root)
    if not found:
        raise TrainctlError("no evolution snapshots yet — they are written while a job trains "
                            "(train.evolution_examples > 0)")
    if dataset is None:
        return load(found[-1])
    for d in found:
        if d.name == dataset or d.name.startswith(dataset):
            return load(d)
    names = ", ".join(d.name for d in found[-5:])
    raise TrainctlError(f"no snapshots for dataset {dataset!r} (recent: {names}) — pass one of those names")


@command(app, "evolution")
def evolution(dataset: Optional[str] = typer.Argument(None, help="Dataset folder name (default: the latest)."),
              example: Optional[str] = typer.Option(None, "--example", help="One example's learning curve "
                                                    "(ex_012, or the record's id)."),
              cls: Optional[str] = typer.Option(None, "--class", help="Only easy, ambiguous or hard examples."),
              limit: int = typer.Option(15, "--limit", help="Examples listed, hardest first (0 = all)."),
              home: HomeOpt = None, json_out: JsonOpt = False) -> None:
    """Which examples were learned early, late, never, or forgotten; accuracy and loss over the snapshots."""
    if cls is not None and cls not in CLASSES:
        raise TrainctlError(f"unknown class {cls!r} — use one of {', '.join(CLASSES)}")
    evo = _pick(Home.open(home, create=False), dataset)
    if example is not None:
        _one(evo, example, json_out)
        return
    rows = [e for e in evo.hardest() if cls is None or e.cls == cls]
    if json_out:
        console.print_json(json.dumps({"dataset": evo.dataset, "curve": evo.curve, "classes": evo.classes(),
                                       "examples": [e.to_dict() for e in rows[: limit or None]]}))
        return
    console.print(f"[bold]evolution[/bold] of {evo.dataset}: {len(evo.curve)} snapshots, {len(evo.examples)} probe "
                  "examples", highlight=False)
    t = Table(title="accuracy and loss over snapshots")
    for col in ("step", "accuracy", "", "avg loss", ""):
        t.add_column(col)
    top_loss = max((c["avg_loss"] for c in evo.curve), default=1.0) or 1.0
    for c in evo.curve:
        t.add_row(str(c["step"]), f"{100 * c['accuracy']:.0f}%", bar(int(1000 * c["accuracy"]), 1000, 25),
                  f"{c['avg_loss']:.3f}", bar(int(1000 * c["avg_loss"]), int(1000 * top_loss), 25))
    console.print(t)
    console.print("accuracy " + sparkline([c["accuracy"] for c in evo.curve]) + "   loss "
                  + sparkline([c["avg_loss"] for c in evo.curve]))
    counts = evo.classes()
    never = sum(1 for e in evo.examples if e.first_learned is None)
    forgot = sum(1 for e in evo.examples if e.forgetting_events)
    console.print(f"classes: [green]easy {counts['easy']}[/green], [yellow]ambiguous {counts['ambiguous']}[/yellow], "
                  f"[red]hard {counts['hard']}[/red]; never learned {never}; forgotten at least once {forgot}")
    et = Table(title="examples, hardest first (lowest confidence)" + (f" — class {cls}" if cls else ""))
    for col in ("id", "class", "confidence", "variability", "first learned", "forgets", "input", "expected",
                "last output"):
        et.add_column(col, overflow="fold")
    colour = {"easy": "green", "ambiguous": "yellow", "hard": "red"}
    for e in rows[: limit or None]:
        first = e.first_learned
        et.add_row(e.example_id, f"[{colour[e.cls]}]{e.cls}[/]", f"{e.confidence:.3f}", f"{e.variability:.3f}",
                   "never" if first is None else f"step {first}", str(e.forgetting_events), clip(e.input),
                   clip(readable(e.expected), 30), clip(readable(e.outputs[-1]) if e.outputs else "", 30))
    console.print(et)
    if limit and len(rows) > limit:
        console.print(f"… {len(rows) - limit} more (--limit 0 shows all); --example ID shows one learning curve")


def _one(evo: Evolution, example: str, json_out: bool) -> None:
    e = evo.get(example)
    if json_out:
        console.print_json(json.dumps(e.to_dict(curve=True)))
        return
    first = e.first_learned
    console.print(f"[bold]{e.example_id}[/bold] ({e.cls}; confidence {e.confidence:.3f}, variability "
                  f"{e.variability:.3f}; first learned {'never' if first is None else f'at step {first}'}; "
                  f"{e.forgetting_events} forgetting events)", highlight=False)
    console.print(f"input: {e.input}\nexpected: {readable(e.expected)}", highlight=False)
    console.print("golden probability " + sparkline(e.prob))
    t = Table(title="learning curve")
    for col in ("step", "correct", "loss", "golden prob", "", "model output"):
        t.add_column(col, overflow="fold")
    for s, ok, lo, p, o in zip(e.steps, e.correct, e.loss, e.prob, e.outputs):
        t.add_row(str(s), "[green]yes[/green]" if ok else "[red]no[/red]", f"{lo:.3f}", f"{p:.3f}",
                  bar(int(1000 * p), 1000, 20), clip(readable(o), 60))
    console.print(t)
