"""`trainctl bench run | list | compare | sweep`. `list` and `compare` read JSON only (no torch);
`run` imports the backends inside the command."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any, Optional

import typer
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from cli.common import HomeOpt, JsonOpt, command, console, err_console
from cli.formatting import clip, dash, duration
from daemon.atomic import read_json, write_jsonl_atomic
from daemon.chat.answers import readable
from daemon.errors import BenchError
from daemon.home import Home, safe_name


class _ResumeOption(TyperGroup):
    """`trainctl bench --resume [NAME]`, as on the product card, is the `bench resume [NAME]`
    command."""

    def parse_args(  # type: ignore[override]
        self, ctx: typer.Context, args: list[str]
    ) -> list[str]:
        if args and args[0] == "--resume":
            args = ["resume", *args[1:]]
        return super().parse_args(ctx, args)


bench_app = typer.Typer(
    cls=_ResumeOption,
    no_args_is_help=True,
    help="Batch generation that survives kills, and side-by-side model comparison. "
    "`trainctl bench --resume` carries on the unfinished run.",
)


# ---------------------------------------------------------------- run


def _job_target(
    h: Home, job_id: int, base: bool, best: bool = False
) -> tuple[str, Path, Path | None]:
    """(model, prompts, adapter) of a finished training job: its base model, its test split, its
    adapter (with `best`: adapter-best/, or the final adapter when the last step was the best)."""
    from daemon.bench.state import finished_job

    job, test = finished_job(h, job_id, " — pass --prompts FILE instead")
    assert job.adapter_dir is not None  # finished_job checks it
    adapter = Path(job.adapter_dir)
    model = _adapter_base(adapter) or _home_model(h)
    if best:
        result = read_json(Path(job.run_dir or h.run_dir(job_id)) / "result.json") or {}
        report = result.get("best")
        if not report:
            raise BenchError(
                f"job {job_id} has no best checkpoint (no fixed evaluation ran) — drop --best"
            )
        adapter = Path(report["adapter_dir"])
    return model, test, None if base else adapter


def _adapter_base(adapter: Path) -> str | None:
    """The base model an adapter was trained from: trainctl saves its resolved settings beside it;
    peft's own config names the folder it was loaded from."""
    cfg = read_json(adapter / "trainctl_config.json") or {}
    return (cfg.get("train") or {}).get("model") or (
        read_json(adapter / "adapter_config.json") or {}
    ).get("base_model_name_or_path")


def _home_model(h: Home) -> str:
    """The home's training model (trainctl.toml, else the default)."""
    from daemon.config import load_settings

    return load_settings(h.settings_file).train.model


