"""Training throughput and memory: trainctl's recipe against the trainers people would otherwise
pick, with the same model, the same data and the same trained tokens.

The data: a generated mixed-length instruction set of 2,000 records (passages of log-normally
spread length, 20 to ~500 tokens after the chat template; short and long answers), encoded once
with the chat template and masks (`labels` -100 on the prompt): every side gets these token ids and
labels, so every side trains the same answer tokens (counted in every batch and printed). Each run
trains LoRA (r 16, all linear layers, the same lr, warmup and linear schedule) for one epoch over
the same `--examples` records and reports real (non-padding) tokens per second over the wall time
of `trainer.train()`, the positions the forward passes computed (padding included), the process's
peak memory (RSS on CPU, `max_memory_allocated` on a GPU), MFU (6 x parameters x real tokens /
time, over the bf16 matmul rate measured on this machine before the rounds) and, after training,
the mean loss on 32 fixed training examples (eval mode, padded batches, the same for every side).

Sides, each run in a fresh process, interleaved over `--rounds` rounds (the default four, others
with `--sides`):
- `trainctl`: the recipe as a job runs it (padding-free packed batches, `train.dtype = "auto"`, the
  output layer on the labelled positions only, every collector and the per-example dynamics,
  evaluations off);
- `trl-padding-free`: TRL's `SFTTrainer` with `padding_free=True`, bf16 (its documented setting for
  mixed lengths: each batch of 8 examples flattened into one row);
- `trl-packing`: `SFTTrainer` with `packing=True` (best-fit decreasing into rows of
  `train.max_length`), bf16, as many packed rows per step as give at most the optimizer steps of
  batches of 8 examples;
- `trainer-bf16`: transformers' `Trainer` + peft with its padding collator
  (`DataCollatorForSeq2Seq`), batch 8, bf16 (what a user writes by hand);
- `bare`: the same `Trainer` in fp32 (the side this benchmark first compared against);
- `trainctl-padded`: trainctl with `train.packing = false`, to tell packing's share from
  precision's;
- `trainctl-full-logits`: trainctl with the output layer over every position, to measure that
  change alone.

Printed: per side the median tokens/s, positions, peak memory, MFU and loss; trainctl / each other
side as the median of per-round ratios. Target (2-core CPU, builtin:smollm2-135m): trainctl >= 1.4x
the best peer (TRL or Trainer), at a loss no worse than theirs. TRL is a benchmark-only dependency:
`pip install -e ".[bench]"`. Usage: python benchmarks/train_throughput.py [--examples 160]
[--rounds 2] [--sides trainctl,trl-packing,...]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import random
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PEERS = ("trl-padding-free", "trl-packing", "trainer-bf16")
DEFAULT_SIDES = ("trainctl", *PEERS)
SIDES = (*DEFAULT_SIDES, "bare", "trainctl-padded", "trainctl-full-logits")
BATCH = 8
"""Examples per optimizer step for the peers (trainctl's packed steps hold about as many
tokens)."""
WORDS = (
    "river stone apple cloud tiger maple ocean lantern copper violet "
    "meadow falcon harbor cedar ember glacier orchid pepper quartz saddle "
    "thunder velvet willow yonder zephyr basin candle dune fern grove"
).split()


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
        out.append(
            {
                "messages": [
                    {"role": "user", "content": f"{q}\n\n{' '.join(words)}"},
                    {"role": "assistant", "content": a},
                ]
            }
        )
    return out


def peak_memory_mb() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class CountingCollator:
    """A side's collator, counting the positions each batch computes and the tokens it trains."""

    def __init__(self, inner: Any):
        self.inner = inner
        self.positions = 0
        self.trained = 0

    def __call__(self, examples: list[Any]) -> Any:
        batch = self.inner(examples)
        self.positions += int(batch["input_ids"].numel())
        shifted = batch.get("shift_labels")
        targets = shifted if shifted is not None else batch["labels"][:, 1:]
        self.trained += int((targets != -100).sum())
        return batch


def trained_tokens(examples: list[dict[str, Any]]) -> int:
    """The tokens a causal LM trains on in these examples (each label after the first position)."""
    return sum(sum(1 for t in e["labels"][1:] if t != -100) for e in examples)


