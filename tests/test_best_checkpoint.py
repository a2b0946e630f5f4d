"""Best checkpoint, early stopping and the regression alert, on builtin:tiny runs engineered to
peak and degrade (TRAINCTL_FAULT=lr_jump_at_step multiplies the learning rate late in the run) or
to plateau (a tiny learning rate)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.app import app
from daemon.home import Home
from daemon.jobs import JobQueue, JobState
from daemon.runs.checkpoints import COMPLETE_MARKER
from tests.helpers import DEMO, TINY_SETTINGS, wait_for

runner = CliRunner()
PEAK_THEN_DEGRADE = "lr_jump_at_step=80x30"
RUN = Path("data") / "runs" / "job-00001"


def _jobs(home: Path):
    with JobQueue(Home(home).jobs_db) as q:
        return q.newest()


def _checkpoints(home: Path) -> list[int]:
    return sorted(
        int(p.name.split("-")[1])
        for p in (home / RUN / "checkpoints").glob("checkpoint-*")
        if (p / COMPLETE_MARKER).exists()
    )


def _alerts(home: Path) -> list[dict]:
    return [json.loads(x) for x in (home / RUN / "alerts.jsonl").read_text().splitlines()]


def _fixed_set_em(home: Path, adapter: Path) -> float:
    """Greedy exact match of `adapter` on the run's fixed evaluation set (the validation split)."""
    from peft import PeftModel

    from daemon.config import TrainConfig
    from daemon.models.loading import load_model, load_tokenizer
    from daemon.training.data import read_split
    from daemon.training.outputs import exact_match

    config = json.loads((home / RUN / "config.json").read_text())
    rows = read_split(Path(config["dataset_dir"]) / "val.jsonl")[
        : config["train"]["fixed_eval_examples"]
    ]
    tok = load_tokenizer("builtin:tiny", Home(home).models)
    model = PeftModel.from_pretrained(
        load_model("builtin:tiny", Home(home).models, "cpu"), str(adapter)
    ).eval()
    # as the run resolved it
    cfg = TrainConfig(max_new_tokens=32, max_length=config["train"]["max_length"])
    return exact_match(model, tok, rows, cfg, autocast=None)["exact_match"]


def test_best_record_tie_breaks_progress_early_stop_and_resume():
    """The rules on made-up evaluations: EM first, CE breaks ties; progress needs a better EM or a
    CE 1% lower."""
    from types import SimpleNamespace

    from transformers import TrainerControl, TrainerState

    from daemon.training.collectors.best_checkpoint import BestCheckpoint

    ev = SimpleNamespace(last=None)
    best = BestCheckpoint(ev, metric="exact_match", patience=2)
    state = TrainerState(max_steps=100)

    def evaluated(step: int, em: float, ce: float) -> TrainerControl:
        state.global_step = step
        ev.last = {"step": step, "exact_match": em, "cross_entropy": ce}
        return best.on_step_end(None, state, TrainerControl())

    # the best becomes a checkpoint
    assert evaluated(10, 0.0, 2.0).should_save and state.best_global_step == 10
    evaluated(20, 0.0, 1.5)  # same EM, clearly lower CE: a new best, and progress
    assert state.best_global_step == 20 and best.stale == 0
    # lower CE by less than 1%: the best moves, but it is no progress
    c = evaluated(30, 0.0, 1.499)
    assert state.best_global_step == 30 and best.stale == 1 and not c.should_training_stop
    evaluated(40, 0.5, 3.0)  # a higher EM wins whatever the CE
    assert state.best_global_step == 40 and state.best_metric == 0.5 and best.stale == 0
    state.global_step = 45  # a step without an evaluation is not scored
    assert not best.on_step_end(None, state, TrainerControl()).should_save and best.stale == 0
    evaluated(50, 0.4, 1.0)
    c = evaluated(60, 0.5, 3.5)
    assert state.best_global_step == 40 and c.should_training_stop and c.should_save
    assert best.stopped_early.startswith(
        "stopped early at step 60: exact_match did not improve in 2 evaluations"
    )
    # the record travels in the Trainer's state
    resumed = BestCheckpoint(ev, metric="exact_match", patience=2)
    resumed.on_train_begin(None, state, None)
    assert resumed.best["step"] == 40 and resumed.stale == 2
    assert best.report(60) == {
        **best.report(60),
        "step": 40,
        "last_step": 60,
        "gain_over_last": 0.0,
        "checkpoint": "checkpoint-40",
        "is_last": False,
    }


