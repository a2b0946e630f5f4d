"""Wall-time cost of the collectors: the same LoRA training with a bare transformers Trainer +
peft, and with every collector on, runs interleaved in one process; the cost of the default
fixed-evaluation schedule is printed apart.

Target: all collectors (evaluation off) / bare <= 1.03.
Usage: python benchmarks/collector_overhead.py [--steps 120] [--rounds 3] [--model
builtin:smollm2-135m] On a GPU pass a bigger random-init model, e.g. --model random:llama-150m
(built locally, no download).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _random_llama(spec: str, models_dir: Path):
    """random:llama-150m -> a random-init Llama of about that size (for GPU measurements without
    downloads)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    size = spec.split("-")[-1]
    hidden, layers = {"150m": (768, 12), "400m": (1024, 24), "1b": (2048, 16)}[size]
    cfg = LlamaConfig(
        vocab_size=32000,
        hidden_size=hidden,
        intermediate_size=hidden * 8 // 3,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 64,
        num_key_value_heads=hidden // 64,
        max_position_embeddings=1024,
    )
    torch.manual_seed(0)
    path = models_dir / spec.replace(":", "_")
    if not path.exists():
        LlamaForCausalLM(cfg).save_pretrained(path)
    return str(path)


class CallbackClock:
    """Adds up the time spent inside collectors' hooks and callbacks: the overhead measured from
    the inside, free of the run-to-run noise that the wall-time ratio carries on a shared
    machine."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def wrap(self, obj) -> None:
        for name in dir(obj):
            if (name.startswith("on_") or name == "_capture") and callable(getattr(obj, name)):
                setattr(obj, name, self._timed(getattr(obj, name)))

    def _timed(self, fn):
        def inner(*a, **kw):
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                self.seconds += time.perf_counter() - t0

        return inner


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--model", default="builtin:smollm2-135m")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch CPU threads (0 = torch's default). 1 steadies the wall times on a small "
        "shared VM.",
    )
    a = ap.parse_args()

    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    from benchmarks.prepared_job import prepare, timed_train
    from daemon.training.recipe import build_model, resolved_config, training_args
    from daemon.training.status_writer import StatusWriter
    from daemon.training.wiring import build_collectors

    if a.model.startswith("random:"):
        model_path = _random_llama(a.model, Path(tempfile.mkdtemp(prefix="trainctl-random-")))
        # any tokenizer works for timing: builtin:tiny's 262 ids fit the 32k vocabulary
        job = prepare(model_path, a.steps, a.batch_size, tok_model="builtin:tiny")
    else:
        job = prepare(a.model, a.steps, a.batch_size)
    ctx, tok, rows, s, home = job.ctx, job.tok, job.rows, job.ctx.settings, job.ctx.home
    print(f"precision: {resolved_config(ctx)['precision']}")

    def run(kind: str) -> float:
        s.train.eval_steps = 0 if kind == "all+eval" else -1
        model = build_model(ctx)
        run_dir = home.run_dir({"bare": 1, "all": 2, "all+eval": 3}[kind])
        b = job.batching()
        args = training_args(ctx, resolved_config(ctx), model, b.batch_size)
        callbacks = []
        clock = CallbackClock()
        if kind != "bare":
            cols = build_collectors(
                s.train, home, ctx.job_id, ctx.dataset_dir, run_dir, tok, rows, a.steps, model
            )
            callbacks = [
                *cols.callbacks(),
                StatusWriter(
                    run_dir / "status.json", run_dir / "metrics.jsonl", {}, list(cols.callbacks())
                ),
            ]
            if kind == "all":
                for cb in callbacks:
                    clock.wrap(cb)
        _, wall = timed_train(job, model, args, callbacks, b)
        if kind == "all":
            inside.append(clock.seconds / (wall - clock.seconds))
        return wall

    inside: list[float] = []

    times: dict[str, list[float]] = {"bare": [], "all": [], "all+eval": []}
    run("bare")  # warm-up: first-run costs (allocator, kernels) must not count against either side
    for r in range(a.rounds):
        order = ["bare", "all", "all+eval"] if r % 2 == 0 else ["all", "bare", "all+eval"]
        for kind in order:
            times[kind].append(run(kind))
    med = {k: statistics.median(v) for k, v in times.items()}
    dev = (
        "cuda: " + torch.cuda.get_device_name()
        if torch.cuda.is_available()
        else f"cpu, {torch.get_num_threads()} torch threads"
    )
    print(
        f"model {a.model}, {a.steps} steps x batch "
        f"{a.batch_size}, {a.rounds} interleaved rounds, {dev}"
    )
    for k, v in times.items():
        print(f"  {k:9s} median {med[k]:.2f}s  runs {', '.join(f'{x:.2f}' for x in v)}")
    # Each round's pair ran back to back, so the per-round ratio cancels the machine's slow drifts.
    ratio = statistics.median(x / y for x, y in zip(times["all"], times["bare"]))
    share = statistics.median(inside)
    print(
        "all collectors, evaluation off / bare Trainer: median of per-round "
        f"ratios {ratio:.3f}, ratio of medians {med['all'] / med['bare']:.3f}"
    )
    print(
        "time inside the collectors' hooks and callbacks / the rest of training: "
        f"median {share:.2%} (runs {', '.join(f'{x:.2%}' for x in inside)})"
    )
    ok = ratio <= 1.03 and share <= 0.03
    print(f"target <= 1.03 (wall ratio and inside share both): {'PASS' if ok else 'FAIL'}")
    print(
        "default evaluation schedule (about 10 fixed evaluations): "
        f"+{med['all+eval'] - med['all']:.2f}s = "
        f"{(med['all+eval'] / med['all'] - 1):.1%} of the training time"
    )


if __name__ == "__main__":
    main()
