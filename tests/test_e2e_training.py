"""End to end on the tiny model: it learns, it resumes after kill -9, it stops cleanly, crashes
stay contained."""

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.app import app
from daemon.home import Home
from daemon.jobs import JobState
from daemon.runs.training_status import STATUS_KEYS
from tests.helpers import DEMO, ROOT, complete_checkpoints, drop_demo, jobs, status, wait_for

pytestmark = pytest.mark.slow
runner = CliRunner()


def test_demo_job_learns_and_leaves_adapter_config_and_metrics(home):
    r = runner.invoke(app, ["train", str(DEMO), "--home", str(home), "--epochs", "6"])
    assert r.exit_code == 0, r.output
    (job,) = jobs(home)
    assert job.state == JobState.DONE
    run = Home(home).run_dir(1)
    result = json.loads((run / "result.json").read_text())
    assert result["train_eval"]["count"] == 64
    assert result["train_eval"]["exact_match"] >= 0.9, result["train_eval"]
    adapter = Path(job.adapter_dir)
    assert (adapter / "adapter_model.safetensors").stat().st_size > 0
    assert json.loads((adapter / "adapter_config.json").read_text())["r"] == 16
    cfg = json.loads((adapter / "trainctl_config.json").read_text())
    # resolved, defaults filled in
    assert cfg["train"]["epochs"] == 6 and cfg["train"]["lr"] == 3e-3
    # max_length "auto" became the curation's number: 99% of the records whole, a multiple of 64
    chosen = json.loads((Path(job.dataset_dir) / "stats.json").read_text())["max_length"]
    assert cfg["train"]["max_length"] == chosen["value"] == cfg["max_length_auto"]["value"]
    assert cfg["max_length_auto"]["chosen_at"] == "curation" and chosen["value"] % 64 == 0
    assert (
        chosen["share_tokens"] <= chosen["value"] < chosen["share_tokens"] + 64
        and chosen["longer"] <= 4
    )
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) >= result["steps"] and rows[-1]["current_step"] == result["steps"]
    assert rows[0]["loss"] > rows[-1]["loss"]  # it learned
    st = status(home)
    assert st["state"] == "done" and st["current_step"] == st["total_steps"] == result["steps"]
    assert st["tokens_per_sec_avg"] > 0
    assert st["max_length"].startswith(f"{chosen['value']} tokens (auto: 99% of all ")
    # Every documented status field is there (flagged_count comes with flagged examples).
    for f in (
        "state",
        "job_id",
        "dataset",
        "current_step",
        "total_steps",
        "epoch",
        "loss",
        "learning_rate",
        "streaming_ce",
        "loss_variance",
        "token_entropy",
        "loss_trend",
        "tokens_per_sec",
        "tokens_per_sec_avg",
        "throughput_trend",
        "eta_seconds",
        "lora_stats",
        "lora_summary",
        "active_alerts",
        "alert_summary",
        "fixed_eval_em",
        "fixed_eval_ce",
        "fixed_eval_ece",
        "fixed_eval_trend",
        "accuracy_last_20",
        "accuracy_last_50",
        "updated_at",
    ):
        assert f in st, f
    # ... and nothing the schema that `trainctl status` and the browser read (TrainingStatus) does
    # not declare
    assert set(st) - STATUS_KEYS == set()
    assert (
        st["fixed_eval_em"] >= 0.9
        and st["fixed_eval_ece"] < 0.3
        and st["lora_summary"]["dead"] == []
    )
    assert len(st["lora_stats"]) == 21 and st["token_entropy"] > 0
    # A healthy run raises no warning or critical alert, but for the gradient spikes this run
    # really has early on (builtin:tiny at lr 3e-3: a norm of ~50 among ~2s, each with a loss
    # bump); each is raised and resolved.
    events = (
        [json.loads(x) for x in (run / "alerts.jsonl").read_text().splitlines()]
        if (run / "alerts.jsonl").exists()
        else []
    )
    warned = [e for e in events if e["severity"] != "info"]
    assert {e["id"] for e in warned} <= {"grad_spike"}, warned
    assert all("its running level" in e["message"] for e in warned)
    assert sum(e["event"] == "fired" for e in warned) == sum(
        e["event"] == "resolved" for e in warned
    )
    assert "streaming_ce" in rows[-1] and "fixed_eval_em" in rows[-1]
    # Early evaluations, before the model has learned, flag what it got wrong; the last one, which
    # it gets right, resolves them: the open flags are the final model's mistakes.
    flags = json.loads(Home(home).flagged_file.read_text())["flags"]
    assert flags and {f["reason"] for f in flags} <= {"mismatch", "high_loss"}
    assert all(f["file"] == st["dataset"] and f["job"] == 1 for f in flags)
    still_wrong = round((1 - st["fixed_eval_em"]) * st["fixed_eval_examples"])
    assert st["flagged_count"] == sum(not f["resolved"] for f in flags) >= still_wrong
    assert all(
        f["resolved_by"] == "auto" and "right again at step" in f["change"]
        for f in flags
        if f["resolved"]
    )
    # The job's adapter and its base model on the job's held-out test split, then compared side by
    # side.
    for extra in ([], ["--base"]):
        r = runner.invoke(
            app, ["bench", "run", "--home", str(home), "--job", "1", "--max-tokens", "64", *extra]
        )
        assert r.exit_code == 0, r.output

    def exact(name: str) -> float:
        rows = [
            json.loads(x)
            for x in (Home(home).bench_root / name / "results.jsonl").read_text().splitlines()
        ]
        assert rows and all(x["reference"] for x in rows)
        return sum(
            " ".join(x["response"]["body"]["choices"][0]["message"]["content"].split())
            == x["reference"]
            for x in rows
        ) / len(rows)

    # the adapter learned the task; the base did not
    assert exact("job-1") >= 0.8 and exact("job-1-base") == 0.0
    cmp = json.loads(
        runner.invoke(
            app, ["bench", "compare", "job-1-base", "job-1", "--home", str(home), "--json"]
        ).output
    )
    assert cmp["pairs"][0]["agree"] == 0 and all(row["disagree"] for row in cmp["rows"])
    # Every kept checkpoint in one model (builtin:tiny: transformers, with the adapters switched,
    # unmerged).
    r = runner.invoke(
        app, ["bench", "sweep", "--job", "1", "--max-tokens", "64", "--home", str(home), "--json"]
    )
    assert r.exit_code == 0, r.output
    sweep = json.loads(r.stdout)
    rows = {row["label"]: row for row in sweep["rows"]}
    steps = complete_checkpoints(home, 1)
    assert [label for label in rows if label.startswith("step-")] == [f"step-{s}" for s in steps]
    assert list(rows)[0] == "base" and list(rows)[-1] == "final"
    assert rows["base"]["exact_match"] == 0.0 and rows["final"]["exact_match"] == exact("job-1")
    assert rows["final"]["agreement_with_final"] == 1.0 and sweep["best"]["exact_match"] >= 0.8
    final_run = json.loads((Home(home).bench_root / "job-1-sweep-final" / "run.json").read_text())
    assert final_run["engine"]["backend"] == "hf"
    # The first kept checkpoint as an adapter folder of its own: its weights, the job's tokenizer
    # and settings.
    r = runner.invoke(app, ["export", "1", "--checkpoint", str(steps[0]), "--home", str(home)])
    assert r.exit_code == 0, r.output
    out = home / "data" / "exports" / f"job-1-step-{steps[0]}-adapter"
    ckpt = Home(home).run_dir(1) / "checkpoints" / f"checkpoint-{steps[0]}"
    assert (out / "adapter_model.safetensors").read_bytes() == (
        ckpt / "adapter_model.safetensors"
    ).read_bytes()
    assert (out / "trainctl_config.json").exists() and (out / "tokenizer_config.json").exists()
    r = runner.invoke(app, ["export", "1", "--checkpoint", "99999", "--home", str(home)])
    assert r.exit_code == 1 and "no complete checkpoint at step 99999" in r.output
    # The same content with the same settings again is refused unless forced.
    again = runner.invoke(app, ["train", str(DEMO), "--home", str(home), "--epochs", "6"])
    assert again.exit_code == 1 and "same content and settings as job 1" in again.output, (
        again.output
    )
    assert "--force" in again.output


