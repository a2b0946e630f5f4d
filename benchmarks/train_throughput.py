"""Training throughput and memory: trainctl's recipe against a bare transformers Trainer + peft, same model, same data.

The data: a generated mixed-length instruction set of 2,000 records (passages of log-normally spread length, 20 to
~500 tokens after the chat template; short and long answers), encoded once with the chat template and masks. Each run
trains LoRA (r 16, all linear layers, the same lr) for one epoch over the same `--examples` records and reports real
(non-padding) tokens per second over the wall time of `trainer.train()`, the process's peak memory (RSS on CPU,
`max_memory_allocated` on a GPU) and, after training, the mean loss on 32 fixed training examples (eval mode,
padded batches, the same for every side): packing must train as well as padding.

Sides, each run in a fresh process, interleaved over `--rounds` rounds:
- `bare`: `Trainer` + peft with transformers' default padding collator (`DataCollatorForSeq2Seq`), batch 8, fp32
  (what a user writes by hand);
- `trainctl`: the recipe as a job runs it (padding-free packed batches, `train.dtype = "auto"`, every collector and
  the per-example dynamics, evaluations off);
- `trainctl-padded`: the same with `train.packing = false`, to tell packing's share from precision's.

Printed: per side the median tokens/s, peak memory and loss; trainctl / bare and trainctl / trainctl-padded as the
median of per-round ratios. Target (2-core CPU, builtin:smollm2-135m): trainctl >= 1.3x bare, loss within 2%.
Usage: python benchmarks/train_throughput.py [--examples 96] [--rounds 2] [--model builtin:smollm2-135m]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SIDES = ("bare", "trainctl", "trainctl-padded")
WORDS = ("river stone apple cloud tiger maple ocean lantern copper violet meadow falcon harbor cedar ember "
         "glacier orchid pepper quartz saddle thunder velvet willow yonder zephyr basin candle dune fern grove").split()


def make_records(n: int = 2000, seed: int = 0) -> list[dict]:
    """Instruction records whose passage length is log-normal (median ~40 words, tail to ~400)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        k = min(400, max(3, int(rng.lognormvariate(3.7, 0.9))))
        words = [rng.choice(WORDS) for _ in range(k)]
        kind = i % 3
        if kind == 0:
            q, a = "Reverse the order of these words.", " ".join(reversed(words[:12]))
        elif kind == 1:
            q, a = "How many words are in this passage?", str(k)
        else:
            q, a = "Repeat the passage in upper case.", " ".join(words[:60]).upper()
        out.append({"messages": [{"role": "user", "content": f"{q}\n\n{' '.join(words)}"},
                                 {"role": "assistant", "content": a}]})
    return out


