"""Wall-time cost of recording per-example dynamics from the training forward pass: the same job
(the recipe's batches, precision and collectors, evaluations and snapshots off) with
`train.dynamics` on and off, interleaved in one process over several rounds.

Printed: the median of per-round wall-time ratios (on / off), and the time spent inside the
recorder (its per-pass figures and its per-step append) as a share of the rest of training, which
is free of the run-to-run noise a small shared machine adds to wall times. Target: ratio <= 1.02.
Usage: python benchmarks/dynamics_cost.py [--steps 60] [--rounds 3] [--model builtin:smollm2-135m]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--model", default="builtin:smollm2-135m")
    ap.add_argument("--batch-size", type=int, default=8)
    a = ap.parse_args()

    import torch

    from benchmarks.prepared_job import prepare, timed_train
    from daemon.runs.dynamics import read_records
    from daemon.training.recipe import build_model, resolved_config, training_args
    from daemon.training.wiring import build_collectors

    job = prepare(a.model, a.steps, a.batch_size)
    ctx, home = job.ctx, job.ctx.home
    inside: list[float] = []
    passes: list[int] = []

    def run(on: bool, n: int) -> float:
        ctx.settings.train.dynamics = on
        model = build_model(ctx)
        run_dir = home.run_dir(n)
        b = job.batching()
        args = training_args(ctx, resolved_config(ctx), model, b.batch_size)
        cols = build_collectors(
            ctx.settings.train,
            home,
            ctx.job_id,
            ctx.dataset_dir,
            run_dir,
            job.tok,
            job.rows,
            a.steps,
            model,
        )
        spent = [0.0]
        rec = cols.dynamics
        # time inside the recorder: the figures per pass and the append per step
        if rec is not None:
            for name in ("record", "on_step_end"):
                fn = getattr(rec, name)

                def timed(*args_, _fn=fn, **kw):
                    t0 = time.perf_counter()
                    try:
                        return _fn(*args_, **kw)
                    finally:
                        spent[0] += time.perf_counter() - t0

                setattr(rec, name, timed)
        _, wall = timed_train(job, model, args, list(cols.callbacks()), b)
        if on:
            inside.append(spent[0] / (wall - spent[0]))
            passes.append(len(read_records(run_dir / "dynamics.bin")))
        return wall

    run(False, 100)  # warm-up: first-run costs must not count against either side
    times: dict[bool, list[float]] = {True: [], False: []}
    for r in range(a.rounds):
        for on in (True, False) if r % 2 == 0 else (False, True):
            times[on].append(run(on, 2 * r + int(on) + 1))
    dev = (
        "cuda: " + torch.cuda.get_device_name()
        if torch.cuda.is_available()
        else f"cpu, {torch.get_num_threads()} torch threads"
    )
    print(
        f"model {a.model}, {a.steps} steps, batching "
        f"{job.batching().report}, {a.rounds} interleaved rounds, {dev}"
    )
    for on in (True, False):
        print(
            f"  dynamics {'on ' if on else 'off'} median {statistics.median(times[on]):.2f}s "
            f" runs {', '.join(f'{x:.2f}' for x in times[on])}"
        )
    ratio = statistics.median(x / y for x, y in zip(times[True], times[False]))
    print(f"per-example passes recorded per run: {passes}")
    print(
        f"dynamics on / off: median of per-round wall ratios {ratio:.3f}; time "
        f"inside the recorder / the rest: median {statistics.median(inside):.2%} "
        f"(runs {', '.join(f'{x:.2%}' for x in inside)})"
    )
    print(f"target <= 1.02: {'PASS' if ratio <= 1.02 else 'FAIL'}")


if __name__ == "__main__":
    main()