@pytest.mark.parametrize(
    "kill_worker_too", [False, True], ids=["daemon-only", "daemon-and-worker"]
)
def test_kill_9_mid_training_resumes_from_checkpoint(home, daemons, kill_worker_too):
    d = daemons(home, "--epochs", "20", "--save-steps", "40")
    drop_demo(home)
    assert wait_for(
        lambda: jobs(home) and jobs(home)[0].state == JobState.TRAINING, 60, "training to start"
    )
    wait_for(
        lambda: complete_checkpoints(home, 1) and status(home).get("current_step", 0) > 50,
        120,
        "a complete checkpoint and some progress past it",
    )
    worker = jobs(home)[0].worker_pid
    d.kill(signal.SIGKILL)
    d.wait(10)
    if kill_worker_too:
        os.kill(worker, signal.SIGKILL)  # like a power cut: nobody gets to save
    wait_for(
        lambda: (
            not os.path.exists(f"/proc/{worker}")
            or open(f"/proc/{worker}/stat").read().split(")")[-1].split()[0] == "Z"
        ),
        60,
        "worker to end",
    )
    resume_from = max(complete_checkpoints(home, 1))
    d2 = daemons(home, "--once")
    assert d2.wait(300) == 0, d2.output()
    (job,) = jobs(home)  # one job: nothing lost, nothing trained twice
    assert job.state == JobState.DONE, (job, d2.output())
    assert f"resumed from checkpoint-{resume_from}" in job.message
    assert job.attempts == 2
    assert (Home(home).inbox_done / "demo.jsonl").exists()
    assert list(Home(home).inbox.glob("*.jsonl")) == []
    result = json.loads((Home(home).run_dir(1) / "result.json").read_text())
    assert result["resumed_from"] == f"checkpoint-{resume_from}" and result["steps"] == 840
    # It resumed with the length its first start chose, and still says how that was chosen
    config = json.loads((Home(home).run_dir(1) / "config.json").read_text())
    assert config["train"]["max_length"] == config["max_length_auto"]["value"]
    # The steps redone after the checkpoint are in metrics.jsonl once, as if the run had never
    # stopped
    rows = (Home(home).run_dir(1) / "metrics.jsonl").read_text().splitlines()
    steps = [json.loads(row)["current_step"] for row in rows]
    assert steps == list(range(1, 841)), Counter(steps).most_common(3)