def peer_trainer(
    side: str, model: Any, tok: Any, train: list[dict[str, Any]], base: Any, max_length: int
) -> Any:
    """The peer's trainer with trainctl's schedule (`base`: trainctl's TrainingArguments for the
    same run)."""
    import torch

    from daemon.models.library_names import checkpointing_args

    common = dict(
        output_dir=base.output_dir,
        learning_rate=base.learning_rate,
        num_train_epochs=1,
        warmup_steps=base.warmup_steps,
        weight_decay=base.weight_decay,
        lr_scheduler_type="linear",
        save_strategy="no",
        logging_steps=1,
        report_to="none",
        use_cpu=not torch.cuda.is_available(),
        include_num_input_tokens_seen="non_padding",
        seed=base.seed,
        disable_tqdm=True,
        bf16=side != "bare",
        **checkpointing_args(bool(base.gradient_checkpointing)),
    )
    if side in ("trainer-bf16", "bare"):
        from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

        return Trainer(
            model=model,
            args=TrainingArguments(per_device_train_batch_size=BATCH, **common),
            train_dataset=train,
            data_collator=DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100),
        )
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    data = Dataset.from_list([{"input_ids": e["input_ids"], "labels": e["labels"]} for e in train])
    if side == "trl-padding-free":  # the inputs are already cut to max_length
        config = SFTConfig(
            padding_free=True, max_length=None, per_device_train_batch_size=BATCH, **common
        )
    else:
        from trl.data_utils import pack_dataset

        rows = len(pack_dataset(data, max_length, "bfd"))  # how many packed rows one epoch has
        steps = math.ceil(len(train) / BATCH)
        config = SFTConfig(
            packing=True,
            packing_strategy="bfd",
            max_length=max_length,
            per_device_train_batch_size=math.ceil(rows / steps),
            **common,
        )
    return SFTTrainer(model=model, args=config, train_dataset=data, processing_class=tok)


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
    from daemon.training.recipe import (
        RunContext,
        build_model,
        resolved_config,
        total_steps,
        training_args,
    )
    from daemon.training.wiring import build_collectors

    if side == "trainctl-full-logits":
        from daemon.training import trainer as trainer_module

        # the model's own forward: logits at every position
        trainer_module.split_head = lambda model: None
    home = Home.open(Path(tempfile.mkdtemp(prefix="trainctl-tput-")))
    s = Settings()
    s.train.model = model_name
    s.train.epochs = 1
    s.train.save_steps = 10**6
    s.train.eval_steps = -1
    s.train.final_eval_examples = 0
    s.train.evolution_examples = 0
    s.train.packing = side != "trainctl-padded"
    s.train.max_length = 512  # as measured before max_length became "auto" (its rows are shorter)
    tok = load_tokenizer(model_name, home.models)
    records = make_records()
    encoded = [encode_messages(tok, messages_of(r), s.train.max_length) for r in records]
    train = [{"input_ids": e.input_ids, "labels": e.labels} for e in encoded[:n]]
    probe = train[:32]
    ctx = RunContext(
        home=home, job_id=1, dataset_dir=home.datasets, settings=s, echo=lambda m: None
    )
    torch.manual_seed(0)
    model = build_model(ctx)  # the same LoRA (r, alpha, targets) for every side
    run_dir = home.run_dir(1)
    config = resolved_config(ctx)
    if side.startswith("trainctl"):
        # each example's index, for the dynamics
        indexed = [{**e, "index": i} for i, e in enumerate(train)]
        b = Batching(indexed, s.train, tok.pad_token_id)
        args = training_args(ctx, config, model, b.batch_size)
        steps = total_steps(s.train, b.items_per_epoch, b.batch_size)
        collectors = build_collectors(
            s.train, home, ctx.job_id, ctx.dataset_dir, run_dir, tok, [], steps, model
        )
        trainer = b.trainer_class(
            model=model,
            args=args,
            train_dataset=b.dataset,
            data_collator=b.collator,
            callbacks=list(collectors.callbacks()),
            dynamics=collectors.dynamics,
        )
    else:
        base = training_args(ctx, config, model, BATCH)
        trainer = peer_trainer(side, model, tok, train, base, s.train.max_length)
    counting = CountingCollator(trainer.data_collator)
    trainer.data_collator = counting
    wall = train_seconds(trainer)
    real = sum(len(x["input_ids"]) for x in train)
    model.eval()
    with torch.no_grad():  # the same fixed examples, padded, fp32, for every side
        batch = PadCollator(tok.pad_token_id)(probe)
        loss = model(**{k: v.to(model.device) for k, v in batch.items()}).loss.item()
    return {
        "side": side,
        "wall": wall,
        "real_tokens": real,
        "positions": counting.positions,
        "trained": counting.trained,
        "expected_trained": trained_tokens(train),
        "steps": trainer.state.global_step,
        "peak_mb": peak_memory_mb(),
        "loss": loss,
        "params": model.get_base_model().num_parameters(),
        "precision": config["precision"],
        "batching": counting.inner.__class__.__name__,
    }


