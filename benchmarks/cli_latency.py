"""`trainctl status` wall time, and `trainctl ui` start-up (launch until its first page answers),
against `python -c pass` and `import torch`, measured interleaved in one run.

Targets: `trainctl status` median under 0.3 s; `trainctl ui` answering well under a second. Prints
medians and ratios.
Usage: python benchmarks/cli_latency.py [--runs 15]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def timed(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def ui_startup(home: Path) -> float:
    """Seconds from launching `trainctl ui` to its dashboard page answering (it prints its address
    when listening)."""
    import re
    import urllib.request

    t = time.perf_counter()
    p = subprocess.Popen(
        [sys.executable, "-m", "cli", "ui", "--home", str(home), "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        url = re.search(r"(http://\S+)", p.stdout.readline()).group(1)
        with urllib.request.urlopen(url + "api/status", timeout=10) as r:
            r.read()
        return time.perf_counter() - t
    finally:
        p.terminate()
        p.wait(10)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=15)
    a = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="trainctl-bench-"))
    # A home with a realistic status file so the dashboard renders every section.
    (home / "status").mkdir()
    (home / "status" / "training_status.json").write_text(
        json.dumps(
            {
                "state": "training",
                "job_id": 1,
                "current_step": 120,
                "total_steps": 300,
                "loss": 1.9,
                "learning_rate": 1e-3,
                "tokens_per_sec": 5000,
                "tokens_per_sec_avg": 4900,
                "eta_seconds": 40,
            }
        )
    )
    cmds = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "trainctl status": [sys.executable, "-m", "cli", "status", "--home", str(home)],
        "python -c 'import torch'": [sys.executable, "-c", "import torch"],
    }
    for c in cmds.values():  # warm the page cache
        timed(c)
    ui_startup(home)
    times: dict[str, list[float]] = {k: [] for k in [*cmds, "trainctl ui (until it answers)"]}
    for _ in range(a.runs):
        for name, c in cmds.items():  # interleaved so that machine noise hits all of them alike
            times[name].append(timed(c))
        times["trainctl ui (until it answers)"].append(ui_startup(home))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"median wall time over {a.runs} interleaved runs")
    for k, v in med.items():
        print(f"  {k:28s} {v * 1000:7.1f} ms")
    status = med["trainctl status"]
    print(f"trainctl status / python -c pass : {status / med['python -c pass']:.2f}x")
    torch_import = med["python -c 'import torch'"]
    print(f"trainctl status / import torch   : {status / torch_import:.2f}x")
    verdict = "PASS" if status < 0.3 else "FAIL"
    print(f"target: trainctl status < 300 ms -> {status * 1000:.0f} ms {verdict}")
    ui = med["trainctl ui (until it answers)"]
    print(f"trainctl ui start-up / python -c pass : {ui / med['python -c pass']:.2f}x")
    verdict = "PASS" if ui < 1.0 else "FAIL"
    print(f"target: trainctl ui answering < 1000 ms -> {ui * 1000:.0f} ms {verdict}")


if __name__ == "__main__":
    main()
