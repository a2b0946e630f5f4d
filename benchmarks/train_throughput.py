"""Training throughput of trainctl's recipe on the real default model, and the precision `train.dtype = "auto"`
picks: the same LoRA steps (Trainer + every collector, evaluations off) in the picked precision and in plain fp32,
interleaved in one process, several rounds.

Real tokens/s counts the non-padding tokens the Trainer saw (`num_input_tokens_seen`) over the wall time of
`trainer.train()`. Printed: each precision's median, their ratio, the final loss of each (the picked precision must
train as well as fp32), and what auto chose and why.
Usage: python benchmarks/train_throughput.py [--steps 20] [--rounds 3] [--model builtin:smollm2-135m]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--model", default="builtin:smollm2-135m")
    ap.add_argument("--batch-size", type=int, default=8)
    a = ap.parse_args()

    import torch

    from benchmarks.prepared_job import prepare, timed_train
    from daemon.training.recipe import _collectors, _model, _training_args, resolved_config

    job = prepare(a.model, a.steps, a.batch_size)
    ctx, s = job.ctx, job.ctx.settings
    picked = resolved_config(ctx)["precision"]
    print(f"auto picks: {picked}")

    def run(dtype: str) -> tuple[float, int, float]:
        """(wall seconds, real tokens, final loss) of `a.steps` steps in precision `dtype`."""
        s.train.dtype = dtype
        s.train.eval_steps = -1
        torch.manual_seed(0)
        model = _model(ctx)
        run_dir = ctx.home.run_dir(1)
        config = resolved_config(ctx)
        callbacks = list(_collectors(ctx, job.tok, job.rows, run_dir, a.steps, model).values())
        trainer, wall = timed_train(job, model, _training_args(ctx, run_dir, config, model), callbacks)
        loss = next(h["loss"] for h in reversed(trainer.state.log_history) if "loss" in h)
        return wall, trainer.state.num_input_tokens_seen, loss

    kinds = {"auto": "auto", "fp32": "fp32"}
    results: dict[str, list[tuple[float, int, float]]] = {k: [] for k in kinds}
    run("fp32")  # warm-up: first-run costs (allocator, page cache, kernels) count against neither side
    for r in range(a.rounds):
        for k in (list(kinds) if r % 2 == 0 else list(reversed(kinds))):
            results[k].append(run(kinds[k]))
    dev = "cuda: " + torch.cuda.get_device_name() if torch.cuda.is_available() else \
        f"cpu, {torch.get_num_threads()} torch threads"
    print(f"model {a.model}, {a.steps} steps x batch {a.batch_size}, {a.rounds} interleaved rounds, {dev}")
    rate = {}
    for k, rows in results.items():
        rates = [tokens / wall for wall, tokens, _ in rows]
        rate[k] = statistics.median(rates)
        print(f"  {k:5s} real tokens/s median {rate[k]:7.1f}  runs {', '.join(f'{x:.1f}' for x in rates)}  "
              f"final loss {', '.join(f'{loss:.4f}' for _, _, loss in rows)}")
    ratios = [(tok_a / wall_a) / (tok_f / wall_f) for (wall_a, tok_a, _), (wall_f, tok_f, _)
              in zip(results["auto"], results["fp32"])]
    print(f"auto ({picked['weights']} weights, autocast {picked['autocast']}) / fp32: median of per-round ratios "
          f"{statistics.median(ratios):.2f}x")


if __name__ == "__main__":
    main()
