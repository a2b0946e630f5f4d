"""Diagnostics the model's final state confirms: flags are the current model's mistakes, suspected
labels survive a run that goes wrong and a model that memorises them, evolution says what one epoch
can say, the status and the alerts carry today's figures, and the job log tells the story."""

from __future__ import annotations

import json
import os
import warnings

import pytest
from typer.testing import CliRunner

from cli.app import app
from daemon.config import AlertsConfig, ConfigError, load_settings
from daemon.home import Home
from daemon.runs.dynamics import learning_window, load
from daemon.runs.flag_store import FlagStore
from tests.helpers import DEMO, TINY_SETTINGS, WORDS, jobs, write_jsonl

pytestmark = pytest.mark.usefixtures("wide_console")
runner = CliRunner()
PEAK_THEN_DEGRADE = "lr_jump_at_step=100x30"


# -- the parts, on made-up figures ---------------------------------------------------------------


def test_alert_messages_follow_the_figures_and_a_gradient_spike_warns():
    from types import SimpleNamespace

    from daemon.training.collectors.alerts import Alerts

    stream = SimpleNamespace(
        last_loss=0.5, ema=0.5, steps=10, trend_window=50, improvement=lambda: None
    )
    alerts = Alerts(streaming=stream, limits=AlertsConfig(grad_spike_factor=4.0))
    alerts.check(10)
    stream.ema = stream.last_loss = 0.9  # climbed 80% over its best
    alerts.check(11)
    assert "0.9 at step 11" in alerts.active["lr_too_high"].message
    stream.ema = stream.last_loss = 4.37
    alerts.check(12)
    assert (
        "4.37 at step 12" in alerts.active["lr_too_high"].message
    )  # the figure of now, not of when it fired
    assert alerts.active["lr_too_high"].since_step == 11
    state = SimpleNamespace(global_step=0)
    for step, norm in enumerate([2.0, 2.1, 1.9, 2.0, 2.2, 2.0, 2.1, 47.0, 2.0], start=1):
        state.global_step = step
        alerts.on_log(None, state, None, logs={"grad_norm": norm})
        if step == 8:
            assert (
                "grad_spike" in alerts.active
                and "47 at step 8" in alerts.active["grad_spike"].message
            )
    assert "grad_spike" not in alerts.active and alerts.fired["grad_spike"] == 1


def test_alert_thresholds_are_settings_checked_all_at_once(tmp_path):
    path = tmp_path / "trainctl.toml"
    path.write_text("[alerts]\ngrad_spike_factor = 0.5\nmax_ece = 2\nplateau_steps = 80\n")
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    said = str(err.value)
    assert "alerts.grad_spike_factor must be > 1" in said and "alerts.max_ece" in said
    path.write_text("[alerts]\nplateau_steps = 80\nmax_ece = 0.5\n")
    assert load_settings(path).alerts.plateau_steps == 80


def test_accuracy_last_n_counts_examples_not_evaluations():
    from daemon.training.collectors.fixed_eval import FixedEval

    ev = FixedEval.__new__(FixedEval)
    from collections import deque

    ev.recent = deque(
        [False] * 14 + [True] * 14, maxlen=50
    )  # two evaluations of 14: all wrong, then all right
    assert ev._accuracy_last(20) == 0.7 and ev._accuracy_last(50) == 0.5


def test_the_learning_part_ends_before_divergence_and_at_the_best_checkpoint():
    fired = [
        {"event": "fired", "id": "loss_spike", "step": 101},
        {"event": "fired", "id": "lr_too_high", "step": 102},
        {"event": "resolved", "id": "loss_spike", "step": 105},
        {"event": "fired", "id": "regression", "step": 110, "best_step": 90},
    ]
    assert learning_window(fired[:2]) == (
        100,
        "the run went bad at step 101 (lr_too_high fired at step 102)",
    )
    end, why = learning_window(fired)
    assert end == 90 and "best checkpoint (step 90" in why
    assert learning_window([{"event": "fired", "id": "plateau", "step": 50}]) == (None, "")


def test_a_run_that_never_learned_reports_no_suspects_and_says_why(tmp_path):
    from daemon.runs.dynamics import DYNAMICS_FILE, HEADER_FILE, RECORD

    # 40 examples, 3 epochs, the loss flat at 3.0 with a few low outliers: nothing was learned
    recs = [
        (
            ex,
            ep,
            ep * 5 + ex // 8 + 1,
            3.0,
            0.05 if ex < 3 else 0.3,
            0.0,
            -3.0 if ex < 3 else 0.5,
            4,
        )
        for ep in range(3)
        for ex in range(40)
    ]
    (tmp_path / DYNAMICS_FILE).write_bytes(b"".join(RECORD.pack(*r) for r in recs))
    (tmp_path / HEADER_FILE).write_text(json.dumps({"dataset": "flat", "examples": 40}))
    run = load(tmp_path)
    assert run.suspects() == [] and "did not learn the task" in run.suspects_note
    assert run.epochs_used == [0, 1, 2] and "epochs 2-3 of 3" in run.epochs_said()


