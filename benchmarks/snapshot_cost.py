"""Share of training wall time spent in evolution snapshots and fixed evaluations: the demo job (the default model,
builtin:smollm2-135m, one epoch of examples/demo_reverse.jsonl, as `make demo` runs it; with `--model builtin:tiny`,
six epochs of examples/demo_uppercase.jsonl) with the default schedule (snapshots at SPEC section 7's steps on 100
probe examples, about ten fixed evaluations of 32 validation examples).

The collectors time themselves; the share is (snapshot seconds + evaluation seconds) / training wall time, the
latter including them. Target: under 10%. Also printed: how much of it went to decoding the answers the model does
not reproduce (what `model_output` shows), the rest being the teacher-forced passes.
Usage: python benchmarks/snapshot_cost.py [--model builtin:smollm2-135m] [--epochs N] [--runs 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def one_run(model: str, epochs: float) -> dict:
    from benchmarks.prepared_job import sample_file

    with tempfile.TemporaryDirectory(prefix="snapshot-cost-") as tmp:
        cmd = [sys.executable, "-m", "cli", "train", str(sample_file(model)), "--home", tmp, "--model", model,
               "--epochs", str(epochs)]
        subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
        (run,) = (Path(tmp) / "data" / "runs").iterdir()
        return json.loads((run / "result.json").read_text())


def main() -> None:
    from benchmarks.prepared_job import sample_file

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="builtin:smollm2-135m")
    ap.add_argument("--epochs", type=float, default=0, help="default: 6 for builtin:tiny, 1 for other models")
    ap.add_argument("--runs", type=int, default=2)
    args = ap.parse_args()
    epochs = args.epochs or (6 if args.model == "builtin:tiny" else 1)
    print(f"model {args.model}, {epochs:g} epochs of {sample_file(args.model).name}")
    shares, decode_shares = [], []
    for i in range(args.runs):
        r = one_run(args.model, epochs)
        total, snap, ev = r["train_runtime_s"], r.get("snapshot_seconds", 0.0), r.get("fixed_eval_seconds", 0.0)
        decode = r.get("snapshot_decode_seconds", 0.0) + r.get("fixed_eval_decode_seconds", 0.0)
        share = (snap + ev) / total
        shares.append(share)
        decode_shares.append(decode / total)
        print(f"run {i + 1}: {r['steps']} steps in {total:.1f} s; snapshots {snap:.2f} s "
              f"({len(r.get('snapshots', []))} at steps {r.get('snapshots')}), fixed evaluation {ev:.2f} s "
              f"-> {100 * snap / total:.1f}% + {100 * ev / total:.1f}% = {100 * share:.1f}% "
              f"(decoding {decode:.2f} s of it = {100 * decode / total:.1f}%)")
    med = statistics.median(shares)
    dec = statistics.median(decode_shares)
    print(f"\nshare of training wall time in snapshots + evaluation (median): {100 * med:.1f}%   target < 10%   "
          f"{'PASS' if med < 0.10 else 'FAIL'}")
    print(f"  of which decoding answers not reproduced (median): {100 * dec:.1f}%; "
          f"the teacher-forced passes and the rest: {100 * (med - dec):.1f}%")


if __name__ == "__main__":
    main()
