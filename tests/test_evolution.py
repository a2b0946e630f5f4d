"""Evolution snapshots and `trainctl evolution`: the SPEC schedule and file format, and a
signal-quality test — the examples evolution ranks hardest are the ones whose answers were planted
wrong."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cli.app import app
from daemon.home import Home
from daemon.runs.snapshots import datasets, load
from daemon.training.collectors.evolution_snapshots import is_snapshot_step
from tests.helpers import TINY_SETTINGS, planted_dataset

# CliRunner has no terminal: a wide console keeps Rich from folding table cells mid-phrase
pytestmark = pytest.mark.usefixtures("wide_console")

runner = CliRunner()


def test_snapshot_schedule_is_the_specs():
    steps = [s for s in range(0, 26001) if is_snapshot_step(s)]
    assert steps[:12] == [0, 10, 25, 50, 100, 150, 200, 250, 500, 750, 1000, 1500]
    assert steps[-8:] == [15000, 20000, 21000, 22000, 23000, 24000, 25000, 26000]


@pytest.mark.parametrize("max_steps, last", [(252, 250), (300, 300), (1000, 1000), (7, 7)])
def test_last_step_is_snapshotted_unless_a_scheduled_one_is_near(tmp_path, max_steps, last):
    from types import SimpleNamespace

    from daemon.training.collectors.evolution_snapshots import EvolutionSnapshots

    ev = EvolutionSnapshots(None, [{"messages": []}], tmp_path, "d")
    # when, not what: no model needed
    ev.snapshot = lambda model, step, **kw: ev.taken.append(step)
    for step in range(1, max_steps + 1):
        ev.on_step_end(
            None, SimpleNamespace(global_step=step, max_steps=max_steps), None, model=object()
        )
    assert ev.taken[-1] == last and ev.taken == sorted(set(ev.taken))
    assert all(is_snapshot_step(s) for s in ev.taken[:-1])


@pytest.mark.slow
def test_lowest_confidence_examples_are_the_planted_wrong_answers(home, tmp_path):
    planted = planted_dataset(tmp_path / "planted.jsonl")
    # Keep every record (the quality check would catch some planted answers, which is another
    # story) and probe all, at every step of the SPEC schedule (no diagnostics budget thinning it).
    Home(home).settings_file.write_text(
        TINY_SETTINGS + "evolution_examples = 1000\neval_steps = -1\n"
        "diagnostics_budget = 0\n"
        "[curation]\n"
        "min_quality = 0\n"
        "min_diversity = 0\n"
        "val_fraction = 0\n"
        "test_fraction = 0\n"
    )
    r = runner.invoke(
        app, ["train", str(tmp_path / "planted.jsonl"), "--home", str(home), "--epochs", "6"]
    )
    assert r.exit_code == 0, r.output
    # the timestamped folder (its stable-name link left out)
    (folder,) = datasets(Home(home).evolution_root)
    assert (Home(home).evolution_root / "planted").resolve() == folder.resolve()
    steps = sorted(int(p.stem.split("_")[1]) for p in folder.glob("step_*.json"))
    assert steps[:6] == [0, 10, 25, 50, 100, 150]
    snap = json.loads((folder / "step_000100.json").read_text())
    assert snap["snapshot_id"] == f"{folder.name}_step_000100" and snap["training_step"] == 100
    assert snap["model_version"] == "training" and snap["summary"]["total_examples"] == 200
    ex = snap["examples"][0]
    assert (
        set(ex)
        >= {
            "example_id",
            "input",
            "expected_output",
            "model_output",
            "loss",
            "similarity",
            "exact_match",
            "metadata",
        }
        and ex["example_id"] == "ex_000"
    )
    assert snap["summary"]["correct"] + snap["summary"]["incorrect"] == 200

    evo = load(folder)
    ranked = evo.hardest()
    top = ranked[: int(0.15 * len(ranked))]
    caught = {e.metadata["id"] for e in top} & planted
    recall, precision = len(caught) / len(planted), len(caught) / len(top)
    print(
        f"planted wrong answers in the hardest 15%: recall {recall:.2f}, precision {precision:.2f}"
    )
    assert recall >= 0.8, (recall, precision)
    # The rule-following examples are learned; the planted ones are the ones it fails on or learns
    # last.
    assert evo.curve[-1]["accuracy"] >= 0.85 and evo.curve[0]["accuracy"] == 0.0

    r = runner.invoke(app, ["evolution", "--home", str(home), "--json", "--limit", "0"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert [c["step"] for c in doc["curve"]] == steps and sum(doc["classes"].values()) == 200
    assert doc["sort"] == "aum" and doc["examples"][0]["aum"] <= doc["examples"][-1]["aum"]
    r = runner.invoke(app, ["evolution", "--home", str(home), "--limit", "5"])
    assert (
        r.exit_code == 0
        and "accuracy and loss over snapshots" in r.output
        and "every training example" in r.output
    )
    r = runner.invoke(app, ["evolution", "--home", str(home), "--limit", "5", "--probe"])
    assert r.exit_code == 0 and "probe examples, hardest first" in r.output
    hard_id = top[0].example_id
    r = runner.invoke(app, ["evolution", folder.name, "--home", str(home), "--example", hard_id])
    assert r.exit_code == 0 and "learning curve" in r.output and top[0].expected in r.output
    r = runner.invoke(app, ["evolution", "--home", str(home), "--example", "ex_999"])
    assert r.exit_code == 1 and "no example 'ex_999'" in r.output
    r = runner.invoke(app, ["evolution", "nope", "--home", str(home)])
    assert r.exit_code == 1 and "no evolution for dataset 'nope'" in r.output


def test_a_failing_snapshot_is_logged_and_training_goes_on(home, tmp_path):
    from daemon.models.loading import load_tokenizer
    from daemon.training.collectors.evolution_snapshots import EvolutionSnapshots

    class Broken:
        training = True

        def parameters(self):
            raise RuntimeError("CUDA out of memory")

        def eval(self):
            self.training = False

        def train(self):
            self.training = True

    tok = load_tokenizer("builtin:tiny", Home(home).models)
    rows = [
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    ]
    ev = EvolutionSnapshots(tok, rows, tmp_path / "snaps", "d")
    model = Broken()
    assert ev.snapshot(model, 10) is None  # no exception reaches the Trainer
    assert model.training and ev.taken == [] and not (tmp_path / "snaps").exists()
    assert ev.summary() == {"evolution_errors": ["step 10: RuntimeError: CUDA out of memory"]}
