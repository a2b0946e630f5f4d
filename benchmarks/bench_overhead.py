"""What `trainctl bench` costs over a plain batched generate, and what a kill loses.

1. Throughput: the same prompts through the same hf backend (the same loaded model, batch size and
greedy decoding)
   as one plain loop of batched `generate_batch` calls, and through `BenchRunner` with incremental
   saving (a JSON line written and flushed per answer, fsync once a second, run.json every 2 s).
   Rounds are interleaved; the ratio of median output tokens/s is printed, and the answers of both
   paths are checked to be identical. Target: ratio >= 0.95.
2. vLLM (`--vllm`, on by default where vLLM is installed): `trainctl bench run --backend vllm` and
a bare
   `LLM.generate` over the same prompts, the same LoRA adapter and the same engine settings, each
   in a fresh process, rounds interleaved. Output tokens/s count generation only (after the engine
   has started): the bench's from its run.json, the bare engine's around `generate`. Target: bench
   / bare >= 0.95. The same prompts through `trainctl bench run --backend hf` give vLLM vs hf on
   this machine.
3. Kill: a real `trainctl bench run` process is SIGKILLed at random moments and resumed. After each
kill the saved
   lines must be whole batches (nothing that finished was lost: only the batch in flight is
   redone), and after the last resume every prompt has exactly one result.

Usage: python benchmarks/bench_overhead.py [--prompts 256] [--max-tokens 32] [--batch-size 16]
[--rounds 3]
       [--kills 3] [--model builtin:tiny] [--no-vllm] [--vllm-model builtin:smollm2-135m]
       [--vllm-prompts 64]
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
    words = (
        "the model answers every question about the data set with a short clear sentence".split()
    )
    with open(path, "w") as fh:
        for i in range(n):
            text = " ".join(rng.choice(words) for _ in range(rng.randint(4, 40)))
            fh.write(
                json.dumps(
                    {
                        "custom_id": f"p{i:05d}",
                        "method": "POST",
                        "url": "/v1/chat/completions",
                        "body": {"model": "m", "messages": [{"role": "user", "content": text}]},
                    }
                )
                + "\n"
            )


def throughput(args, home, prompts: Path) -> None:
    from daemon.bench.backends import HfBackend
    from daemon.bench.prompts import iter_prompts
    from daemon.bench.runner import BenchRunner, BenchSpec, prompt_ids
    from daemon.config import BenchConfig
    from daemon.models.generation import RowSampling, generate_batch
    from daemon.models.loading import load_model, load_tokenizer

    tok = load_tokenizer(args.model, home.models)
    model = load_model(args.model, home.models).eval()
    ids = [prompt_ids(tok, p.messages) for p in iter_prompts(prompts)]
    rows = [RowSampling(args.max_tokens)] * args.batch_size

    def plain() -> tuple[float, int, list[str]]:
        t0 = time.perf_counter()
        texts, tokens = [], 0
        for i in range(0, len(ids), args.batch_size):
            chunk = ids[i : i + args.batch_size]
            for out in generate_batch(model, tok, chunk, rows[: len(chunk)]):
                texts.append(out["text"])
                tokens += out["completion_tokens"]
        return time.perf_counter() - t0, tokens, texts

    def bench(r: int) -> tuple[float, int, list[str]]:
        spec = BenchSpec(
            name=f"overhead-{r}",
            model=args.model,
            prompts=prompts,
            adapter=None,
            cfg=BenchConfig(batch_size=args.batch_size, max_tokens=args.max_tokens),
        )
        t0 = time.perf_counter()
        out = BenchRunner(home, spec, log=lambda m: None).run(
            lambda s: (HfBackend(model, tok, args.batch_size), tok)
        )
        secs = time.perf_counter() - t0
        lines = [json.loads(x) for x in out.results.read_text().splitlines()]
        texts = [x["response"]["body"]["choices"][0]["message"]["content"] for x in lines]
        return secs, out.info.progress.completion_tokens, texts

    plain()  # warm-up (first-call allocations)
    p_rates, b_rates = [], []
    for r in range(args.rounds):
        # Alternate which path goes first, so that drift on a shared machine does not favour one of
        # them.
        if r % 2:
            bs, bt, btexts = bench(r)
            ps, pt, ptexts = plain()
        else:
            ps, pt, ptexts = plain()
            bs, bt, btexts = bench(r)
        assert pt == bt and ptexts == btexts, "the two paths must produce the same answers"
        p_rates.append(pt / ps)
        b_rates.append(bt / bs)
        print(
            f"round {r + 1}: plain {pt / ps:8.1f} tok/s   trainctl bench "
            f"{bt / bs:8.1f} tok/s   ratio {(bt / bs) / (pt / ps):.3f}"
        )
    ratio = statistics.median(b_rates) / statistics.median(p_rates)
    print(
        f"\nthroughput ratio (median bench / median plain): {ratio:.3f}   target >= "
        f"0.95   {'PASS' if ratio >= 0.95 else 'FAIL'}   (identical answers: yes)"
    )


VLLM_SETTINGS = "[bench]\nmax_model_len = 512\nkv_cache_gib = 1.0\n"
"""The engine settings both vLLM sides use (the bare side reads the same through engine_args)."""


def make_adapter(home, model: str, out: Path) -> Path:
    """A LoRA adapter (r=16 on the attention projections) with random, non-zero B: it changes the
    answers, as a trained one does, with no training run."""
    from peft import LoraConfig, get_peft_model

    from daemon.models.loading import load_model

    net = get_peft_model(
        load_model(model, home.models),
        LoraConfig(
            r=16, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False
        ),
    )
    net.save_pretrained(str(out))
    return out


def bare_vllm(home_root: str, model: str, prompts: str, adapter: str, max_tokens: int) -> None:
    """One process: the engine as the bench builds it, then one timed `LLM.generate` with the LoRA
    request."""
    from vllm import LLM, SamplingParams
    from vllm.lora.request import LoRARequest

    from daemon.bench.engines import cpu_engine_env, engine_args
    from daemon.bench.prompts import iter_prompts
    from daemon.bench.runner import prompt_ids
    from daemon.config import load_settings
    from daemon.home import Home
    from daemon.models.loading import load_tokenizer, resolve_model_path

    home = Home.open(Path(home_root))
    cfg = load_settings(home.settings_file).bench
    tok = load_tokenizer(model, home.models)
    ids = [{"prompt_token_ids": prompt_ids(tok, p.messages)} for p in iter_prompts(Path(prompts))]
    cpu_engine_env()  # the same engine environment as the bench's
    llm = LLM(
        **engine_args(
            resolve_model_path(model, home.models),
            cfg,
            lora_rank=16,
            max_model_len=cfg.max_model_len,
            on_gpu=False,
        )
    )
    t0 = time.perf_counter()
    outs = llm.generate(
        ids,
        SamplingParams(max_tokens=max_tokens, temperature=0.0),
        lora_request=LoRARequest("adapter-1", 1, adapter),
        use_tqdm=False,
    )
    secs = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "tokens": sum(len(o.outputs[0].token_ids) for o in outs),
                "seconds": secs,
                "texts": [o.outputs[0].text for o in outs],
            }
        )
    )


def vllm_vs_bare(args, home, prompts: Path) -> None:
    home.settings_file.write_text(VLLM_SETTINGS)
    adapter = make_adapter(home, args.vllm_model, home.root / "adapter")

    def bench(backend: str, r: int) -> tuple[float, int, list[str]]:
        name = f"{backend}-{r}"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "cli",
                "bench",
                "run",
                "--home",
                str(home.root),
                "--prompts",
                str(prompts),
                "--adapter",
                str(adapter),
                "--model",
                args.vllm_model,
                "--backend",
                backend,
                "--name",
                name,
                "--max-tokens",
                str(args.max_tokens),
            ],
            cwd=ROOT,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        run = json.loads((home.bench_dir(name) / "run.json").read_text())
        rows = [
            json.loads(x)
            for x in (home.bench_dir(name) / "results.jsonl").read_text().splitlines()
        ]
        texts = {
            x["custom_id"]: x["response"]["body"]["choices"][0]["message"]["content"] for x in rows
        }
        return (
            run["progress"]["active_seconds"],
            run["progress"]["completion_tokens"],
            [texts[k] for k in sorted(texts)],
        )

    def bare() -> tuple[float, int, list[str]]:
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--bare-vllm",
                str(home.root),
                args.vllm_model,
                str(prompts),
                str(adapter),
                str(args.max_tokens),
            ],
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        )
        # vLLM prints to stdout too (its shutdown): the result is the line this script wrote
        doc = json.loads(
            next(x for x in reversed(out.stdout.splitlines()) if x.startswith('{"tokens"'))
        )
        return doc["seconds"], doc["tokens"], doc["texts"]

    bench_rates, bare_rates, hf_rates = [], [], []
    for r in range(args.rounds):
        order = [
            ("bench", lambda r=r: bench("vllm", r)),
            ("bare", bare),
            ("hf", lambda r=r: bench("hf", r)),
        ]
        if r % 2:
            order.reverse()
        got = {name: fn() for name, fn in order}
        (bs, bt, btexts), (es, et, etexts), (hs, ht, htexts) = got["bench"], got["bare"], got["hf"]
        same = sum(a.strip() == b.strip() for a, b in zip(btexts, etexts)) / max(1, len(btexts))
        as_hf = sum(a.strip() == b.strip() for a, b in zip(btexts, htexts)) / max(1, len(btexts))
        bench_rates.append(bt / bs)
        bare_rates.append(et / es)
        hf_rates.append(ht / hs)
        print(
            f"round {r + 1}: bare vLLM {et / es:7.1f} tok/s   trainctl bench (vllm) "
            f"{bt / bs:7.1f} tok/s   ratio {(bt / bs) / (et / es):.3f}   trainctl bench (hf) "
            f"{ht / hs:7.1f} tok/s   answers: bench = bare {same:.0%}, vllm = hf {as_hf:.0%}"
        )
    ratio = statistics.median(b / e for b, e in zip(bench_rates, bare_rates))
    print(
        "\nvLLM: bench / bare engine (median of per-round ratios): "
        f"{ratio:.3f}   target >= 0.95   {'PASS' if ratio >= 0.95 else 'FAIL'}"
    )
    print(
        "vLLM vs hf on this machine (median output tok/s): "
        f"{statistics.median(bench_rates):.1f} vs {statistics.median(hf_rates):.1f} "
        f"= {statistics.median(bench_rates) / statistics.median(hf_rates):.2f}x"
    )


def kills(args, home_root: Path, prompts: Path, n: int) -> None:
    res = home_root / "data" / "bench" / "killed" / "results.jsonl"
    cmd = [
        sys.executable,
        "-m",
        "cli",
        "bench",
        "run",
        "--home",
        str(home_root),
        "--prompts",
        str(prompts),
        "--name",
        "killed",
        "--model",
        args.model,
        "--max-tokens",
        str(args.max_tokens),
        "--batch-size",
        str(args.batch_size),
    ]
    rng = random.Random(7)
    whole = True
    for k in range(args.kills):
        before = res.stat().st_size if res.exists() else 0
        proc = subprocess.Popen(
            cmd + (["--resume"] if k else []),
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        while proc.poll() is None and not (res.exists() and res.stat().st_size > before):
            time.sleep(0.05)
        time.sleep(rng.uniform(0.05, 1.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        raw = res.read_bytes()
        saved = raw.count(b"\n")
        torn = len(raw) - (raw.rfind(b"\n") + 1)
        whole &= saved % args.batch_size == 0
        print(
            f"kill {k + 1}: {saved}/{n} results saved ({saved // args.batch_size} whole "
            f"batches{'' if saved % args.batch_size == 0 else ', NOT whole batches'}), torn "
            f"bytes {torn}; redone on resume: the batch in flight (<= {args.batch_size} prompts)"
        )
    done = subprocess.run(cmd + ["--resume"], cwd=ROOT, capture_output=True, text=True)
    ids = Counter(json.loads(x)["custom_id"] for x in res.read_text().splitlines())
    exact = done.returncode == 0 and len(ids) == n and set(ids.values()) == {1}
    print(
        f"after the last resume: {len(ids)}/{n} prompts, duplicates "
        f"{sum(v - 1 for v in ids.values())}   work lost at a kill: only "
        f"the requests in flight   {'PASS' if exact and whole else 'FAIL'}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--prompts", type=int, default=256)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--kills", type=int, default=3)
    ap.add_argument("--model", default="builtin:tiny")
    ap.add_argument("--no-vllm", action="store_true", help="Skip the vLLM section.")
    ap.add_argument("--vllm-model", default="builtin:smollm2-135m")
    ap.add_argument("--vllm-prompts", type=int, default=64)
    ap.add_argument("--bare-vllm", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.bare_vllm:
        home_root, model, prompts, adapter, max_tokens = args.bare_vllm
        bare_vllm(home_root, model, prompts, adapter, int(max_tokens))
        return
    from daemon.home import Home

    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp:
        home = Home.open(Path(tmp) / "home")
        prompts = Path(tmp) / "prompts.jsonl"
        write_prompts(prompts, args.prompts)
        import torch

        print(
            f"{args.prompts} prompts, max_tokens {args.max_tokens}, batch {args.batch_size}, "
            f"model {args.model}, torch threads {torch.get_num_threads()}\n"
        )
        throughput(args, home, prompts)
        from daemon.bench.engines import vllm_version

        if not args.no_vllm and vllm_version():
            vhome = Home.open(Path(tmp) / "vllm-home")
            vprompts = Path(tmp) / "vllm-prompts.jsonl"
            write_prompts(vprompts, args.vllm_prompts)
            print(
                f"\nvLLM {vllm_version()}: {args.vllm_prompts} prompts, max_tokens "
                f"{args.max_tokens}, {args.vllm_model} + a LoRA adapter (r=16)"
            )
            vllm_vs_bare(args, vhome, vprompts)
        if args.kills:
            print()
            kills(args, home.root, prompts, args.prompts)


if __name__ == "__main__":
    main()