def test_library_names_follow_the_installed_transformers():
    from daemon.models.library_names import cache_argument, checkpointing_args

    class Renamed:
        def forward(self, input_ids=None, cache=None): ...

    class Old:
        def forward(self, input_ids=None, past_key_values=None): ...

    assert cache_argument(Renamed()) == "cache" and cache_argument(Old()) == "past_key_values"
    args = checkpointing_args(True)
    assert list(args.values()) == [True, {"use_reentrant": False}]


# -- whole runs ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_run_that_goes_wrong_keeps_true_flags_few_suspects_and_tells_its_story(home, daemons):
    """Clean data (every record right) with a 30x learning-rate jump at step 100 of 168: the run
    learns, peaks and degrades. Flags are the last evaluation's mistakes; suspects come from the
    learning part only."""
    Home(home).settings_file.write_text(
        TINY_SETTINGS + "evolution_examples = 20\neval_steps = 10\nsave_steps = 10\nepochs = 4\n"
    )
    os.environ["TRAINCTL_FAULT"] = PEAK_THEN_DEGRADE
    try:
        d = daemons(home, "--once")
    finally:
        del os.environ["TRAINCTL_FAULT"]
    (Home(home).inbox / "demo_uppercase.jsonl").write_bytes(DEMO.read_bytes())
    assert d.wait(400) == 0, d.output()
    (job,) = jobs(home)
    run = Home(home).run_dir(job.id)
    result = json.loads((run / "result.json").read_text())
    best = result["best"]["step"]
    assert best < 100 < result["steps"]
    # Suspected labels: only over the part of the run that learned, which ends at the best
    # checkpoint
    dyn = result["dynamics"]
    assert dyn["suspect_label"] <= 2 and dyn["learning_until_step"] == best, dyn
    # Flags: the open flags of the job are exactly the last evaluation's mistakes; flagged_count
    # says so
    status = json.loads(Home(home).job_status(job.id).read_text())
    wrong_last = round((1 - status["fixed_eval_em"]) * status["fixed_eval_examples"])
    store = FlagStore(Home(home).flagged_file)
    mismatches = store.query("mismatch", job=job.id)
    assert len(mismatches) == wrong_last > 0 and all(
        f["step"] == result["steps"] for f in mismatches
    )
    assert status["flagged_count"] == store.stats(job=job.id)["open"]
    assert status["flags_resolved_this_run"] > 0  # learned examples were resolved before the jump
    assert len({f["example"] for f in store.load()}) == len(store.load())  # one flag per example
    # Status as scripts read it
    assert status["accuracy_trend"] in ("improving", "stable", "degrading")
    assert 0 < status["lora_summary"]["active_layers"] <= status["lora_summary"]["layers"]
    assert status["accuracy_last_20"] is not None and status["accuracy_last_50"] is not None
    # The job log tells the story
    log = Home(home).job_log(job.id).read_text()
    for line in (
        "collectors started: ",
        "snapshot at step 0: ",
        "flags at step 10: ",
        "right again",
        "new best checkpoint: checkpoint-",
        "alert raised at step ",
        "alert resolved at step ",
        "lr_too_high",
        "suspected label errors: ",
    ):
        assert line in log, line
    # Evolution: found under the dataset's own name, and says which epochs it used and why
    stable = Home(home).evolution_root / "demo_uppercase"
    assert stable.is_symlink() and (stable / "step_000000.json").exists()
    r = runner.invoke(app, ["evolution", "demo_uppercase", "--home", str(home), "--json"])
    doc = json.loads(r.output)
    epochs = doc["epochs"]
    assert epochs["used"] == [1, 2] and f"up to step {best}" in epochs["said"], epochs


