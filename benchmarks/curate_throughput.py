"""Curation throughput, peak memory and near-duplicate recall/precision on a generated file.

Generates N records (default 200,000) in mixed formats with 10% planted near-duplicates (copies of
an earlier record with a few words changed, so their Jaccard similarity to the original spreads
over 0.5..1.0), runs `trainctl curate` on it in a child process (end to end: start-up, tokenizer,
every check, all output files), and prints records/s, the child's peak RSS, and near-duplicate
recall and precision for pairs with Jaccard >= 0.8 (word 3-gram shingles, the same definition the
curator uses).

Targets (2-core CPU): >= 20,000 records/s, peak RSS < 1.5 GB, recall and precision >= 0.95.
`--compare-minhash` also times datasketch against rensa (signature + LSH query + insert) on 20,000
records.

Usage: python benchmarks/curate_throughput.py [--records 200000] [--compare-minhash]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from daemon.curation.neardup import jaccard, shingles  # noqa: E402


def _vocab(rng: random.Random, n: int = 30000) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    return ["".join(rng.choice(letters) for _ in range(rng.randint(3, 9))) for _ in range(n)]


def _record(rng: random.Random, vocab: list[str], i: int) -> dict:
    prompt = " ".join(rng.choices(vocab, k=rng.randint(6, 14)))
    answer = " ".join(rng.choices(vocab, k=rng.randint(25, 60))) + "."
    kind = i % 3
    if kind == 0:
        rec = {"instruction": prompt, "input": "", "output": answer}
    elif kind == 1:
        rec = {
            "messages": [
                {"role": "user", "content": prompt},
                {"role": "assistant", "content": answer},
            ]
        }
    else:
        rec = {"prompt": prompt, "completion": answer}
    rec["id"] = f"r{i}"
    rec["domain"] = ("qa", "chat", "code")[i % 3]
    return rec


def _texts(rec: dict) -> list[str]:
    if "messages" in rec:
        return [m["content"] for m in rec["messages"]]
    if "instruction" in rec:
        return [rec["instruction"], rec["output"]]
    return [rec["prompt"], rec["completion"]]


def _mutate(rng: random.Random, rec: dict, vocab: list[str], rate: float, new_id: str) -> dict:
    out = json.loads(json.dumps(rec))
    answer_key = "output" if "instruction" in out else "completion" if "prompt" in out else None
    text = out[answer_key] if answer_key else out["messages"][1]["content"]
    words = text.split()
    k = max(1, round(rate * len(words)))
    for j in rng.sample(range(len(words)), k):
        words[j] = rng.choice(vocab)
    text = " ".join(words)
    if answer_key:
        out[answer_key] = text
    else:
        out["messages"][1]["content"] = text
    out["id"] = new_id
    return out


def generate(path: Path, n: int, seed: int = 0) -> dict[int, int]:
    """Write n records; returns {planted line: line of the record it copies}."""
    rng = random.Random(seed)
    vocab = _vocab(rng)
    n_dup = n // 10
    base = [_record(rng, vocab, i) for i in range(n - n_dup)]
    # Each planted copy goes somewhere after its original; mutation rates spread similarity over
    # ~0.5..1.0.
    lines: list[tuple[dict, int | None]] = [(r, None) for r in base]
    inserts: dict[int, list[tuple[dict, int]]] = {}
    for j in range(n_dup):
        src = rng.randrange(len(base) - 1)
        at = rng.randint(src + 1, len(base))
        inserts.setdefault(at, []).append(
            (_mutate(rng, base[src], vocab, rng.uniform(0.005, 0.08), f"d{j}"), src)
        )
    ordered: list[tuple[dict, int | None]] = []
    pos_of_base: dict[int, int] = {}
    for i in range(len(base) + 1):
        for rec, src in inserts.get(i, []):
            ordered.append((rec, src))
        if i < len(base):
            pos_of_base[i] = len(ordered) + 1
            ordered.append(lines[i])
    planted = {}
    with open(path, "w") as fh:
        for ln, (rec, src) in enumerate(ordered, 1):
            fh.write(json.dumps(rec) + "\n")
            if src is not None:
                planted[ln] = pos_of_base[src]
    return planted


def _words(rec: dict) -> list[str]:
    return " ".join(_texts(rec)).lower().split()


def evaluate(src: Path, ds: Path, planted: dict[int, int]) -> dict[str, float]:
    recs = {i: json.loads(line) for i, line in enumerate(open(src), 1)}
    sh = {}

    def shing(ln: int) -> list[str]:
        if ln not in sh:
            sh[ln] = shingles(_words(recs[ln]))
        return sh[ln]

    true_pairs = {p for p, o in planted.items() if jaccard(shing(p), shing(o)) >= 0.8}
    detected = {}
    for line in open(ds / "rejected.jsonl"):
        row = json.loads(line)
        if row["rejection_reason"] == "near_duplicate":
            detected[row["line"]] = row["rejection_details"]["duplicate_of_line"]
    correct = sum(1 for ln, orig in detected.items() if jaccard(shing(ln), shing(orig)) >= 0.8)
    found = sum(1 for p in true_pairs if p in detected)
    return {
        "true_pairs": len(true_pairs),
        "planted": len(planted),
        "detected": len(detected),
        "recall": found / max(1, len(true_pairs)),
        "precision": correct / max(1, len(detected)),
    }


def compare_minhash(src: Path, n: int = 20000) -> None:
    from rensa import RMinHash, RMinHashLSH

    docs = []
    with open(src) as fh:
        for _, line in zip(range(n), fh):
            docs.append(shingles(_words(json.loads(line))))
    t = time.perf_counter()
    lsh = RMinHashLSH(0.6, 128, 32)
    for i, s in enumerate(docs):
        m = RMinHash(128, 1)
        m.update(s)
        lsh.query(m)
        lsh.insert(i, m)
    rensa_us = (time.perf_counter() - t) / len(docs) * 1e6
    try:
        from datasketch import MinHash, MinHashLSH
    except ImportError:
        print(
            f"minhash: rensa {rensa_us:.1f} us/record; "
            "datasketch not installed (pip install datasketch)"
        )
        return
    k = min(len(docs), 5000)
    t = time.perf_counter()
    dlsh = MinHashLSH(threshold=0.6, num_perm=128)
    for i, s in enumerate(docs[:k]):
        m = MinHash(128, seed=1)
        m.update_batch([x.encode() for x in s])
        dlsh.query(m)
        dlsh.insert(i, m)
    ds_us = (time.perf_counter() - t) / k * 1e6
    print(
        f"minhash signature + LSH query + insert: rensa {rensa_us:.1f} us/record, "
        f"datasketch {ds_us:.1f} us/record (on {k}): rensa is {ds_us / rensa_us:.0f}x faster"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--compare-minhash", action="store_true")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="trainctl-curate-bench-"))
    src = tmp / "bench.jsonl"
    t = time.perf_counter()
    planted = generate(src, a.records)
    print(
        f"generated {a.records} records ({src.stat().st_size / 1e6:.0f} MB, "
        f"{len(planted)} planted near-dups) in {time.perf_counter() - t:.1f}s"
    )
    home = tmp / "home"
    home.mkdir()
    # Build the tiny model's tokenizer first so the timed run measures curation, not the one-off
    # model build.
    subprocess.run(
        [
            sys.executable,
            "-c",
            "from pathlib import Path; from daemon.models.loading import load_tokenizer; "
            f"load_tokenizer('builtin:tiny', Path({str(home / 'data' / 'models')!r}))",
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    t = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "cli", "curate", str(src), "--home", str(home)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - t
    if out.returncode != 0:
        sys.exit(f"curate failed:\n{out.stdout}\n{out.stderr}")
    rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    ds = Path(out.stdout.strip().splitlines()[-1])
    meta = json.loads((ds / "metadata.json").read_text())
    stats = json.loads((ds / "stats.json").read_text())
    from datetime import datetime

    inner = (
        datetime.fromisoformat(meta["finished_at"]) - datetime.fromisoformat(meta["started_at"])
    ).total_seconds()
    q = evaluate(src, ds, planted)
    rps = a.records / wall
    print(
        f"accounted for: {stats['accounted_for']} ({stats['accepted']} "
        f"accepted + {stats['rejected']} rejected = {stats['lines_read']}); "
        f"tokenised exactly: {stats['tokenised_exactly']}"
    )
    print(
        f"end to end (process start to exit): {wall:.1f}s = "
        f"{rps:,.0f} records/s  (curation alone ~{inner:.0f}s)"
    )
    print(f"peak RSS of the curate process: {rss_mb:,.0f} MB")
    print(
        f"near-duplicates: {q['true_pairs']} planted pairs with Jaccard "
        f">= 0.8 (of {q['planted']} planted); detected {q['detected']}; "
        f"recall {q['recall']:.4f}, precision {q['precision']:.4f}"
    )
    ok = rps >= 20_000 and rss_mb < 1536 and q["recall"] >= 0.95 and q["precision"] >= 0.95
    print(
        "targets (>= 20,000 rec/s, < 1.5 GB, recall and "
        f"precision >= 0.95): {'PASS' if ok else 'FAIL'}"
    )
    if a.compare_minhash:
        compare_minhash(src)


if __name__ == "__main__":
    main()
