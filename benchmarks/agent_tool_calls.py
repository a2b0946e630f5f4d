"""Tool-call exact match of an agent fine-tune against its base model, on the held-out split (issue
29).

Trains the default model (builtin:smollm2-135m) for one epoch on
examples/agent_llamafactory_v1.jsonl (242 multi-turn tool-use records in LLaMA-Factory's v1 layout:
`value` parts, calls as JSON strings, reasoning parts) with every setting at its default
(max_length = "auto" included), then answers the job's held-out test split with `trainctl bench run
--job 1` and `--base`, as a user would. Prints, for each model, the exact match on the records
whose golden answer calls a tool (name and parsed arguments, in order; reasoning and prose aside)
and on whole answers, plus the length curation chose and what reached the loss per layout.

Usage: python benchmarks/agent_tool_calls.py [--file examples/agent_llamafactory_v1.jsonl]
[--epochs 1]
       [--max-tokens 192] [--keep HOME [--report]]
Runs in a fresh home under /tmp (or HOME with --keep); a few minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from daemon.chat.answers import answer_of_message, parse_answer, same_answer  # noqa: E402
from daemon.home import Home  # noqa: E402

TRAINCTL = [str(Path(sys.executable).parent / "trainctl")]


def trainctl(*args: str) -> None:
    started = time.time()
    done = subprocess.run([*TRAINCTL, *args], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"trainctl {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    print(f"  trainctl {' '.join(args[:3])} ... {time.time() - started:.0f}s")


def scores(results: Path) -> dict[str, tuple[int, int]]:
    """(right, of) for the answers that call a tool and for all answers."""
    calls = [0, 0]
    whole = [0, 0]
    for line in results.read_text().splitlines():
        row = json.loads(line)
        ref = row.get("reference")
        if ref is None:
            continue
        choices = ((row.get("response") or {}).get("body") or {}).get("choices") or [{}]
        out = answer_of_message(choices[0].get("message") or {"content": ""})
        whole[0] += same_answer(out, ref)
        whole[1] += 1
        golden = parse_answer(ref).calls
        if golden:
            calls[0] += parse_answer(out).calls == golden
            calls[1] += 1
    return {"calls": (calls[0], calls[1]), "all": (whole[0], whole[1])}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--file", default="examples/agent_llamafactory_v1.jsonl")
    ap.add_argument("--epochs", default="1")
    ap.add_argument("--max-tokens", default="192")
    ap.add_argument(
        "--keep", default=None, help="use this home folder (kept) instead of a temporary one"
    )
    ap.add_argument(
        "--report", action="store_true", help="only print the figures of a --keep home's runs"
    )
    a = ap.parse_args()
    home = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="trainctl-agent-"))
    print(f"home {home}")
    if not a.report:
        trainctl("train", str(ROOT / a.file), "--home", str(home), "--epochs", a.epochs)
        for extra in ([], ["--base"]):
            trainctl(
                "bench",
                "run",
                "--job",
                "1",
                "--home",
                str(home),
                "--max-tokens",
                a.max_tokens,
                *extra,
            )
    run = Home(home).run_dir(1)
    config = json.loads((run / "config.json").read_text())
    auto = config.get("max_length_auto") or {}
    print(
        f"max_length: {config['train']['max_length']} (setting "
        f"{auto.get('setting', 'a number')}, {auto.get('share', 0):.0%} of "
        f"{auto.get('of')} records at most {auto.get('share_tokens')} tokens, "
        f"longest {auto.get('longest_tokens')}, ceiling {auto.get('ceiling')})"
    )
    print(
        f"rendering: {config['rendering']['summary']} — {config['rendering'].get('trained', '')}"
    )
    for layout, counts in (config["rendering"].get("by_layout") or {}).items():
        print(f"  {layout}: {json.dumps(counts)}")
    bench = Home(home).bench_root
    for name, label in (("job-1-base", "base "), ("job-1", "tuned")):
        s = scores(bench / name / "results.jsonl")
        (c, cn), (w, wn) = s["calls"], s["all"]
        print(
            f"{label}: tool-call exact match {c}/{cn} = {c / max(1, cn):.0%} "
            f"  whole answers {w}/{wn} = {w / max(1, wn):.0%}"
        )


if __name__ == "__main__":
    main()