def test_stop_checkpoints_and_next_start_resumes(home, daemons):
    d = daemons(home, "--epochs", "20", "--save-steps", "500")
    drop_demo(home)
    wait_for(lambda: status(home).get("current_step", 0) >= 30, 120, "training progress")
    r = runner.invoke(app, ["stop", "--home", str(home), "--timeout", "120"])
    assert r.exit_code == 0, r.output
    assert d.wait(10) == 0
    (job,) = jobs(home)
    assert job.state == JobState.INTERRUPTED
    saved = complete_checkpoints(home, 1)
    assert saved and saved[-1] >= 30  # saved at the stop, not at save_steps=500
    d2 = daemons(home, "--once")
    assert d2.wait(300) == 0, d2.output()
    (job,) = jobs(home)
    assert job.state == JobState.DONE and f"resumed from checkpoint-{saved[-1]}" in job.message


def test_crashed_worker_fails_its_job_and_the_daemon_carries_on(home, daemons):
    d = daemons(home, "--max-steps", "400", "--once")
    drop_demo(home, "first.jsonl")
    wait_for(
        lambda: jobs(home) and jobs(home)[-1].state == JobState.TRAINING, 60, "first job training"
    )
    victim = next(j for j in jobs(home) if j.state == JobState.TRAINING)
    rows = DEMO.read_text().splitlines()
    # different content
    (Home(home).inbox / "second.jsonl").write_text("\n".join(rows[:200]) + "\n")
    time.sleep(1.0)
    os.kill(victim.worker_pid, signal.SIGKILL)  # what the OOM killer does
    assert d.wait(300) == 0, d.output()
    by_name = {j.file_name: j for j in jobs(home)}
    assert by_name["first.jsonl"].state == JobState.FAILED
    assert "killed by signal SIGKILL" in by_name["first.jsonl"].error
    assert by_name["second.jsonl"].state == JobState.DONE
    assert (Home(home).inbox_failed / "first.jsonl.error.txt").exists()
    r = runner.invoke(app, ["queue", "--home", str(home)], env={"COLUMNS": "250"})
    assert "killed by signal SIGKILL" in r.output.replace("\n", "")


def test_exception_in_a_job_is_recorded_with_a_traceback(home, daemons):
    broken = home / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text("{ this is not json")
    Home(home).settings_file.write_text(f'[train]\nmodel = "{broken}"\n')
    drop_demo(home, "x.jsonl")
    d = daemons(home, "--once")
    assert d.wait(120) == 0, d.output()
    (job,) = jobs(home)
    assert job.state == JobState.FAILED and "error.log" in job.error
    assert "Traceback" in (Home(home).run_dir(1) / "error.log").read_text()


