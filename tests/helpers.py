"""What the tests share besides fixtures (those are in conftest.py): paths, sample data, waiting, a
daemon process, and readers of what a run leaves, all through daemon.home.Home's paths."""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from daemon.chat.messages import Message
from daemon.chat.render import encode_messages
from daemon.home import Home
from daemon.jobs import Job, JobQueue
from daemon.runs.checkpoints import COMPLETE_MARKER

ROOT = Path(__file__).resolve().parent.parent

DEMO = ROOT / "examples" / "demo_uppercase.jsonl"

TINY_SETTINGS = '[train]\nmodel = "builtin:tiny"\n'
"""The fast tests train builtin:tiny (the default model is the real builtin:smollm2-135m)."""


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def wait_for(cond: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class DaemonProc:
    """A real `trainctl daemon` process on a test home, its output in a log file."""

    def __init__(self, home: Path, *args: str):
        self.log = home / f"daemon-{time.time_ns()}.log"
        self.fh = open(self.log, "w")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cli", "daemon", "--home", str(home), *args],
            stdout=self.fh,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=env,
        )

    def output(self) -> str:
        return self.log.read_text()

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self.fh.close()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        self.proc.send_signal(sig)

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.fh.close()


def jobs(home: Path) -> list[Job]:
    """Every job of the home's queue, newest first."""
    with JobQueue(Home(home).jobs_db) as queue:
        return queue.newest()


def status(home: Path) -> dict[str, Any]:
    """status/training_status.json, or {} before there is one (or while it is replaced)."""
    try:
        return json.loads(Home(home).training_status.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def complete_checkpoints(home: Path, job_id: int) -> list[int]:
    """The steps of a job's checkpoints that carry the completeness marker."""
    folder = Home(home).run_dir(job_id) / "checkpoints"
    return sorted(
        int(p.name.split("-")[1])
        for p in folder.glob("checkpoint-*")
        if (p / COMPLETE_MARKER).exists()
    )


def drop_demo(home: Path, name: str = "demo.jsonl") -> Path:
    """The demo file dropped into the inbox whole (written beside it, then renamed in)."""
    tmp = home / f".{name}.tmp"
    tmp.write_bytes(DEMO.read_bytes())
    dest = Home(home).inbox / name
    tmp.rename(dest)
    return dest


def bench_run_on_disk(
    home: Home,
    name: str,
    answers: list[str],
    references: list[str] | None = None,
    cut: frozenset[int] = frozenset(),
) -> None:
    """A finished bench run written directly (no model), as `bench list` and `compare` read it;
    `references` are the golden answers, `cut` the answers that stopped at max_tokens."""
    from daemon.bench.backends import Completion
    from daemon.bench.prompts import BenchPrompt
    from daemon.bench.runner import result_row
    from daemon.bench.state import BenchState, RunInfo

    d = home.bench_dir(name)
    d.mkdir(parents=True)
    with open(d / "results.jsonl", "w") as fh:
        for i, text in enumerate(answers):
            c = Completion(f"q{i}", text, 5, 3, "length" if i in cut else "stop", 100.0, 100.5)
            prompt = BenchPrompt(f"q{i}", i + 1, reference=references[i] if references else None)
            fh.write(json.dumps(result_row(name, "m", prompt, c, None)) + "\n")
    info = RunInfo(
        name=name,
        fingerprint={"model": "m", "backend": "hf"},
        prompts_path="p.jsonl",
        total=len(answers),
        state=BenchState.COMPLETED,
    )
    info.save(d / "run.json")


def write_probe_snapshots(home: Home, dataset: str, input_text: str) -> None:
    """Two probe snapshots of one example (`ex_000`, prompt `input_text`), as `trainctl evolution`
    and the evolution page read them: answered wrong at step 0, right at step 10."""
    snaps = home.evolution_dir(dataset)
    snaps.mkdir(parents=True)
    for step, ok in ((0, False), (10, True)):
        example = {
            "example_id": "ex_000",
            "input": input_text,
            "expected_output": "a",
            "model_output": "a" if ok else "b",
            "loss": 0.1,
            "similarity": 1.0,
            "exact_match": ok,
            "golden_prob": 0.9,
            "metadata": {},
        }
        summary = {
            "avg_loss": 0.1,
            "accuracy": float(ok),
            "total_examples": 1,
            "correct": int(ok),
            "incorrect": int(not ok),
        }
        doc = {
            "snapshot_id": f"{dataset}_step_{step:06d}",
            "training_step": step,
            "examples": [example],
            "summary": summary,
        }
        (snaps / f"step_{step:06d}.json").write_text(json.dumps(doc))


def write_dynamics(run: Path, dataset_dir: Path) -> None:
    """Per-example dynamics in `run` (an existing run folder): two epochs over every row of the
    dataset's train split, all alike."""
    from daemon.runs.dynamics import RECORD

    (run / "dynamics.json").write_text(
        json.dumps({"dataset": dataset_dir.name, "train_split": str(dataset_dir / "train.jsonl")})
    )
    n = len((dataset_dir / "train.jsonl").read_text().splitlines())
    (run / "dynamics.bin").write_bytes(
        b"".join(
            RECORD.pack(i, e, e + 1, 0.5, 0.6, 0.5, 1.0, 5) for e in range(2) for i in range(n)
        )
    )


WORDS = (
    "apple river stone cloud tiger maple orbit piano lemon candle forest "
    "silver rocket garden window planet bridge coffee dragon mirror"
).split()


def planted_dataset(path: Path, n: int = 200, wrong_share: float = 0.1, seed: int = 3) -> set[str]:
    """Upper-case two words (a rule builtin:tiny learns); `wrong_share` of the answers are another
    pair's."""
    rng = random.Random(seed)
    pairs = list(itertools.permutations(WORDS, 2))
    rng.shuffle(pairs)
    wrong = set(rng.sample(range(n), int(n * wrong_share)))
    with open(path, "w") as fh:
        for i, (a, b) in enumerate(pairs[:n]):
            answer = f"{a.upper()} {b.upper()}"
            if i in wrong:
                c, d = rng.choice([p for p in pairs if a not in p and b not in p])
                answer = f"{c.upper()} {d.upper()}"
            fh.write(
                json.dumps(
                    {"prompt": f"Uppercase: {a} {b}", "completion": answer, "id": f"r{i:03d}"}
                )
                + "\n"
            )
    return {f"r{i:03d}" for i in wrong}


def packing_examples(tok) -> list[dict[str, list[int]]]:
    """Mixed lengths, a multi-turn one, a plain-text one whose loss starts at its second token."""
    convs = [
        [Message("user", "hi"), Message("assistant", "HELLO THERE")],
        [Message("user", "a much longer question " * 6), Message("assistant", "SHORT")],
        [
            Message("user", "q1"),
            Message("assistant", "A1"),
            Message("user", "q2"),
            Message("assistant", "A2!"),
        ],
        [Message("assistant", "plain text trained from its start", train=True)],
        [
            Message("system", "be brief"),
            Message("user", "why"),
            Message("assistant", "BECAUSE " * 5),
        ],
    ]
    return [
        {"input_ids": e.input_ids, "labels": e.labels}
        for e in (encode_messages(tok, c, 512) for c in convs)
    ]


def small_model(path, lora: bool = True):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    m = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    m.config.use_cache = False
    if lora:
        m = get_peft_model(
            m, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
        )
    return m.eval()  # no dropout: both paths see the same function