@pytest.mark.slow
def test_one_epoch_says_what_it_can_and_two_say_which_epochs(home, tmp_path):
    Home(home).settings_file.write_text(
        TINY_SETTINGS + "evolution_examples = 0\neval_steps = -1\n"
    )
    r = runner.invoke(app, ["train", str(DEMO), "--home", str(home), "--epochs", "1"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["evolution", "--home", str(home)])
    assert "classes need two or more epochs" in r.output and "first right" in r.output, r.output
    assert "examples by first_right" in r.output
    doc = json.loads(
        runner.invoke(app, ["evolution", "--home", str(home), "--json", "--limit", "0"]).output
    )
    assert (
        doc["sort"] == "first_right"
        and doc["suspect_label"] == 0
        and "two or more" in doc["suspects_note"]
    )
    rights = [e["first_right_step"] for e in doc["examples"]]
    # never answered right comes first
    assert rights[0] is None and all(s is None or s >= 1 for s in rights)
    one = doc["examples"][0]["example_id"]
    r = runner.invoke(app, ["evolution", "--home", str(home), "--example", one])
    assert "no class after one epoch" in r.output and "first right never" in r.output, r.output
    r = runner.invoke(
        app, ["evolution", "export", "--only", "hard", "--out", "hard.jsonl", "--home", str(home)]
    )
    assert r.exit_code == 1 and "classes need two or more epochs" in r.output

    r = runner.invoke(app, ["train", str(DEMO), "--home", str(home), "--epochs", "2"])
    assert r.exit_code == 0, r.output
    doc = json.loads(runner.invoke(app, ["evolution", "--home", str(home), "--json"]).output)
    assert doc["epochs"]["used"] == [1, 2] and "epoch 2 of 2" in doc["epochs"]["said"]
    assert "variability needs two such epochs" in doc["epochs"]["said"] and doc["sort"] == "aum"
    r = runner.invoke(
        app,
        [
            "evolution",
            "export",
            "--only",
            "ambiguous",
            "--out",
            "amb.jsonl",
            "--home",
            str(home),
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["written"] == doc["classes"]["ambiguous"]


@pytest.mark.slow
def test_twenty_epochs_of_memorising_still_rank_the_planted_lowest(home, tmp_path):
    """builtin:tiny learns to copy two words and, given 20 epochs, memorises the 10% planted wrong
    answers."""
    import itertools
    import random

    rng = random.Random(3)
    pairs = list(itertools.permutations(WORDS, 2))
    rng.shuffle(pairs)
    wrong = set(rng.sample(range(200), 20))
    rows = []
    for i, (a, b) in enumerate(pairs[:200]):
        c, e = (
            rng.choice([p for p in pairs if a not in p and b not in p]) if i in wrong else (a, b)
        )
        rows.append({"prompt": f"Repeat: {a} {b}", "completion": f"{c} {e}", "id": f"r{i:03d}"})
    write_jsonl(tmp_path / "copy.jsonl", rows)
    Home(home).settings_file.write_text(
        TINY_SETTINGS + "evolution_examples = 0\neval_steps = -1\n[curation]\n"
        "min_quality = 0\nmin_diversity = 0\nval_fraction = 0\ntest_fraction = 0\n"
    )
    r = runner.invoke(
        app, ["train", str(tmp_path / "copy.jsonl"), "--home", str(home), "--epochs", "20"]
    )
    assert r.exit_code == 0, r.output
    result = json.loads((Home(home).run_dir(1) / "result.json").read_text())
    assert result["train_eval"]["exact_match"] >= 0.9  # it did memorise the planted answers
    doc = json.loads(
        runner.invoke(app, ["evolution", "--home", str(home), "--json", "--limit", "0"]).output
    )
    planted = {f"r{i:03d}" for i in wrong}
    lowest = {
        e["example_id"] for e in doc["examples"][: int(0.15 * len(doc["examples"]))]
    }  # by AUM
    suspects = {e["example_id"] for e in doc["examples"] if e["suspect_label"]}
    print(
        f"lowest-AUM 15% hold {len(lowest & planted) / len(planted):.0%} of the "
        f"planted; suspects {len(suspects)}, of them planted {len(suspects & planted)}"
    )
    assert len(lowest & planted) >= 0.8 * len(planted)
    assert len(suspects & planted) >= 0.8 * len(suspects) > 0


@pytest.mark.slow
def test_a_training_run_prints_no_future_warning(home):
    Home(home).settings_file.write_text(
        TINY_SETTINGS + "evolution_examples = 4\ngradient_checkpointing = true\n"
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = runner.invoke(
            app,
            ["train", str(DEMO), "--home", str(home), "--max-steps", "12", "--eval-steps", "6"],
        )
    assert r.exit_code == 0, r.output
    future = [
        f"{w.filename}:{w.lineno}: {w.message}"
        for w in caught
        if issubclass(w.category, FutureWarning)
    ]
    assert future == [] and "FutureWarning" not in r.output, future