def test_daemon_queues_a_dropped_file_and_status_shows_it(home, daemons):
    d = daemons(home, "--max-steps", "150")
    wait_for(lambda: Home(home).daemon_status.exists(), 30, "daemon start")
    t0 = time.time()
    drop_demo(home, "live.jsonl")
    wait_for(lambda: jobs(home), 10, "the job row")
    assert time.time() - t0 < 2.5
    wait_for(lambda: status(home).get("current_step", 0) >= 10, 120, "training progress")
    out = subprocess.run(
        [sys.executable, "-m", "cli", "status", "--home", str(home), "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    doc = json.loads(out)
    assert doc["daemon"]["status"] == "alive"
    assert doc["queue"]["current"]["file_name"] == "live.jsonl"
    t = doc["training"]
    for field in (
        "current_step",
        "total_steps",
        "epoch",
        "loss",
        "learning_rate",
        "tokens_per_sec",
        "eta_seconds",
    ):
        assert t.get(field) is not None, field
    assert t["total_steps"] == 150
    d.kill(signal.SIGTERM)
    assert d.wait(60) == 0


def test_nan_loss_stops_the_job_keeps_its_checkpoint_and_the_daemon_moves_on(home, daemons):
    """TRAINCTL_FAULT poisons the loss of the job on bad.jsonl from step 30; good.jsonl trains
    normally."""
    os.environ["TRAINCTL_FAULT"] = "nan_at_step=30@bad"
    try:
        d = daemons(home, "--epochs", "2", "--save-steps", "10", "--once")
    finally:
        del os.environ["TRAINCTL_FAULT"]
    drop_demo(home, "bad.jsonl")
    (Home(home).inbox / "good.jsonl").write_bytes(
        DEMO.read_bytes() + b'{"text": "one more record"}\n'
    )
    assert d.wait(300) == 0, d.output()
    by_file = {j.file_name: j for j in jobs(home)}
    bad, good = by_file["bad.jsonl"], by_file["good.jsonl"]
    assert bad.state == JobState.FAILED and "nan_loss (critical) at step 30" in bad.error, (
        bad.error
    )
    assert "checkpoint kept" in bad.error
    # the last good one; nothing saved after the NaN
    assert complete_checkpoints(home, bad.id)[-1] == 20
    events = [
        json.loads(x)
        for x in (Home(home).run_dir(bad.id) / "alerts.jsonl").read_text().splitlines()
    ]
    assert [e["id"] for e in events if e["severity"] == "critical"] == ["nan_loss"]
    # The status shows the NaN as NaN, never as a loss of 0
    status = json.loads(Home(home).job_status(bad.id).read_text())
    assert status["raw_loss"] == "NaN" and status["loss"] == "NaN", (
        status["raw_loss"],
        status["loss"],
    )
    assert good.state == JobState.DONE
    assert (Home(home).inbox_failed / "bad.jsonl.error.txt").exists()


@pytest.mark.slow
def test_export_adapter_and_merged_model_answer_like_base_plus_adapter(home, tmp_path):
    """`trainctl export JOB --merge`: a plain transformers folder whose greedy answers on the
    demo's held-out split equal the base model + adapter's; the adapter export is the adapter; the
    inbox is refused as a destination."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from daemon.chat.messages import messages_of, tools_of
    from daemon.chat.render import prompt_text
    from daemon.models.generation import generate_texts
    from daemon.models.loading import load_adapter, load_model
    from daemon.training.data import read_split

    r = runner.invoke(app, ["train", str(DEMO), "--home", str(home), "--epochs", "2"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(
        app, ["export", "1", "--home", str(home), "--to", str(Home(home).inbox / "x")]
    )
    assert r.exit_code == 1 and "inside the inbox" in r.output
    r = runner.invoke(app, ["export", "1", "--home", str(home)])
    assert r.exit_code == 0, r.output
    adapter = home / "data" / "exports" / "job-1-adapter"
    assert (adapter / "adapter_model.safetensors").exists() and (
        adapter / "trainctl_config.json"
    ).exists()
    r = runner.invoke(
        app, ["export", "1", "--merge", "--home", str(home), "--to", str(tmp_path / "merged")]
    )
    assert r.exit_code == 0, r.output
    merged_dir = tmp_path / "merged"
    assert {
        "config.json",
        "model.safetensors",
        "generation_config.json",
        "tokenizer_config.json",
    } <= {p.name for p in merged_dir.iterdir()}
    assert not list(merged_dir.glob("adapter_*"))  # an ordinary model, no peft needed
    r = runner.invoke(
        app, ["export", "1", "--merge", "--home", str(home), "--to", str(tmp_path / "merged")]
    )
    assert r.exit_code == 1 and "already exists" in r.output

    rows = read_split(next(Home(home).datasets.iterdir()) / "test.jsonl")
    tok = AutoTokenizer.from_pretrained(str(merged_dir))
    prompts = [prompt_text(tok, messages_of(row), tools_of(row)) for row in rows]
    merged = AutoModelForCausalLM.from_pretrained(str(merged_dir)).eval()
    tuned = load_adapter(
        load_model("builtin:tiny", Home(home).models, device="cpu", dtype="fp32"),
        Home(home).run_dir(1) / "adapter",
    ).eval()
    a = [x["text"] for x in generate_texts(merged, tok, prompts, max_new_tokens=24)]
    b = [x["text"] for x in generate_texts(tuned, tok, prompts, max_new_tokens=24)]
    assert a == b and len(a) == len(rows) > 5