@pytest.mark.slow
def test_the_best_checkpoint_outlives_rotation_and_the_regression_alert_names_it(
    home, monkeypatch
):
    Home(home).settings_file.write_text(TINY_SETTINGS + "evolution_examples = 0\n")
    monkeypatch.setenv("TRAINCTL_FAULT", PEAK_THEN_DEGRADE)
    r = runner.invoke(
        app,
        [
            "train",
            str(DEMO),
            "--home",
            str(home),
            "--epochs",
            "3",
            "--eval-steps",
            "10",
            "--save-steps",
            "10",
        ],
    )
    assert r.exit_code == 0, r.output
    result = json.loads((home / RUN / "result.json").read_text())
    best = result["best"]
    assert best["metric"] == "exact_match" and best["step"] < 80 < result["steps"]
    assert best["value"] >= best["last_value"] + 0.2 and not best["is_last"]
    # save_total_limit = 2 keeps the newest checkpoint and the best one, nothing else.
    assert _checkpoints(home) == [best["step"], result["steps"]]
    assert best["adapter_dir"] == str(home / RUN / "adapter-best")
    assert json.loads((home / RUN / "config.json").read_text())["best"]["step"] == best["step"]
    # adapter-best/ really holds the better weights.
    assert (
        _fixed_set_em(home, home / RUN / "adapter-best")
        >= _fixed_set_em(home, home / RUN / "adapter") + 0.2
    )
    # The regression alert fired once, after the peak, naming the checkpoint to use.
    regressions = [a for a in _alerts(home) if a["id"] == "regression" and a["event"] == "fired"]
    assert len(regressions) == 1 and regressions[0]["step"] > best["step"]
    assert (
        f"use checkpoint-{best['step']} (best, EM {best['value']:.0%})"
        in regressions[0]["recommendation"]
    )
    # The queue, the status and the bench say which one to use.
    (job,) = _jobs(home)
    assert f"best: checkpoint-{best['step']}" in job.message and "adapter-best/" in job.message
    status = json.loads(Home(home).training_status.read_text())
    assert (
        status["best_step"] == best["step"]
        and status["best_checkpoint"] == f"checkpoint-{best['step']}"
    )
    b = runner.invoke(
        app, ["bench", "run", "--home", str(home), "--job", "1", "--best", "--max-tokens", "32"]
    )
    assert b.exit_code == 0, b.output
    run = json.loads((Home(home).bench_root / "job-1-best" / "run.json").read_text())
    assert run["fingerprint"]["adapter"] == str(home / RUN / "adapter-best")
    wrong = runner.invoke(
        app, ["bench", "run", "--home", str(home), "--job", "1", "--best", "--base"]
    )
    assert wrong.exit_code == 1 and "--base and --best do not go together" in wrong.output


@pytest.mark.slow
def test_early_stopping_ends_a_plateaued_run_as_done(home):
    Home(home).settings_file.write_text(
        TINY_SETTINGS + "evolution_examples = 0\nearly_stop_patience = 3\n"
    )
    r = runner.invoke(
        app,
        [
            "train",
            str(DEMO),
            "--home",
            str(home),
            "--epochs",
            "10",
            "--eval-steps",
            "10",
            "--lr",
            "1e-6",
        ],
    )
    assert r.exit_code == 0, r.output
    (job,) = _jobs(home)
    result = json.loads((home / RUN / "result.json").read_text())
    # best at 10, then 20, 30, 40 without progress
    assert job.state == JobState.DONE and result["steps"] == 40
    assert (
        "stopped early at step 40" in job.message
        and "did not improve in 3 evaluations" in job.message
    )
    assert result["stopped_early"].startswith("stopped early at step 40")
    assert (
        40 in _checkpoints(home)
        and (home / RUN / "adapter" / "adapter_model.safetensors").exists()
    )
    status = json.loads(Home(home).training_status.read_text())
    assert status["state"] == "done" and status["message"].startswith("stopped early")


@pytest.mark.slow
def test_kill_9_after_the_best_checkpoint_keeps_it_through_resume(home, daemons):
    Home(home).settings_file.write_text(
        TINY_SETTINGS + "evolution_examples = 0\neval_steps = 10\nsave_steps = 10\n"
    )
    os.environ["TRAINCTL_FAULT"] = PEAK_THEN_DEGRADE
    try:
        d = daemons(home, "--epochs", "3")
    finally:
        del os.environ["TRAINCTL_FAULT"]

    def status() -> dict:
        try:
            return json.loads(Home(home).training_status.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    (Home(home).inbox / "demo.jsonl").write_bytes(DEMO.read_bytes())
    wait_for(
        lambda: status().get("best_step") and max(_checkpoints(home) or [0]) >= 100,
        300,
        "a best checkpoint and a complete checkpoint after the jump",
    )
    best_before = status()["best_step"]
    worker = _jobs(home)[0].worker_pid
    d.kill(signal.SIGKILL)
    d.wait(10)
    os.kill(worker, signal.SIGKILL)
    # the resumed run degrades as the first one did
    os.environ["TRAINCTL_FAULT"] = PEAK_THEN_DEGRADE
    try:
        d2 = daemons(home, "--once")
    finally:
        del os.environ["TRAINCTL_FAULT"]
    assert d2.wait(300) == 0, d2.output()
    (job,) = _jobs(home)
    assert job.state == JobState.DONE and "resumed from checkpoint-" in job.message
    result = json.loads((home / RUN / "result.json").read_text())
    assert result["best"]["step"] == best_before and best_before in _checkpoints(home)
    assert (home / RUN / "adapter-best" / "adapter_model.safetensors").exists()