def peak_memory_mb() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(side: str, model_name: str, n: int) -> dict:
    import torch

    from benchmarks.prepared_job import train_seconds
    from daemon.chat.messages import messages_of
    from daemon.chat.render import encode_messages
    from daemon.config import Settings
    from daemon.home import Home
    from daemon.models.loading import load_tokenizer
    from daemon.training.data import PadCollator
    from daemon.training.packing import Batching
    from daemon.training.recipe import RunContext, build_model, resolved_config, total_steps, training_args
    from daemon.training.wiring import build_collectors

    home = Home.open(Path(tempfile.mkdtemp(prefix="trainctl-tput-")))
    s = Settings()
    s.train.model = model_name
    s.train.epochs = 1
    s.train.save_steps = 10**6
    s.train.eval_steps = -1
    s.train.final_eval_examples = 0
    s.train.evolution_examples = 0
    s.train.packing = side == "trainctl"
    tok = load_tokenizer(model_name, home.models)
    records = make_records()
    encoded = [encode_messages(tok, messages_of(r), s.train.max_length) for r in records]
    train = [{"input_ids": e.input_ids, "labels": e.labels} for e in encoded[:n]]
    probe = train[:32]
    if side != "bare":  # as a job has them: each example's index, for the per-example dynamics
        train = [{**e, "index": i} for i, e in enumerate(train)]
    ctx = RunContext(home=home, job_id=1, dataset_dir=home.datasets, settings=s, echo=lambda m: None)
    torch.manual_seed(0)
    model = build_model(ctx)  # the same LoRA (r, alpha, targets) for every side
    run_dir = home.run_dir(1)
    config = resolved_config(ctx)
    if side == "bare":
        from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

        args = TrainingArguments(output_dir=str(run_dir), per_device_train_batch_size=s.train.batch_size,
                                 learning_rate=config["train"]["lr"], num_train_epochs=1, save_strategy="no",
                                 logging_steps=1, report_to="none", use_cpu=not torch.cuda.is_available(),
                                 include_num_input_tokens_seen="non_padding", seed=s.train.seed)
        trainer = Trainer(model=model, args=args, train_dataset=train,
                          data_collator=DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100))
    else:
        b = Batching(train, s.train, tok.pad_token_id)
        args = training_args(ctx, config, model, b.batch_size)
        steps = total_steps(s.train, b.items_per_epoch, b.batch_size)
        collectors = build_collectors(s.train, home, ctx.job_id, ctx.dataset_dir, run_dir, tok, [], steps,
                                      model)
        trainer = b.trainer_class(model=model, args=args, train_dataset=b.dataset, data_collator=b.collator,
                                  callbacks=list(collectors.callbacks()), dynamics=collectors.dynamics)
    wall = train_seconds(trainer)
    real = sum(len(x["input_ids"]) for x in train)
    model.eval()
    with torch.no_grad():  # the same fixed examples, padded, fp32, for every side
        batch = PadCollator(tok.pad_token_id)(probe)
        loss = model(**{k: v.to(model.device) for k, v in batch.items()}).loss.item()
    return {"side": side, "wall": wall, "real_tokens": real, "tokens_seen": trainer.state.num_input_tokens_seen,
            "steps": trainer.state.global_step, "peak_mb": peak_memory_mb(), "loss": loss,
            "precision": config["precision"], "batching": trainer.data_collator.__class__.__name__}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--examples", type=int, default=96)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--model", default="builtin:smollm2-135m")
    ap.add_argument("--worker", choices=SIDES)
    a = ap.parse_args()
    if a.worker:
        print("RESULT " + json.dumps(worker(a.worker, a.model, a.examples)), flush=True)
        return

    import torch

    lengths = [len(json.dumps(r)) for r in make_records()]
    print(f"data: 2000 records, {min(lengths)}..{max(lengths)} JSON bytes (median {statistics.median(lengths):.0f}); "
          f"{a.examples} examples a run, model {a.model}, "
          + ("cuda: " + torch.cuda.get_device_name() if torch.cuda.is_available() else
             f"cpu, {torch.get_num_threads()} torch threads"))
    results: dict[str, list[dict]] = {s: [] for s in SIDES}
    for r in range(a.rounds):
        for side in (SIDES if r % 2 == 0 else tuple(reversed(SIDES))):
            out = subprocess.run([sys.executable, __file__, "--worker", side, "--model", a.model, "--examples",
                                  str(a.examples)], capture_output=True, text=True, cwd=ROOT)
            line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                sys.exit(f"{side} failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
            res = json.loads(line[7:])
            results[side].append(res)
            print(f"  round {r + 1} {side:16s} {res['real_tokens'] / res['wall']:7.1f} real tok/s  "
                  f"{res['steps']} steps  peak {res['peak_mb']:.0f} MB  loss {res['loss']:.4f}", flush=True)

    def rate(x: dict) -> float:
        return x["real_tokens"] / x["wall"]

    for side, rows in results.items():
        print(f"{side:16s} median {statistics.median(rate(x) for x in rows):7.1f} real tok/s, peak "
              f"{statistics.median(x['peak_mb'] for x in rows):.0f} MB, loss "
              f"{statistics.median(x['loss'] for x in rows):.4f}")
    for other in ("bare", "trainctl-padded"):
        ratios = [rate(t) / rate(o) for t, o in zip(results["trainctl"], results[other])]
        loss_gap = [t["loss"] / o["loss"] - 1 for t, o in zip(results["trainctl"], results[other])]
        print(f"trainctl / {other}: {statistics.median(ratios):.2f}x real tokens/s (rounds "
              f"{', '.join(f'{x:.2f}' for x in ratios)}); loss {statistics.median(loss_gap):+.1%}")
    picked = results["trainctl"][0]["precision"]
    print(f"trainctl precision: {picked['weights']} weights, autocast {picked['autocast']} ({picked['reason']})")


if __name__ == "__main__":
    main()
