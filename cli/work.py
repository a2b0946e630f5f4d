"""Commands that do work: `daemon`, `stop`, `train`, `curate`. Heavy modules are imported inside
them."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Optional

import typer

from cli.common import Commands, HomeOpt, console
from cli.settings_flags import COMMON, Overrides, settings_flags
from daemon.atomic import read_json
from daemon.config import PER_FILE_SECTIONS
from daemon.errors import TrainctlError
from daemon.home import Home
from daemon.jobs import pid_alive
from daemon.service import instance_lock

commands = Commands()


def _settings(h: Home, ov: dict[str, Any]):
    from daemon.config import load_settings

    return load_settings(h.settings_file, ov)


def _same_options(ctx: typer.Context, drop: set[str]) -> list[str]:
    """The options this command was given (those not at their default), as a command line again."""
    out: list[str] = []
    for param in ctx.command.params:
        value = ctx.params.get(param.name or "")
        # by its kind, not its class: typer >= 0.26 has click's classes under typer._click
        if (
            param.name in drop
            or param.param_type_name != "option"
            or value is None
            or value == param.default
        ):
            continue
        if getattr(param, "is_flag", False):
            out.append(param.opts[0])
        elif isinstance(value, (list, tuple)):
            out += [part for item in value for part in (param.opts[0], str(item))]
        else:
            out += [param.opts[0], str(value)]
    return out


@commands.command("daemon")
@settings_flags(*COMMON)
def daemon_cmd(
    ctx: typer.Context,
    overrides: Overrides,
    home: HomeOpt = None,
    once: bool = typer.Option(
        False, "--once", help="Process what is in the inbox now, then exit."
    ),
    train_duplicates: bool = typer.Option(
        False,
        "--train-duplicates",
        help="Train files whose content was trained before (daemon.skip_duplicates = false).",
    ),
    slots: Optional[int] = typer.Option(
        None, "--slots", help="Jobs at once on a machine without GPUs to hand out (daemon.slots)."
    ),
    detach: bool = typer.Option(
        False,
        "--detach",
        help="Run in the background: output to "
        "data/logs/daemon.log (`trainctl logs -f`), stop with `trainctl stop`.",
    ),
) -> None:
    """Watch inbox/ and work the queue (training flags apply to jobs queued by this run)."""
    from daemon.service.loop import Daemon, setup_logging

    h = Home.open(home)
    h.check_writable()  # one line now, not a traceback from the log file or the queue
    if detach:
        from daemon.service.background import start_detached

        _settings(h, {})  # a broken trainctl.toml is reported here, not only in the log
        pid = start_detached(h, _same_options(ctx, {"home", "detach"}))
        console.print(
            f"[green]daemon started[/green] (pid {pid}) on {h.root}; "
            "its log: `trainctl logs -f`; stop it with `trainctl stop`",
            highlight=False,
        )
        return
    # [train] and [curation] go with each job this daemon queues; the rest are the daemon's own
    ov = {section: values for section, values in overrides.items() if section in PER_FILE_SECTIONS}
    own = {section: dict(values) for section, values in overrides.items()}
    if train_duplicates:
        own.setdefault("daemon", {})["skip_duplicates"] = False
    if slots is not None:
        own.setdefault("daemon", {})["slots"] = slots
    settings = _settings(h, own)
    setup_logging(h.daemon_log)
    d = Daemon(h, settings, job_overrides=ov)
    raise typer.Exit(d.run(once=once))


@commands.command("stop")
def stop(
    home: HomeOpt = None,
    timeout: float = typer.Option(300, help="Seconds to wait for the checkpoint."),
    no_wait: bool = typer.Option(False, "--no-wait", help="Ask and return at once."),
) -> None:
    """Ask the running daemon to stop: the current job saves a checkpoint and resumes on the next
    start."""
    h = Home.open(home, create=False)
    doc = read_json(h.daemon_status) or {}
    pid = doc.get("pid")
    # The daemon's lock, not the pid alone: a pid left in daemon.json may belong to another process
    # by now
    if (
        doc.get("state") == "stopped"
        or not isinstance(pid, int)
        or not pid_alive(pid)
        or not instance_lock.held(h.status_dir)
    ):
        raise TrainctlError(
            f"no daemon is running for {h.root} — start one with `trainctl daemon`"
        )
    running = sorted(doc.get("running_jobs") or {}) or (
        [doc["current_job"]] if doc.get("current_job") else []
    )
    os.kill(pid, signal.SIGTERM)
    if running:
        jobs = ", ".join(str(job) for job in running)
        console.print(f"asked daemon (pid {pid}) to stop; job {jobs} saves a checkpoint first")
    else:
        console.print(f"asked daemon (pid {pid}) to stop; it was idle")
    if no_wait:
        return
    deadline = time.time() + timeout
    while pid_alive(pid) and time.time() < deadline:
        time.sleep(0.2)
    if pid_alive(pid):
        raise TrainctlError(
            f"the daemon (pid {pid}) is still saving after {timeout:.0f}s — check "
            "`trainctl status`, or wait longer with `trainctl stop --timeout 900`"
        )
    console.print(
        "[green]daemon stopped[/green]"
        + (
            "; `trainctl daemon` resumes the interrupted job" + ("s" if len(running) > 1 else "")
            if running
            else ""
        )
    )


@commands.command("train")
@settings_flags(*COMMON)
def train_cmd(
    overrides: Overrides,
    file: Path = typer.Argument(..., help="A .jsonl or .json file of examples."),
    home: HomeOpt = None,
    force: bool = typer.Option(
        False, "--force", help="Train even if this content was trained before."
    ),
    priority: int = typer.Option(
        0,
        "--priority",
        help="The job's priority if it is interrupted and left "
        "to the daemon to resume (higher starts first).",
    ),
) -> None:
    """Curate and train one file in the foreground, without the daemon."""
    from daemon.hashing import file_sha256
    from daemon.jobs import JobQueue, JobState
    from daemon.service.worker import run_job

    if not file.is_file():
        raise TrainctlError(f"{file} is not a file — pass the path of a .jsonl or .json file")
    h = Home.open(home)
    h.check_writable()
    ov = overrides
    _settings(h, ov)  # report settings problems before any work
    sha = file_sha256(file)
    with JobQueue(h.jobs_db) as q:
        same = q.find_same_content(sha, overrides=ov)
        if same and not force:
            raise TrainctlError(
                f"{file.name} has the same content and settings as job "
                f"{same.id} ({same.state.value}) — add --force to train it again"
            )
        # Created already CURATING with our pid, so a running daemon never picks it up.
        job = q.enqueue(
            file.name,
            file.resolve(),
            sha,
            forced=force,
            overrides=ov,
            initial=JobState.CURATING,
            worker_pid=os.getpid(),
            priority=priority,
        )
    console.print(
        f"job {job.id}: training {file} in the foreground (Ctrl-C checkpoints and stops)"
    )
    state = run_job(h, job.id, echo=lambda s: console.print(s, highlight=False))
    if state == JobState.FAILED:
        with JobQueue(h.jobs_db, readonly=True) as q:
            raise TrainctlError(f"job {job.id} failed: {q.get(job.id).error}")
    if state == JobState.INTERRUPTED:
        console.print(f"[yellow]job {job.id} interrupted[/yellow]; `trainctl daemon` resumes it")
    elif state in (JobState.PAUSED, JobState.CANCELLED):
        console.print(f"[yellow]job {job.id} {state.value}[/yellow]")


def _count_lines(file: Path) -> int | None:
    """Lines in a JSONL file (for the progress bar's total); None for a JSON array."""
    with open(file, "rb") as fh:
        head = fh.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
        if head.startswith(b"["):
            return None
        fh.seek(0)
        n, last = 0, b""
        for block in iter(lambda: fh.read(1 << 22), b""):
            n += block.count(b"\n")
            last = block
        return n + (1 if last and not last.endswith(b"\n") else 0)


@commands.command("curate")
@settings_flags("model", "max_length")
def curate_cmd(
    overrides: Overrides,
    file: Path = typer.Argument(..., help="A .jsonl or .json file of examples."),
    home: HomeOpt = None,
) -> None:
    """Curation only: validate, de-duplicate, split; prints the dataset folder."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from daemon.curation.curator import Curator, dataset_stamp
    from daemon.models.loading import load_tokenizer

    if not file.is_file():
        raise TrainctlError(f"{file} is not a file — pass the path of a .jsonl or .json file")
    # a link you name yourself is followed here (the reader never follows one)
    file = file.resolve()
    h = Home.open(home)
    s = _settings(h, overrides)
    tok = load_tokenizer(s.train.model, h.models, s.train.trust_remote_code, light=True)
    out = h.unique_path(h.datasets, h.dataset_dir(file.stem, dataset_stamp()).name)
    total = _count_lines(file)
    with Progress(
        TextColumn("curating"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("records"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as prog:
        task = prog.add_task("curate", total=total)
        result = Curator(
            s.curation,
            s.train,
            tokenizer=tok,
            search_dir=h.root,
            progress=lambda n: prog.update(task, completed=n),
        ).run(file, out)
    blank = f" ({result.blank_lines} blank lines skipped)" if result.blank_lines else ""
    console.print(
        f"{result.records} records{blank}: {result.total_accepted} accepted "
        f"(train {result.accepted['train']}, val {result.accepted['val']}, "
        f"test {result.accepted['test']}), {result.rejected} rejected"
    )
    if result.by_reason:
        top = ", ".join(
            f"{k} {v}" for k, v in sorted(result.by_reason.items(), key=lambda kv: -kv[1])
        )
        console.print(f"rejected: {top} — `trainctl rejected {out}` says why and what to fix")
    share = result.rejected / max(1, result.records)
    if share > s.curation.max_rejected_fraction:
        console.print(
            f"[yellow]{share:.0%} rejected is more than curation.max_rejected_fraction "
            f"= {s.curation.max_rejected_fraction:.0%}: a daemon job on this file "
            "would fail[/yellow]"
        )
    console.print(str(out))


@commands.command("export")
def export_cmd(
    job: int = typer.Argument(..., help="A finished job's id (`trainctl queue`)."),
    merge: bool = typer.Option(
        False,
        "--merge",
        help="The base model with the LoRA merged in: a plain "
        "transformers folder (vLLM loads it as any model).",
    ),
    best: bool = typer.Option(
        False, "--best", help="The best checkpoint's adapter (adapter-best/)."
    ),
    checkpoint: Optional[int] = typer.Option(
        None,
        "--checkpoint",
        help="The adapter of the kept checkpoint at this step (`bench sweep` judges them).",
    ),
    to: Optional[Path] = typer.Option(
        None,
        "--to",
        help="Destination folder (default: "
        "data/exports/job-N-adapter or -merged); not inside the inbox.",
    ),
    home: HomeOpt = None,
) -> None:
    """A finished job's adapter as is, or merged into its base model, as a folder transformers and
    vLLM load."""
    from daemon.bench.engines import serve_command
    from daemon.models.export import export_job

    h = Home.open(home, create=False)
    console.print(
        f"exporting job {job}" + (" merged into its base model" if merge else "'s adapter") + " …"
    )
    out = export_job(h, job, merge=merge, best=best, to=to, checkpoint=checkpoint)
    console.print(f"[green]{out}[/green]", highlight=False)
    python = sys.executable  # the venv's interpreter, which has vLLM
    if merge:
        console.print(
            f"load it with AutoModelForCausalLM.from_pretrained({str(out)!r})", highlight=False
        )
        console.print(
            f"serve it with vLLM: {serve_command(str(out), python)}",
            highlight=False,
            soft_wrap=True,
        )
    else:
        from daemon.models.loading import resolve_model_path

        base = resolve_model_path(read_json(out / "trainctl_export.json")["base_model"], h.models)
        rank = read_json(out / "adapter_config.json").get("r", 16)
        console.print(
            f"serve it without merging: {serve_command(base, python)} "
            f"--enable-lora --max-lora-rank {rank} --lora-modules job{job}={out}",
            highlight=False,
            soft_wrap=True,
        )
