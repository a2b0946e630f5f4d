"""`trainctl bench sweep --job N`: every checkpoint of a job judged on its held-out test split, in
one engine.

The base model is loaded once (one vLLM engine, or one transformers model) and answers the test
split with no adapter, with every kept checkpoint, with adapter-best/ (when the best step was not
the last) and with the final adapter: one LoRA adapter per bench run, named `job-N-sweep-<what>`
(base, step-S, best, final). Each is an ordinary bench run, so each (adapter, prompt) pair is
answered exactly once through kills, a second `bench sweep` carries on where the first stopped, and
`bench compare` reads any two of them.

The summary (data/bench/job-N-sweep.json) holds, per adapter: its step, exact match against the
test split's answers, and agreement with the final adapter; and which one answered best, with the
command that uses it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from daemon.atomic import read_json, write_json_atomic
from daemon.bench.compare import compare_runs, extract
from daemon.bench.runner import BenchRunner, BenchSpec, ModelLoader
from daemon.bench.state import BenchState, RunInfo, finished_job, load_run
from daemon.config import BenchConfig
from daemon.errors import BenchError
from daemon.home import Home
from daemon.runs.checkpoints import complete_checkpoint_steps, job_checkpoints_dir


@dataclass
class Target:
    """One adapter the sweep judges."""

    label: str
    """`base`, `step-S`, `best` or `final`: the tail of its bench run's name."""
    step: int | None
    """The training step its weights are from (None for the base model)."""
    adapter: Path | None


@dataclass
class SweepRow:
    name: str
    """The bench run (`job-N-sweep-<label>`)."""
    label: str
    step: int | None
    adapter: str | None
    answered: int
    errors: int
    exact_match: float | None
    """Share of the test split answered exactly as its reference (None: no references)."""
    agreement_with_final: float | None
    best: bool = False


def run_name(job_id: int, label: str) -> str:
    return f"job-{job_id}-sweep-{label}"


def summary_path(home: Home, job_id: int) -> Path:
    return home.bench_root / f"job-{job_id}-sweep.json"


def job_targets(home: Home, job_id: int) -> tuple[str, Path, list[Target]]:
    """(model, test split, targets) of a finished job: base, each complete checkpoint,
    adapter-best/, final."""
    job, test = finished_job(
        home,
        job_id,
        ": there is nothing to judge the checkpoints on — `trainctl "
        "bench run --prompts FILE --adapter DIR` takes a prompt file",
    )
    assert job.adapter_dir is not None  # finished_job checks it
    final = Path(job.adapter_dir)
    config = read_json(final / "trainctl_config.json") or {}
    model = (config.get("train") or {}).get("model")
    if not model:
        raise BenchError(f"{final} has no trainctl_config.json naming its base model")
    result = read_json(Path(job.run_dir or home.run_dir(job_id)) / "result.json") or {}
    targets = [Target("base", None, None)]
    ckpts = job_checkpoints_dir(home, job_id)
    targets += [
        Target(f"step-{s}", s, ckpts / f"checkpoint-{s}") for s in complete_checkpoint_steps(ckpts)
    ]
    best = result.get("best") or {}
    if (final.parent / "adapter-best").is_dir():
        targets.append(Target("best", best.get("step"), final.parent / "adapter-best"))
    targets.append(Target("final", result.get("steps"), final))
    return model, test, targets


def run_sweep(
    home: Home,
    job_id: int,
    cfg: BenchConfig,
    limit: int | None = None,
    log: Callable[[str], None] = print,
    on_progress: Callable[[RunInfo], None] | None = None,
    on_target: Callable[[Target, int, int], None] | None = None,
    loader: Callable[[BenchSpec], Any] | None = None,
) -> tuple[list[SweepRow], bool]:
    """Answer the test split with every target in one loaded model; (rows, finished). Unfinished: a
    signal stopped one of the runs (a second `bench sweep` continues it)."""
    model, test, targets = job_targets(home, job_id)
    load = loader or ModelLoader(home, log, adapters=[t.adapter for t in targets if t.adapter])
    try:
        for i, t in enumerate(targets):
            if on_target:
                on_target(t, i, len(targets))
            spec = BenchSpec(
                name=run_name(job_id, t.label),
                model=model,
                prompts=test,
                adapter=t.adapter,
                cfg=cfg,
                job_id=job_id,
                limit=limit,
            )
            existing = load_run(home.bench_dir(spec.name))
            runner = BenchRunner(
                home, spec, resume=existing is not None, on_progress=on_progress, log=log
            )
            if runner.run(load).info.state is not BenchState.COMPLETED:
                return summarise(home, job_id, targets), False
    finally:
        if isinstance(load, ModelLoader):
            load.close()
    rows = summarise(home, job_id, targets)
    write_json_atomic(summary_path(home, job_id), sweep_doc(job_id, rows))
    return rows, True


def summarise(home: Home, job_id: int, targets: list[Target]) -> list[SweepRow]:
    """Exact match and agreement with the final adapter of every target that has results."""
    names = [run_name(job_id, t.label) for t in targets]
    present = [n for n in names if load_run(home.bench_dir(n)) is not None]
    if not present:
        return []
    c = compare_runs(home.bench_root, present)
    final_col = present.index(names[-1]) if names[-1] in present else None
    rows = []
    for t, name in zip(targets, names):
        if name not in present:
            continue
        col = present.index(name)
        cells = [(cell, r) for r in c.rows if (cell := r.cells[col]) is not None]
        answered = [(cell, r) for cell, r in cells if cell.value != "<error>"]
        refs = [(cell, r) for cell, r in answered if r.reference is not None]
        em = (
            sum(cell.value == extract(r.reference or "", None) for cell, r in refs) / len(refs)
            if refs
            else None
        )
        agree = None
        if final_col is not None:
            both = [
                (cell, other) for cell, r in answered if (other := r.cells[final_col]) is not None
            ]
            agree = sum(a.value == b.value for a, b in both) / len(both) if both else None
        rows.append(
            SweepRow(
                name,
                t.label,
                t.step,
                str(t.adapter) if t.adapter else None,
                len(cells),
                len(cells) - len(answered),
                em,
                agree,
            )
        )
    scored = [r for r in rows if r.exact_match is not None]
    if scored:
        # Ties go to what is simplest to use: the final adapter, then adapter-best/, then the
        # latest checkpoint.
        preference = {"final": 3, "best": 2}
        top = max(scored, key=lambda r: (r.exact_match, preference.get(r.label, 1), r.step or -1))
        top.best = True
    return rows


def use_command(job_id: int, row: SweepRow) -> str:
    """The line that uses the best adapter."""
    if row.label == "final":
        return f"trainctl export {job_id}   (or: trainctl bench run --job {job_id})"
    if row.label == "best":
        return f"trainctl export {job_id} --best   (or: trainctl bench run --job {job_id} --best)"
    if row.label == "base":
        return (
            "the base model without an adapter answered best — `trainctl "
            f"bench compare {run_name(job_id, 'base')} "
            f"{run_name(job_id, 'final')}` shows where the adapter goes wrong"
        )
    return f"trainctl export {job_id} --checkpoint {row.step}"


def sweep_doc(job_id: int, rows: list[SweepRow]) -> dict[str, Any]:
    best = next((r for r in rows if r.best), None)
    return {
        "job_id": job_id,
        "rows": [asdict(r) for r in rows],
        "best": asdict(best) if best else None,
        "use": use_command(job_id, best) if best else None,
    }