def _spec(
    h: Home,
    name: str | None,
    model: str | None,
    prompts: str | None,
    adapter: str | None,
    job: int | None,
    base: bool,
    resume: bool,
    bench_flags: dict[str, Any],
    best: bool = False,
    limit: int | None = None,
) -> Any:
    from daemon.bench.runner import BenchSpec
    from daemon.bench.state import load_run
    from daemon.config import load_settings

    stored = load_run(h.bench_dir(name)) if (resume and name) else None
    if resume and name and stored is None and not prompts and job is None:
        raise BenchError(
            f"there is no bench run {safe_name(name)!r} to resume, and no --prompts "
            "or --job to start it with — `trainctl bench list` shows the runs"
        )
    job_id = job
    if job is not None:
        if model or prompts or adapter:
            raise BenchError(
                "--job takes the job's model, test split and "
                "adapter — drop --model/--prompts/--adapter"
            )
        if base and best:
            raise BenchError(
                "--base and --best do not go together — --base "
                "runs the job's model without an adapter"
            )
        jm, jp, ja = _job_target(h, job, base, best)
        model, prompts, adapter = jm, str(jp), (str(ja) if ja else None)
        name = name or (f"job-{job}-base" if base else f"job-{job}-best" if best else f"job-{job}")
    elif base or best:
        raise BenchError(
            "--base and --best go with --job (the job's base model, or its best checkpoint)"
        )
    if stored is not None:
        # A resume keeps the run's own settings; only what is passed again explicitly is compared
        # (and refused if it differs). trainctl.toml edits since the start do not leak into an old
        # run.
        fp = stored.fingerprint
        model = model or fp["model"]
        prompts = prompts or stored.prompts_path
        if adapter is None and fp.get("adapter"):
            adapter = fp["adapter"]
        for key in ("backend", "max_tokens", "temperature", "top_p", "seed"):
            bench_flags.setdefault(key, fp[key])
        job_id = stored.job_id
        limit = limit or stored.limit
    if not prompts:
        raise BenchError(
            "give --prompts FILE (OpenAI batch lines or any training format), or --job ID"
        )
    prompts_path = Path(prompts).expanduser().resolve()
    if not prompts_path.is_file():
        raise BenchError(f"prompt file {prompts} does not exist — check the path")
    adapter_path = Path(adapter).expanduser().resolve() if adapter else None
    if adapter_path is not None and not (adapter_path / "adapter_config.json").exists():
        raise BenchError(
            f"{adapter} is not a LoRA adapter folder (no adapter_config.json) "
            "— pass the adapter/ folder of a job, or --job ID"
        )
    if not model:
        model = (_adapter_base(adapter_path) if adapter_path else None) or _home_model(h)
    settings = load_settings(h.settings_file, {"bench": bench_flags})
    if not name:
        tail = safe_name(model.rstrip("/").split("/")[-1].replace(":", "-"))
        name = f"{safe_name(prompts_path.stem)}-{tail}" + ("-lora" if adapter_path else "")
    name = safe_name(name)
    if limit is not None and limit < 1:
        raise BenchError(
            f"--limit {limit}: give a number of prompts >= 1 (or leave it out for all of them)"
        )
    return BenchSpec(
        name=name,
        model=model,
        prompts=prompts_path,
        adapter=adapter_path,
        cfg=settings.bench,
        job_id=job_id,
        limit=limit,
    )


