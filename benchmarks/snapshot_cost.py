"""Share of training wall time spent in evolution snapshots and fixed evaluations, against the
diagnostics budget (`train.diagnostics_budget`, default 5%), with the default settings, on two
jobs:

- the demo job: builtin:smollm2-135m, one epoch of examples/demo_reverse.jsonl, as `make demo` runs
  it (48 steps);
- a 1,000-step job: builtin:tiny, `--max-steps 1000` on examples/demo_uppercase.jsonl.

The collectors time themselves; the share is (snapshot seconds + evaluation seconds) / training
wall time, the latter including them. Also printed: which snapshot steps ran, and how much went to
decoding the answers the model does not reproduce (what `model_output` shows), the rest being the
teacher-forced passes.

The step-0 snapshot comes from the base pass before training (daemon/training/base_pass.py: one
pass with the adapter off over the snapshot's examples and the held-out test rows, whose base-model
figures the job reports anyway), outside the training wall time and the budget. It is printed
apart, with the share the step-0 snapshot's part of it (pro rata of its examples) would add if it
were counted as it was before the base pass existed. Usage: python benchmarks/snapshot_cost.py
[--jobs demo,1000] [--runs 1]
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


JOBS = {
    "demo": ("builtin:smollm2-135m", ["--epochs", "1"]),
    "1000": ("builtin:tiny", ["--max-steps", "1000"]),
}


def one_run(model: str, extra: list[str]) -> dict:
    from benchmarks.prepared_job import sample_file

    with tempfile.TemporaryDirectory(prefix="snapshot-cost-") as tmp:
        cmd = [
            sys.executable,
            "-m",
            "cli",
            "train",
            str(sample_file(model)),
            "--home",
            tmp,
            "--model",
            model,
            *extra,
        ]
        subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
        (run,) = (Path(tmp) / "data" / "runs").iterdir()
        return json.loads((run / "result.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--jobs", default="demo,1000", help="comma-separated: demo, 1000")
    ap.add_argument("--runs", type=int, default=1)
    args = ap.parse_args()
    for job in args.jobs.split(","):
        model, extra = JOBS[job]
        print(f"{job} job: model {model}, {' '.join(extra)}")
        shares = []
        for i in range(args.runs):
            r = one_run(model, extra)
            total, snap, ev = (
                r["train_runtime_s"],
                r.get("snapshot_seconds", 0.0),
                r.get("fixed_eval_seconds", 0.0),
            )
            decode = r.get("snapshot_decode_seconds", 0.0) + r.get(
                "fixed_eval_decode_seconds", 0.0
            )
            share = (snap + ev) / total
            shares.append((share, r.get("diagnostics_budget", 0.0)))
            print(
                f"  run {i + 1}: {r['steps']} steps in {total:.1f} s; snapshots {snap:.2f} "
                f"s at steps {r.get('snapshots')} (left out "
                f"{r.get('diagnostics_skipped', {}).get('snapshot', 0)}, scored only "
                f"{r.get('diagnostics_scored_only', 0)} passes), fixed evaluation {ev:.2f} "
                f"s -> {100 * snap / total:.1f}% + {100 * ev / total:.1f}% = "
                f"{100 * share:.1f}% (decoding {decode:.2f} s = {100 * decode / total:.1f}%)"
            )
            base = r.get("base_pass")
            if base and "seconds" in base:
                part = base["seconds"] * base.get("snapshot_examples", 0) / base["examples"]
                print(
                    f"  run {i + 1}: base pass before training {base['seconds']:.2f} "
                    f"s over {base['examples']} examples (step-0 snapshot + base "
                    f"held-out answers); its step-0 share, {part:.2f} s, would add "
                    f"{100 * part / total:.1f}% if counted inside training"
                )
        med = statistics.median(s for s, _ in shares)
        budget = shares[0][1]
        print(
            f"  {job}: snapshots + evaluation = {100 * med:.1f}% of training wall time "
            f"(median), budget {100 * budget:.0f}%: {'PASS' if med <= budget + 1e-9 else 'FAIL'}"
        )


if __name__ == "__main__":
    main()
