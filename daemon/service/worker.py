"""One job from start to end: curate (unless already done), train, record the outcome in the queue.

The daemon runs this in a child process (`python -m daemon.service.worker --home H --job N`) so
that a crash, an OOM kill or a NaN never takes the daemon down; `trainctl train` runs it in the
foreground.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from daemon.atomic import read_json
from daemon.config import Settings, load_settings, settings_from_dict
from daemon.devices import Devices, Placement
from daemon.errors import InputFileError, TrainctlError, TrainingError
from daemon.home import Home
from daemon.jobs import TERMINAL, WAITING, Job, JobQueue, JobState
from daemon.models.loading import check_quantization
from daemon.parent_death import die_with_parent
from daemon.service.job_lock import hold_job

EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 75
PLACEMENT_ENV = "TRAINCTL_PLACEMENT"
"""The daemon hands its child the job's placement (GPUs, processes, port) as JSON in this
variable."""


def best_checkpoint_note(best: dict[str, Any] | None) -> str:
    """', best: checkpoint-N (EM 90%, +20 points over the last evaluation) in adapter-best/' for
    the queue."""
    if not best:
        return ""
    if best["metric"] == "exact_match":
        fig, gain = f"EM {best['value']:.0%}", f"{100 * best['gain_over_last']:+.0f} points over"
    else:
        fig, gain = (
            f"{best['metric']} {best['value']:.4f}",
            f"{best['gain_over_last']:.4f} lower than",
        )
    if best["is_last"]:
        return f", best: the last step ({fig})"
    return f", best: {best['checkpoint']} ({fig}, {gain} the last evaluation) in adapter-best/"


def job_settings(home: Home, job: Job) -> Settings:
    """A resumed job trains with the settings it started with (run/config.json), not today's
    trainctl.toml."""
    saved = read_json(home.run_dir(job.id) / "config.json")
    if saved:
        return settings_from_dict(saved)
    return load_settings(home.settings_file, job.overrides_dict)


def _curate(
    home: Home, q: JobQueue, job: Job, settings: Settings, echo: Callable[[str], None]
) -> Path:
    from daemon.curation.curator import Curator, dataset_stamp
    from daemon.models.loading import load_tokenizer

    # A job curated again after a stop: its "stopped…" message no longer holds (a new job keeps its
    # note)
    again = {"message": None} if job.attempts else {}
    q.transition(
        job.id,
        JobState.CURATING,
        worker_pid=os.getpid(),
        started_at=job.started_at or time.time(),
        attempts=job.attempts + 1,
        **again,
    )
    t = settings.train
    tok = load_tokenizer(t.model, home.models, t.trust_remote_code)
    src = Path(job.file_path)
    out = home.unique_path(
        home.datasets, home.dataset_dir(Path(job.file_name).stem, dataset_stamp()).name
    )
    try:
        result = Curator(settings.curation, t, tokenizer=tok, search_dir=home.root).run(src, out)
    except InputFileError as exc:
        # Said of the file as the user dropped it, not of its timestamped copy in inbox/processing/
        raise InputFileError(str(exc).replace(src.name, job.file_name)) from exc
    share = result.rejected / max(1, result.records)
    echo(
        f"job {job.id}: curated {job.file_name}: {result.records} "
        f"records, {result.total_accepted} accepted (train "
        f"{result.accepted['train']}, val {result.accepted['val']}, test "
        f"{result.accepted['test']}), {result.rejected} rejected -> {out}"
    )
    if share > settings.curation.max_rejected_fraction:
        q.update(job.id, dataset_dir=str(out))
        raise InputFileError(
            f"{result.rejected} of {result.records} records ({share:.0%}) were rejected, more "
            f"than curation.max_rejected_fraction = {settings.curation.max_rejected_fraction:.0%} "
            f"— run `trainctl rejected {out}` to see why"
        )
    return out


def job_placement(q: JobQueue, job: Job, settings: Settings) -> Placement:
    """Where the job runs: what the daemon gave it, or (run in the foreground) what this machine
    offers now."""
    given = os.environ.get(PLACEMENT_ENV)
    if given:
        return Placement.from_dict(json.loads(given))
    place = Devices(settings.daemon).take(job.id, settings)
    assert place is not None  # nothing else is held in a fresh ledger
    q.update(job.id, devices=json.dumps(place.to_dict()))
    return place


def _train(
    home: Home,
    job: Job,
    dataset: Path,
    settings: Settings,
    place: Placement,
    echo: Callable[[str], None],
    in_child: bool,
) -> Any:
    """Train in this process (one process), under torchrun (several on this machine) or on a Ray
    cluster."""
    from daemon.training.recipe import LoRARecipe, RunContext, TrainOutcome

    if place.backend == "local" and place.nproc == 1:
        recipe = LoRARecipe(
            RunContext(
                home,
                job.id,
                dataset,
                settings,
                echo=echo,
                watch_parent=in_child,
                placement=place.to_dict(),
            )
        )
        recipe.setup()
        recipe.train()
        return recipe.finish()
    if place.backend == "ray":
        from daemon.distributed.ray_cluster import run_on_ray

        doc = run_on_ray(home, job.id, dataset, settings, place, echo)
    else:
        from daemon.distributed.torchrun import run_torchrun

        doc = run_torchrun(home, job.id, dataset, settings, place, echo)
    if doc.get("error"):
        raise TrainingError(doc["error"])
    return TrainOutcome(
        interrupted=doc["interrupted"],
        steps=doc["steps"] or 0,
        adapter_dir=Path(doc["adapter_dir"]) if doc.get("adapter_dir") else None,
        resumed_from=doc.get("resumed_from"),
        final_loss=doc.get("final_loss"),
        metrics=doc.get("metrics") or {},
    )


def run_job(
    home: Home, job_id: int, echo: Callable[[str], None] = print, in_child: bool = False
) -> JobState:
    """Run job `job_id` to DONE, INTERRUPTED (PAUSED, CANCELLED if asked) or FAILED; returns the
    state it ends in."""
    # Before anything is read or written: a previous worker of this job may still be saving (daemon
    # killed alone)
    try:
        lock = hold_job(home.run_dir(job_id), job_id, echo)
    except TrainctlError as exc:
        with JobQueue(home.jobs_db) as queue:
            queue.transition(
                job_id, JobState.FAILED, error=str(exc), worker_pid=None, message="not started"
            )
        echo(f"job {job_id}: failed — {exc}")
        return JobState.FAILED
    q = JobQueue(home.jobs_db)
    try:
        job = q.get(job_id)
        if job.state not in WAITING and job.worker_pid != os.getpid():
            # Cancelled (or otherwise moved on) between the daemon starting this worker and now:
            # nothing to do
            echo(f"job {job.id} is {job.state.value}; not started")
            return job.state
        try:
            settings = job_settings(home, job)
            # before any work is done
            check_quantization(settings.train.quantization, settings.train.device)
            place = job_placement(q, job, settings)
            if job.dataset_dir and (Path(job.dataset_dir) / "stats.json").exists():
                dataset = Path(job.dataset_dir)
                # the last attempt's "stopped at step N; resumes…" no longer holds
                q.transition(
                    job.id,
                    JobState.TRAINING,
                    worker_pid=os.getpid(),
                    attempts=job.attempts + 1,
                    message=None,
                )
            else:
                dataset = _curate(home, q, job, settings, echo)
                q.transition(
                    job.id,
                    JobState.TRAINING,
                    dataset_dir=str(dataset),
                    run_dir=str(home.run_dir(job.id)),
                )
            outcome = _train(home, job, dataset, settings, place, echo, in_child)
            if outcome.interrupted:
                # INTERRUPTED, or PAUSED / CANCELLED when that is why it was stopped (`trainctl
                # pause/cancel`)
                ended = q.stopped(
                    job.id,
                    f"stopped at step {outcome.steps}; resumes from its checkpoint on restart",
                )
                echo(f"job {job.id}: {ended.state.value} at step {outcome.steps}, checkpoint kept")
                return ended.state
            evals = {
                k: outcome.metrics.get(k) or {}
                for k in ("train_eval", "test_eval", "base_test_eval")
            }
            em = {k: v.get("exact_match") for k, v in evals.items()}
            msg = (
                f"{outcome.steps} steps, final loss {outcome.final_loss:.4f}"
                if outcome.final_loss is not None
                else f"{outcome.steps} steps"
            )
            # Each exact match says which set it is measured on and how many examples that set has
            if em["train_eval"] is not None:
                msg += (
                    f", exact match on {evals['train_eval'].get('count', '?')} "
                    f"training examples {em['train_eval']:.0%}"
                )
            if em["test_eval"] is not None:
                base = (
                    f"{em['base_test_eval']:.0%}"
                    if em["base_test_eval"] is not None
                    else "not measured"
                )
                msg += (
                    f", on {evals['test_eval'].get('count', '?')} held-out "
                    f"test examples {em['test_eval']:.0%} (base model {base})"
                )
            msg += best_checkpoint_note(outcome.metrics.get("best"))
            if outcome.metrics.get("stopped_early"):
                msg += f"; {outcome.metrics['stopped_early']}"
            if outcome.resumed_from:
                msg += f", resumed from {outcome.resumed_from}"
            q.transition(
                job.id,
                JobState.DONE,
                adapter_dir=str(outcome.adapter_dir),
                worker_pid=None,
                message=msg,
            )
            echo(f"job {job.id}: done — {msg}; adapter in {outcome.adapter_dir}")
            return JobState.DONE
        except TrainctlError as exc:
            now = q.get(job.id).state
            if now in TERMINAL | {JobState.PAUSED}:  # cancelled or paused as it started
                return now
            q.transition(
                job.id,
                JobState.FAILED,
                error=str(exc),
                worker_pid=None,
                message="bad input" if isinstance(exc, InputFileError) else "training failed",
            )
            echo(f"job {job.id}: failed — {exc}")
            return JobState.FAILED
        except Exception as exc:  # anything else is a crash of this job, never of the daemon
            log = home.run_dir(job.id) / "error.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_text(traceback.format_exc())
            err = f"{type(exc).__name__}: {exc} (traceback in {log})"
            q.transition(
                job.id, JobState.FAILED, error=err, worker_pid=None, message="training crashed"
            )
            echo(f"job {job.id}: crashed — {err}")
            return JobState.FAILED
    finally:
        q.close()
        lock.close()  # the next worker of this job may start


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m daemon.service.worker")
    p.add_argument("--home", required=True)
    p.add_argument("--job", type=int, required=True)
    a = p.parse_args(argv)
    die_with_parent()
    home = Home.open(a.home)
    state = run_job(home, a.job, echo=lambda s: print(s, flush=True), in_child=True)
    return {
        JobState.DONE: EXIT_OK,
        JobState.INTERRUPTED: EXIT_INTERRUPTED,
        JobState.PAUSED: EXIT_INTERRUPTED,
        JobState.CANCELLED: EXIT_INTERRUPTED,
    }.get(state, EXIT_FAILED)


if __name__ == "__main__":
    sys.exit(main())
