"""Share of training wall time spent in evolution snapshots and fixed evaluations: the demo job (examples/
demo_uppercase.jsonl, 6 epochs, builtin:tiny) with the default schedule (snapshots at SPEC section 7's steps on
100 probe examples, about ten fixed evaluations of 32 validation examples).

The collectors time themselves; the share is (snapshot seconds + evaluation seconds) / training wall time, the
latter including them. Target: under 10%. Also printed: how much of it went to decoding the answers the model does
not reproduce (what `model_output` shows), the rest being the teacher-forced passes.
Usage: python benchmarks/snapshot_cost.py [--epochs 6] [--runs 2]
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


def one_run(epochs: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="snapshot-cost-") as tmp:
        cmd = [sys.executable, "-m", "cli", "train", str(ROOT / "examples" / "demo_uppercase.jsonl"), "--home", tmp,
               "--epochs", str(epochs)]
        subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
        (run,) = (Path(tmp) / "data" / "runs").iterdir()
        return json.loads((run / "result.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=float, default=6)
    ap.add_argument("--runs", type=int, default=2)
    args = ap.parse_args()
    shares, decode_shares = [], []
    for i in range(args.runs):
        r = one_run(args.epochs)
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
