"""Data-parallel bench runs (`[bench] data_parallel_size = N`): N engines side by side, one process
each.

The coordinator (the `trainctl bench run` process) writes the run's spec and run.json, starts one
rank per engine (`python -m daemon.bench.shards --home H --name RUN --rank R --of N`), each seeing
only its own GPUs (tensor x pipeline parallel of them), and waits. Each rank is an ordinary
BenchRunner over the prompts whose custom_id hashes to it (daemon.bench.state.shard_of), appending
to its own results.rank-R.jsonl with its own lock and run.rank-R.json. Every reader (list, compare,
resume) takes the results files together: each prompt's one line is in exactly one of them,
whatever number of ranks wrote them. A stop (SIGTERM/SIGINT) is passed to every rank; a killed
coordinator takes its ranks with it (they die with their parent); `--resume` starts the ranks
again.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from daemon.atomic import read_json, write_json_atomic
from daemon.bench.prompts import scan_prompt_file
from daemon.bench.runner import (
    BenchRunner,
    BenchSpec,
    Outcome,
    check_resume,
    fingerprint,
    load_backend_for,
    scan_results,
)
from daemon.bench.state import BenchState, Progress, RunInfo, count_lines, load_run, results_files
from daemon.config import BenchConfig
from daemon.devices import visible_gpus
from daemon.errors import BenchError
from daemon.home import Home

SPEC_FILE = "spec.json"


def gpu_groups(ranks: int, per_rank: int) -> list[list[int]]:
    """The GPUs of each rank: consecutive groups of `per_rank` (tensor x pipeline parallel); [] on
    CPU. Raises when the machine has GPUs but too few for every rank."""
    gpus = visible_gpus("all")
    if not gpus:
        return [[] for _ in range(ranks)]
    if len(gpus) < ranks * per_rank:
        raise BenchError(
            f"data_parallel_size {ranks} x {per_rank} GPU(s) per engine needs {ranks * per_rank} "
            f"GPUs; this machine shows {len(gpus)} — lower bench.data_parallel_size"
        )
    return [gpus[i * per_rank : (i + 1) * per_rank] for i in range(ranks)]


def _spec_doc(spec: BenchSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "model": spec.model,
        "prompts": str(spec.prompts),
        "adapter": str(spec.adapter) if spec.adapter else None,
        "cfg": dataclasses.asdict(spec.cfg),
        "job_id": spec.job_id,
        "limit": spec.limit,
    }


def _spec_from(doc: dict[str, Any]) -> BenchSpec:
    return BenchSpec(
        name=doc["name"],
        model=doc["model"],
        prompts=Path(doc["prompts"]),
        adapter=Path(doc["adapter"]) if doc["adapter"] else None,
        cfg=BenchConfig(**doc["cfg"]),
        job_id=doc["job_id"],
        limit=doc.get("limit"),
    )


def _summed(run_dir: Path, info: RunInfo, ranks: int) -> Progress:
    """The run's progress at its end: every results file's lines (exact), and the ranks' generation
    time (they run side by side: the longest counts)."""
    prog = Progress()
    for f in results_files(run_dir):
        p = scan_results(f)[2]
        prog.done += p.done
        prog.errors += p.errors
        prog.prompt_tokens += p.prompt_tokens
        prog.completion_tokens += p.completion_tokens
    prog.active_seconds = _live(run_dir, info, ranks).active_seconds
    return prog


def _live(run_dir: Path, info: RunInfo, ranks: int) -> Progress:
    """The run's progress while it runs: the sum of the ranks' own run.rank-R.json (each rank
    rewrites its own every few seconds), so the coordinator does not re-read every results file
    each second. Each rank counts its share's answers, so the sum counts every answer once (tokens:
    this session's files only, until `_summed`)."""
    prog = Progress(active_seconds=info.progress.active_seconds)
    session = 0.0
    for i in range(ranks):
        r = load_run(run_dir, f"run.rank-{i}.json")
        if r is None:
            continue
        prog.done += r.progress.done
        prog.errors += r.progress.errors
        prog.prompt_tokens += r.progress.prompt_tokens
        prog.completion_tokens += r.progress.completion_tokens
        session = max(session, r.progress.active_seconds)
    prog.active_seconds = max(prog.active_seconds, session)
    return prog