def matmul_flops() -> float:
    """The bf16 matmul rate of this machine (FLOP/s), the best of a few 2048-square products: MFU's
    denominator."""
    import time

    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    a = torch.randn(2048, 2048, dtype=torch.bfloat16, device=device)
    best = float("inf")
    for _ in range(5):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(4):
            a @ a
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - t0) / 4)
    return 2 * 2048**3 / best


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--examples", type=int, default=160)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--model", default="builtin:smollm2-135m")
    ap.add_argument(
        "--sides",
        default=",".join(DEFAULT_SIDES),
        help=f"comma-separated, trainctl first; of {', '.join(SIDES)}",
    )
    ap.add_argument("--worker", choices=SIDES)
    a = ap.parse_args()
    if a.worker:
        print("RESULT " + json.dumps(worker(a.worker, a.model, a.examples)), flush=True)
        return
    sides = tuple(x.strip() for x in a.sides.split(",") if x.strip())
    unknown = [x for x in sides if x not in SIDES]
    if unknown or not sides or sides[0] != "trainctl":
        sys.exit(f"--sides: trainctl first, then any of {', '.join(SIDES[1:])} (got {a.sides})")
    if any(x.startswith("trl") for x in sides) and importlib.util.find_spec("trl") is None:
        sys.exit(
            'the TRL sides need TRL: pip install -e ".[bench]" (or leave them out with --sides)'
        )

    import torch

    peak = matmul_flops()
    lengths = [len(json.dumps(r)) for r in make_records()]
    print(
        f"data: 2000 records, {min(lengths)}..{max(lengths)} JSON bytes (median "
        f"{statistics.median(lengths):.0f}); {a.examples} examples a run, model {a.model}, "
        + (
            "cuda: " + torch.cuda.get_device_name()
            if torch.cuda.is_available()
            else f"cpu, {torch.get_num_threads()} torch threads"
        )
        + f"; bf16 matmul {peak / 1e9:.0f} GFLOP/s (MFU's denominator)"
    )
    results: dict[str, list[dict]] = {s: [] for s in sides}
    for r in range(a.rounds):
        for side in sides if r % 2 == 0 else tuple(reversed(sides)):
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--worker",
                    side,
                    "--model",
                    a.model,
                    "--examples",
                    str(a.examples),
                ],
                capture_output=True,
                text=True,
                cwd=ROOT,
            )
            line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                sys.exit(f"{side} failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
            res = json.loads(line[7:])
            results[side].append(res)
            print(
                f"  round {r + 1} {side:20s} {rate(res):7.1f} real tok/s  "
                f"{res['steps']} steps  {res['positions']} positions  {res['trained']} "
                f"trained  peak {res['peak_mb']:.0f} MB  loss {res['loss']:.4f}",
                flush=True,
            )
            if res["trained"] != res["expected_trained"]:
                print(
                    f"  ! {side} trained {res['trained']} tokens, "
                    f"the data has {res['expected_trained']}"
                )

    # model FLOPs: the real tokens' (padding computed is not useful work)
    def mfu(x: dict) -> float:
        return 6 * x["params"] * x["real_tokens"] / x["wall"] / peak

    print(
        "\n| side | real tokens/s | steps | positions computed "
        "| trained tokens | peak memory | MFU | loss after |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for side, rows in results.items():
        med = statistics.median
        print(
            f"| {side} | {med(rate(x) for x in rows):.1f} | {med(x['steps'] for x in rows):.0f} | "
            f"{med(x['positions'] for x in rows):,.0f} | {med(x['trained'] for x in rows):,.0f} | "
            f"{med(x['peak_mb'] for x in rows) / 1024:.1f} GB | {med(mfu(x) for x in rows):.1%} | "
            f"{med(x['loss'] for x in rows):.3f} |"
        )
    print()
    for other in sides[1:]:
        ratios = [rate(t) / rate(o) for t, o in zip(results["trainctl"], results[other])]
        loss_gap = [t["loss"] / o["loss"] - 1 for t, o in zip(results["trainctl"], results[other])]
        print(
            f"trainctl / {other}: {statistics.median(ratios):.2f}x real tokens/s (rounds "
            f"{', '.join(f'{x:.2f}' for x in ratios)}); loss {statistics.median(loss_gap):+.1%}"
        )
    peers = [x for x in sides if x in PEERS]
    if peers:
        best = max(peers, key=lambda x: statistics.median(rate(r) for r in results[x]))
        ratio = statistics.median(
            rate(t) / rate(o) for t, o in zip(results["trainctl"], results[best])
        )
        lowest = min(statistics.median(x["loss"] for x in results[p]) for p in peers)
        ours = statistics.median(x["loss"] for x in results["trainctl"])
        met = ratio >= 1.4 and ours <= lowest * 1.02
        print(
            f"target: trainctl >= 1.4x the fastest peer ({best}), loss "
            f"within 2% of the lowest peer loss: {ratio:.2f}x, loss "
            f"{ours:.3f} vs {lowest:.3f} -> {'met' if met else 'NOT met'}"
        )
    picked = results["trainctl"][0]["precision"]
    print(
        f"trainctl precision: {picked['weights']} weights, "
        f"autocast {picked['autocast']} ({picked['reason']})"
    )


def rate(x: dict) -> float:
    return x["real_tokens"] / x["wall"]


if __name__ == "__main__":
    main()