@command(bench_app, "run")
def bench_run(
    model: Optional[str] = typer.Option(
        None, "--model", help="builtin:tiny, a hub id or a model folder."
    ),
    prompts: Optional[str] = typer.Option(
        None,
        "--prompts",
        help="OpenAI batch JSONL or any training "
        "format (the answer, if present, is kept as the reference).",
    ),
    adapter: Optional[str] = typer.Option(None, "--adapter", help="A LoRA adapter folder."),
    job: Optional[int] = typer.Option(
        None, "--job", help="A finished job: its adapter on its test split."
    ),
    base: bool = typer.Option(
        False, "--base", help="With --job: the job's base model, no adapter."
    ),
    best: bool = typer.Option(False, "--best", help="With --job: its best checkpoint's adapter."),
    backend: Optional[str] = typer.Option(
        None, "--backend", help="auto (vLLM when it loads the model, else hf), vllm or hf."
    ),
    name: Optional[str] = typer.Option(None, "--name", help="Run name (data/bench/<name>/)."),
    resume: bool = typer.Option(
        False,
        "--resume",
        help="Continue an interrupted run (the same line "
        "without it also continues a run with the same settings).",
    ),
    limit: Optional[int] = typer.Option(
        None,
        "--limit",
        help="Answer only the first N prompts (the same line without it answers the rest).",
    ),
    retry_errors: bool = typer.Option(
        False, "--retry-errors", help="With --resume: redo error lines."
    ),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens"),
    temperature: Optional[float] = typer.Option(None, "--temperature"),
    top_p: Optional[float] = typer.Option(None, "--top-p"),
    seed: Optional[int] = typer.Option(None, "--seed"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size"),
    data_parallel_size: Optional[int] = typer.Option(
        None, "--data-parallel-size", help="Engines side by side, each on a share of the prompts."
    ),
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Generate an answer for every prompt, each appended to results.jsonl as it finishes; --resume
    after a kill (a run that does not exist yet is started, so the same command line can be re-run
    after every crash)."""
    from daemon.bench.state import load_run

    if retry_errors and not resume:
        raise BenchError(
            "--retry-errors goes with --resume (it redoes the error lines of an existing run)"
        )
    h = Home.open(home)
    flags = {
        k: v
        for k, v in dict(
            backend=backend,
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            batch_size=batch_size,
            data_parallel_size=data_parallel_size,
        ).items()
        if v is not None
    }
    spec = _spec(h, name, model, prompts, adapter, job, base, resume, flags, best, limit)
    out = err_console if json_out else console
    if resume and load_run(h.bench_dir(spec.name)) is None:
        # the same command line can be re-run blindly after every crash: the first time, it starts
        # the run
        out.print(
            f"there is no bench run {spec.name!r} yet: starting it (the same command resumes it)",
            highlight=False,
        )
        resume = False
    _run(h, spec, resume, retry_errors, json_out)


def _run(h: Home, spec: Any, resume: bool, retry_errors: bool, json_out: bool) -> None:
    """Run (or resume) `spec` with a progress bar; exit 130 when it ends unfinished."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )
    from rich.progress import TimeRemainingColumn as Eta

    from daemon.bench.runner import BenchRunner, load_backend_for
    from daemon.bench.state import BenchState

    out = err_console if json_out else console
    out.print(
        f"bench run [bold]{spec.name}[/bold]: {spec.model}"
        + (f" + {spec.adapter}" if spec.adapter else "")
        + f" on {spec.prompts.name} ({spec.cfg.backend}) → {h.bench_dir(spec.name)}",
        highlight=False,
    )
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        Eta(),
    )
    with Progress(*columns, console=out, transient=False) as bar:
        task = bar.add_task("generating", total=None, rate="")

        def on_progress(info: Any) -> None:
            p = info.progress
            bar.update(
                task,
                total=info.total,
                completed=p.done,
                rate=f"{info.output_tokens_per_s:,.0f} tok/s, {p.errors} err",
            )

        say = lambda m: out.print(f"[yellow]{m}[/yellow]", highlight=False)  # noqa: E731
        if spec.cfg.data_parallel_size > 1:
            from daemon.bench.shards import run_sharded

            outcome = run_sharded(
                h, spec, resume=resume, retry_errors=retry_errors, on_progress=on_progress, log=say
            )
        else:
            runner = BenchRunner(
                h, spec, resume=resume, retry_errors=retry_errors, on_progress=on_progress, log=say
            )
            loader = load_backend_for(h, say)
            try:
                outcome = runner.run(loader)
            finally:
                loader.close()
        bar.update(task, total=outcome.info.total, completed=outcome.info.progress.done)
    info = outcome.info
    engine = info.engine or {}
    summary = {
        "name": info.name,
        "state": info.state.value,
        "done": info.progress.done,
        "total": info.total,
        "backend": engine.get("backend"),
        "engine_version": engine.get("version"),
        "errors": info.progress.errors,
        "written_now": outcome.written,
        "skipped_done": outcome.skipped,
        "repaired_bytes": outcome.repaired_bytes,
        "output_tokens_per_s": round(info.output_tokens_per_s, 1),
        "results": str(outcome.results),
    }
    if json_out:
        console.print_json(json.dumps(summary))
    else:
        by = f" by {engine['backend']} {engine['version']}" if engine else ""
        console.print(
            f"{info.state.value}: {info.progress.done}/{info.total} results "
            f"({info.progress.errors} errors; {outcome.written} this session, {outcome.skipped} "
            f"from before){by}, {info.output_tokens_per_s:,.0f} output tok/s → {outcome.results}",
            highlight=False,
        )
    if info.state is not BenchState.COMPLETED:
        console.print(f"resume with: trainctl bench --resume {info.name}", highlight=False)
        raise typer.Exit(128 + signal.SIGINT)


@command(bench_app, "sweep")
def bench_sweep(
    job: int = typer.Option(
        ..., "--job", help="A finished job: its checkpoints on its test split."
    ),
    backend: Optional[str] = typer.Option(None, "--backend", help="auto, vllm or hf."),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens"),
    limit: Optional[int] = typer.Option(None, "--limit", help="Only the first N test prompts."),
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Judge every checkpoint of a job in one engine: the base model, each kept checkpoint,
    adapter-best/ and the final adapter answer the held-out test split (one bench run each,
    resumable); exact match per step, the best marked, and the command that uses it."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from daemon.bench.sweep import run_sweep, sweep_doc, use_command
    from daemon.config import load_settings

    h = Home.open(home)
    flags = {
        k: v for k, v in dict(backend=backend, max_tokens=max_tokens).items() if v is not None
    }
    cfg = load_settings(h.settings_file, {"bench": flags}).bench
    if limit is not None and limit < 1:
        raise BenchError(
            f"--limit {limit}: give a number of prompts >= 1 (or leave it out for all of them)"
        )
    out = err_console if json_out else console
    say = lambda m: out.print(f"[yellow]{m}[/yellow]", highlight=False)  # noqa: E731
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=out,
    ) as bar:
        task = bar.add_task("loading", total=None)

        def on_target(target: Any, i: int, n: int) -> None:
            bar.update(task, description=f"[{i + 1}/{n}] {target.label}", completed=0, total=None)

        def on_progress(info: Any) -> None:
            bar.update(task, total=info.total, completed=info.progress.done)

        rows, finished = run_sweep(
            h, job, cfg, limit, log=say, on_progress=on_progress, on_target=on_target
        )
    if json_out:
        console.print_json(json.dumps(sweep_doc(job, rows)))
    else:
        t = Table(title=f"job {job}: every checkpoint on its held-out test split")
        for col in ("", "adapter", "step", "exact match", "agrees with final", "answers"):
            t.add_column(col)
        for r in rows:
            t.add_row(
                "[green]★[/green]" if r.best else "",
                r.label,
                dash(r.step),
                dash(r.exact_match, "{:.0%}"),
                dash(r.agreement_with_final, "{:.0%}"),
                f"{r.answered}" + (f" ({r.errors} errors)" if r.errors else ""),
            )
        console.print(t)
        best = next((r for r in rows if r.best), None)
        if finished and best:
            console.print(
                f"best: {best.label}"
                + (f" (step {best.step})" if best.step is not None else "")
                + f" — {use_command(job, best)}",
                highlight=False,
            )
    if not finished:
        console.print(
            "stopped before the end — the same command "
            f"continues: trainctl bench sweep --job {job}",
            highlight=False,
        )
        raise typer.Exit(128 + signal.SIGINT)


def unfinished_run(h: Home, name: str | None) -> Any:
    """The run `trainctl bench --resume [NAME]` continues: NAME, or the one bench run that is not
    completed and not running (stopped, killed or failed). Refuses when there is none, or several
    (it will not guess)."""
    from daemon.bench.state import list_runs, load_run

    if name:
        info = load_run(h.bench_dir(safe_name(name)))
        if info is None:
            raise BenchError(
                f"there is no bench run {name!r} — `trainctl bench list` shows the runs"
            )
        return info
    runs = [info for _, info in list_runs(h.bench_root)]
    left = sorted(
        (i for i in runs if i.shown_state in ("stopped", "killed", "failed")),
        key=lambda i: i.updated_at,
    )
    if not left:
        running = [i.name for i in runs if i.shown_state == "running"]
        extra = f" ({', '.join(running)} still running)" if running else ""
        raise BenchError(
            "no bench run to resume: none is stopped, killed or "
            f"failed{extra} — `trainctl bench list` shows the runs"
        )
    if len(left) > 1:
        which = ", ".join(
            f"{i.name} ({i.shown_state}, {i.progress.done}/{i.total})" for i in reversed(left)
        )
        raise BenchError(
            f"{len(left)} bench runs could be resumed: {which} — "
            f"name one: trainctl bench --resume {left[-1].name}"
        )
    return left[0]


@command(bench_app, "resume")
def bench_resume(
    name: Optional[str] = typer.Argument(None, help="The run (default: the one unfinished run)."),
    retry_errors: bool = typer.Option(False, "--retry-errors", help="Also redo error lines."),
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Continue an unfinished bench run with its own settings (also `trainctl bench --resume
    [NAME]`)."""
    h = Home.open(home)
    info = unfinished_run(h, name)
    if info.shown_state == "completed" and not retry_errors:
        console.print(
            f"bench run {info.name!r} is already completed "
            f"({info.progress.done}/{info.total}); `--retry-errors` redoes its error lines",
            highlight=False,
        )
        return
    if info.shown_state == "running":
        raise BenchError(
            f"bench run {info.name!r} is running (pid {info.pid}) — wait for it or stop it"
        )
    (err_console if json_out else console).print(
        f"resuming bench run {info.name!r} ({info.shown_state}, "
        f"{info.progress.done}/{info.total})",
        highlight=False,
    )
    spec = _spec(h, info.name, None, None, None, None, False, True, {}, False)
    _run(h, spec, True, retry_errors, json_out)


# ---------------------------------------------------------------- list


@command(bench_app, "list")
def bench_list(home: HomeOpt = None, json_out: JsonOpt = False) -> None:
    """Bench runs: state, progress, errors, output tokens/s, duration."""
    h = Home.open(home, create=False)
    rows = runs_doc(h)
    if json_out:
        console.print_json(json.dumps(rows))
        return
    if not rows:
        console.print(
            "No bench runs yet — `trainctl bench run --model M --prompts FILE` starts one."
        )
        return
    t = Table(title=f"bench runs in {h.bench_root}")
    for col in (
        "name",
        "state",
        "progress",
        "errors",
        "out tok/s",
        "duration",
        "model",
        "backend",
    ):
        t.add_column(col, overflow="fold")
    colour = {
        "completed": "green",
        "running": "cyan",
        "killed": "red",
        "failed": "red",
        "stopped": "yellow",
    }
    for r in rows:
        pct = 100 * r["done"] / r["total"] if r["total"] else 0
        t.add_row(
            r["name"],
            f"[{colour.get(r['state'], 'white')}]{r['state']}[/]",
            f"{r['done']}/{r['total']} ({pct:.0f}%)",
            str(r["errors"]),
            f"{r['output_tokens_per_s']:,.0f}",
            duration(r["active_seconds"]),
            r["model"] + (" + adapter" if r["adapter"] else ""),
            r["backend"],
        )
    console.print(t)


def runs_doc(h: Home) -> list[dict[str, Any]]:
    """Every bench run with its state and progress (`bench list --json`, the UI's run picker)."""
    from daemon.bench.state import count_lines, list_runs, results_files

    rows = []
    for d, info in list_runs(h.bench_root):
        # the results files are the truth, also for a killed run (one per rank of a data-parallel
        # run)
        done = sum(count_lines(f) for f in results_files(d))
        rows.append(
            {
                "name": info.name,
                "state": info.shown_state,
                "done": done,
                "total": info.total,
                "errors": info.progress.errors,
                "output_tokens_per_s": round(info.output_tokens_per_s, 1),
                "active_seconds": round(info.progress.active_seconds, 1),
                "model": info.fingerprint["model"],
                "adapter": info.fingerprint.get("adapter"),
                "backend": (info.engine or {}).get("backend") or info.fingerprint["backend"],
                "engine_version": (info.engine or {}).get("version"),
                "updated_at": info.updated_at,
                "message": info.message,
            }
        )
    return rows


# ---------------------------------------------------------------- compare


def comparison(
    h: Home,
    runs: list[str],
    label_regex: str | None = None,
    name_field: str | None = None,
    name_regex: str | None = None,
) -> Any:
    """Runs joined by custom_id; the options default to trainctl.toml's [bench]."""
    from daemon.bench.compare import compare_runs
    from daemon.config import load_settings

    cfg = load_settings(h.settings_file).bench
    return compare_runs(
        h.bench_root,
        [safe_name(r) for r in runs],
        cfg.label_regex if label_regex is None else label_regex,
        cfg.name_field if name_field is None else name_field,
        cfg.name_regex if name_regex is None else name_regex,
    )


def compare_doc(c: Any, diff_only: bool) -> dict[str, Any]:
    """`bench compare --json` (and the UI's comparison viewer): per-run figures, every pair's
    agreement and kappa, the joined rows."""
    from daemon.bench.compare import comparison_rows_json

    return {
        "runs": c.runs,
        "label_regex": c.label_regex,
        "per_run": c.per_run,
        "pairs": pairs_doc(c),
        "rows": comparison_rows_json(c, diff_only),
    }


def pairs_doc(c: Any) -> list[dict[str, Any]]:
    return [
        {
            "a": p.a,
            "b": p.b,
            "both": p.both,
            "agree": p.agree,
            "agreement": round(p.agreement, 4),
            "kappa": None if p.kappa is None else round(p.kappa, 4),
        }
        for p in c.pairs
    ]


@command(bench_app, "compare")
def bench_compare(
    runs: list[str] = typer.Argument(..., help="Two or more run names."),
    diff_only: bool = typer.Option(
        False, "--diff-only", help="Only rows where the runs disagree."
    ),
    label_regex: Optional[str] = typer.Option(
        None,
        "--label-regex",
        help="Compare only what this extracts (first group, or the whole match).",
    ),
    name_field: Optional[str] = typer.Option(
        None, "--name-field", help="Row name from this prompt field (e.g. name or metadata.name)."
    ),
    name_regex: Optional[str] = typer.Option(
        None, "--name-regex", help="Row name from this regex on the prompt's last user message."
    ),
    limit: int = typer.Option(50, "--limit", help="Rows shown (0 = all)."),
    width: int = typer.Option(60, "--width", help="Characters of each answer shown."),
    export: Optional[str] = typer.Option(
        None, "--export", help="Write the joined rows as JSONL (a path inside the home folder)."
    ),
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Join runs by custom_id: answers side by side, disagreements marked, agreement for every pair
    of runs."""
    from daemon.bench.compare import comparison_rows_json

    h = Home.open(home, create=False)
    c = comparison(h, runs, label_regex, name_field, name_regex)
    if export:
        dest = h.inside(export)
        write_jsonl_atomic(dest, comparison_rows_json(c, diff_only))
    if json_out:
        console.print_json(json.dumps(compare_doc(c, diff_only)))
        return
    shown = [r for r in c.rows if r.disagree or not diff_only]
    what = (
        f"label /{c.label_regex}/"
        if c.label_regex
        else "whole answers (whitespace-normalised; tool calls by name and arguments)"
    )
    console.print(
        f"[bold]{len(c.rows)}[/bold] prompts, [bold]{c.disagreements}[/bold] "
        f"with disagreement; comparing {what}",
        highlight=False,
    )
    t = Table(title="answers" + (" (disagreements only)" if diff_only else ""))
    t.add_column("", width=1)
    t.add_column("prompt", overflow="fold", max_width=24)
    has_ref = any(r.reference is not None for r in shown)
    if has_ref:
        t.add_column("reference", overflow="fold")
    for run in c.runs:
        t.add_column(run, overflow="fold")
    for r in shown[: limit or None]:
        cells = []
        for cell in r.cells:
            if cell is None:
                cells.append("[dim]—[/dim]")
            else:
                text = (
                    f"[bold]{escape(cell.value)}[/bold] {escape(clip(cell.text, width))}"
                    if c.label_regex
                    else escape(clip(readable(cell.text), width))
                )
                # ✓ matches the reference; ✂ stopped at max_tokens
                cells.append(
                    ("[green]✓[/green] " if cell.matches else "")
                    + text
                    + (" [yellow]✂[/yellow]" if cell.cut else "")
                )
        mark = "[red]≠[/red]" if r.disagree else "[green]=[/green]"
        t.add_row(
            mark, r.name, *([clip(readable(r.reference or ""), width)] if has_ref else []), *cells
        )
    if shown:
        console.print(t)
    if limit and len(shown) > limit:
        console.print(
            f"… {len(shown) - limit} more rows (--limit 0 shows all, --export writes them)"
        )
    pt = Table(title="agreement per pair of runs")
    for col in ("run A", "run B", "answered by both", "agree", "agreement", "Cohen's kappa"):
        pt.add_column(col)
    for p in pairs_doc(c):
        pt.add_row(
            p["a"],
            p["b"],
            str(p["both"]),
            str(p["agree"]),
            f"{100 * p['agreement']:.1f}%",
            dash(p["kappa"], "{:.3f}"),
        )
    console.print(pt)
    for pr in c.per_run:
        extra = f", no label in {pr['no_label']}" if pr["no_label"] else ""
        if pr["with_reference"]:
            extra += (
                f", matches the reference in {pr['match_reference']} of "
                f"{pr['with_reference']} ({pr['match_reference'] / pr['with_reference']:.0%})"
            )
        if pr["cut"]:
            extra += f", {pr['cut']} cut at max_tokens (✂)"
        console.print(
            f"{pr['run']}: {pr['results']} results, {pr['errors']} errors{extra}", highlight=False
        )
    if export:
        console.print(
            f"exported {len([r for r in c.rows if r.disagree or not diff_only])} "
            f"rows → {h.inside(export)}"
        )