def run_sharded(
    home: Home,
    spec: BenchSpec,
    resume: bool = False,
    retry_errors: bool = False,
    on_progress: Callable[[RunInfo], None] | None = None,
    log: Callable[[str], None] = print,
) -> Outcome:
    ranks = spec.cfg.data_parallel_size
    run_dir = home.bench_dir(spec.name)
    existing = load_run(run_dir)
    scan = scan_prompt_file(spec.prompts)
    fp = fingerprint(spec, scan.sha256)
    check_resume(spec.name, existing, resume, fp, log)
    groups = gpu_groups(ranks, spec.cfg.tensor_parallel_size * spec.cfg.pipeline_parallel_size)
    total = min(scan.total, spec.limit) if spec.limit else scan.total
    info = existing or RunInfo(
        name=spec.name,
        fingerprint=fp,
        prompts_path=str(spec.prompts),
        total=total,
        job_id=spec.job_id,
    )
    info.total, info.limit = total, spec.limit
    before = sum(count_lines(f) for f in results_files(run_dir))
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_dir / SPEC_FILE, _spec_doc(spec))
    info.pid, info.sessions = os.getpid(), info.sessions + 1
    info.transition(BenchState.RUNNING, f"{ranks} engines side by side")
    info.save(run_dir / "run.json")
    procs = []
    for rank, gpus in enumerate(groups):
        cmd = [
            sys.executable,
            "-m",
            "daemon.bench.shards",
            "--home",
            str(home.root),
            "--name",
            spec.name,
            "--rank",
            str(rank),
            "--of",
            str(ranks),
        ]
        if (run_dir / f"run.rank-{rank}.json").exists():
            cmd.append("--resume")
        if retry_errors:
            cmd.append("--retry-errors")
        env = {
            **os.environ,
            **({"CUDA_VISIBLE_DEVICES": ",".join(map(str, gpus))} if gpus else {}),
        }
        # A session of its own: a Ctrl-C on the terminal reaches the coordinator alone, which
        # passes it on once. Reaching a rank from both, one press would count as the second that
        # abandons the requests in flight. The ranks still die with the coordinator
        # (PR_SET_PDEATHSIG, main below).
        procs.append(subprocess.Popen(cmd, env=env, start_new_session=True))
    log(
        f"{ranks} ranks started (pids {', '.join(str(p.pid) for p in procs)}); "
        "each writes results.rank-R.jsonl"
    )

    def forward(signum: int, frame: Any) -> None:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while any(p.poll() is None for p in procs):
            time.sleep(1.0)
            info.progress = _live(run_dir, info, ranks)
            info.save(run_dir / "run.json")
            if on_progress:
                on_progress(info)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    states = [
        getattr(load_run(run_dir, f"run.rank-{i}.json"), "state", BenchState.FAILED)
        for i in range(ranks)
    ]
    info.progress = _summed(run_dir, info, ranks)
    if all(s is BenchState.COMPLETED for s in states) and info.progress.done >= info.total:
        info.transition(
            BenchState.COMPLETED,
            f"{info.progress.done} results, {info.progress.errors} errors, from {ranks} engines",
        )
    elif any(s is BenchState.FAILED for s in states):
        failed = [
            (i, run)
            for i, s in enumerate(states)
            if s is BenchState.FAILED
            and (run := load_run(run_dir, f"run.rank-{i}.json")) is not None
        ]
        info.transition(
            BenchState.FAILED,
            "a rank failed: " + "; ".join(f"rank {i}: {run.message}" for i, run in failed),
        )
    else:
        info.transition(BenchState.STOPPED, "stopped; `--resume` continues every rank")
    info.save(run_dir / "run.json")
    written = sum(count_lines(f) for f in results_files(run_dir)) - before
    return Outcome(info, run_dir, written, before, 0)


def main(argv: list[str] | None = None) -> int:
    from daemon.parent_death import die_with_parent

    p = argparse.ArgumentParser(prog="python -m daemon.bench.shards")
    p.add_argument("--home", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--rank", type=int, required=True)
    p.add_argument("--of", type=int, required=True)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--retry-errors", action="store_true")
    a = p.parse_args(argv)
    die_with_parent()  # the coordinator went away (killed): stop too; what was written stays
    home = Home.open(a.home)
    spec = _spec_from(read_json(home.bench_dir(a.name) / SPEC_FILE))
    runner = BenchRunner(
        home,
        spec,
        resume=a.resume,
        retry_errors=a.retry_errors,
        shard=(a.rank, a.of),
        log=lambda m: print(f"[rank {a.rank}] {m}", flush=True),
    )
    try:
        outcome = runner.run(load_backend_for(home))
    except BenchError as exc:
        print(f"[rank {a.rank}] {exc}", file=sys.stderr, flush=True)
        return 1
    return 0 if outcome.info.state is BenchState.COMPLETED else 130


if __name__ == "__main__":
    sys.exit(main())
