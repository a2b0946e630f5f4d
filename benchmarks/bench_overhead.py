"""What `trainctl bench` costs over a plain batched generate, and what a kill loses.

1. Throughput: the same prompts through the same hf backend (the same loaded model, batch size and greedy decoding)
   as one plain loop of batched `generate_batch` calls, and through `BenchRunner` with incremental saving (a JSON
   line written and flushed per answer, fsync once a second, run.json every 2 s). Rounds are interleaved; the
   ratio of median output tokens/s is printed, and the answers of both paths are checked to be identical.
   Target: ratio >= 0.95.
2. Kill: a real `trainctl bench run` process is SIGKILLed at random moments and resumed. After each kill the saved
   lines must be whole batches (nothing that finished was lost: only the batch in flight is redone), and after
   the last resume every prompt has exactly one result.

Usage: python benchmarks/bench_overhead.py [--prompts 256] [--max-tokens 32] [--batch-size 16] [--rounds 3]
       [--kills 3] [--model builtin:tiny]
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def write_prompts(path: Path, n: int) -> None:
    rng = random.Random(0)
    words = "the model answers every question about the data set with a short clear sentence".split()
    with open(path, "w") as fh:
        for i in range(n):
            text = " ".join(rng.choice(words) for _ in range(rng.randint(4, 40)))
            fh.write(json.dumps({"custom_id": f"p{i:05d}", "method": "POST", "url": "/v1/chat/completions",
                                 "body": {"model": "m", "messages": [{"role": "user", "content": text}]}}) + "\n")


def throughput(args, home, prompts: Path) -> None:
    from daemon.bench.backends import HfBackend
    from daemon.bench.prompts import iter_prompts
    from daemon.bench.runner import BenchRunner, BenchSpec, prompt_ids
    from daemon.config import BenchConfig
    from daemon.generation import RowSampling, generate_batch
    from daemon.models import load_model, load_tokenizer

    tok = load_tokenizer(args.model, home.models)
    model = load_model(args.model, home.models).eval()
    ids = [prompt_ids(tok, p.messages) for p in iter_prompts(prompts)]
    rows = [RowSampling(args.max_tokens)] * args.batch_size

    def plain() -> tuple[float, int, list[str]]:
        t0 = time.perf_counter()
        texts, tokens = [], 0
        for i in range(0, len(ids), args.batch_size):
            chunk = ids[i:i + args.batch_size]
            for out in generate_batch(model, tok, chunk, rows[:len(chunk)]):
                texts.append(out["text"])
                tokens += out["completion_tokens"]
        return time.perf_counter() - t0, tokens, texts

    def bench(r: int) -> tuple[float, int, list[str]]:
        spec = BenchSpec(name=f"overhead-{r}", model=args.model, prompts=prompts, adapter=None,
                         cfg=BenchConfig(batch_size=args.batch_size, max_tokens=args.max_tokens))
        t0 = time.perf_counter()
        out = BenchRunner(home, spec, log=lambda m: None).run(lambda s: (HfBackend(model, tok, args.batch_size), tok))
        secs = time.perf_counter() - t0
        lines = [json.loads(x) for x in out.results.read_text().splitlines()]
        texts = [x["response"]["body"]["choices"][0]["message"]["content"] for x in lines]
        return secs, out.info.progress.completion_tokens, texts

    plain()  # warm-up (first-call allocations)
    p_rates, b_rates = [], []
    for r in range(args.rounds):
        # Alternate which path goes first, so that drift on a shared machine does not favour one of them.
        if r % 2:
            bs, bt, btexts = bench(r)
            ps, pt, ptexts = plain()
        else:
            ps, pt, ptexts = plain()
            bs, bt, btexts = bench(r)
        assert pt == bt and ptexts == btexts, "the two paths must produce the same answers"
        p_rates.append(pt / ps)
        b_rates.append(bt / bs)
        print(f"round {r + 1}: plain {pt / ps:8.1f} tok/s   trainctl bench {bt / bs:8.1f} tok/s   "
              f"ratio {(bt / bs) / (pt / ps):.3f}")
    ratio = statistics.median(b_rates) / statistics.median(p_rates)
    print(f"\nthroughput ratio (median bench / median plain): {ratio:.3f}   target >= 0.95   "
          f"{'PASS' if ratio >= 0.95 else 'FAIL'}   (identical answers: yes)")


def kills(args, home_root: Path, prompts: Path, n: int) -> None:
    res = home_root / "data" / "bench" / "killed" / "results.jsonl"
    cmd = [sys.executable, "-m", "cli", "bench", "run", "--home", str(home_root), "--prompts", str(prompts),
           "--name", "killed", "--model", args.model, "--max-tokens", str(args.max_tokens), "--batch-size",
           str(args.batch_size)]
    rng = random.Random(7)
    whole = True
    for k in range(args.kills):
        before = res.stat().st_size if res.exists() else 0
        proc = subprocess.Popen(cmd + (["--resume"] if k else []), cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        while proc.poll() is None and not (res.exists() and res.stat().st_size > before):
            time.sleep(0.05)
        time.sleep(rng.uniform(0.05, 1.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        raw = res.read_bytes()
        saved = raw.count(b"\n")
        torn = len(raw) - (raw.rfind(b"\n") + 1)
        whole &= saved % args.batch_size == 0
        print(f"kill {k + 1}: {saved}/{n} results saved ({saved // args.batch_size} whole batches"
              f"{'' if saved % args.batch_size == 0 else ', NOT whole batches'}), torn bytes {torn}; "
              f"redone on resume: the batch in flight (<= {args.batch_size} prompts)")
    done = subprocess.run(cmd + ["--resume"], cwd=ROOT, capture_output=True, text=True)
    ids = Counter(json.loads(x)["custom_id"] for x in res.read_text().splitlines())
    exact = done.returncode == 0 and len(ids) == n and set(ids.values()) == {1}
    print(f"after the last resume: {len(ids)}/{n} prompts, duplicates {sum(v - 1 for v in ids.values())}   "
          f"work lost at a kill: only the requests in flight   {'PASS' if exact and whole else 'FAIL'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=256)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--kills", type=int, default=3)
    ap.add_argument("--model", default="builtin:tiny")
    args = ap.parse_args()
    from daemon.home import Home

    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp:
        home = Home.open(Path(tmp) / "home")
        prompts = Path(tmp) / "prompts.jsonl"
        write_prompts(prompts, args.prompts)
        import torch

        print(f"{args.prompts} prompts, max_tokens {args.max_tokens}, batch {args.batch_size}, model {args.model}, "
              f"torch threads {torch.get_num_threads()}\n")
        throughput(args, home, prompts)
        if args.kills:
            print()
            kills(args, home.root, prompts, args.prompts)


if __name__ == "__main__":
    main()
