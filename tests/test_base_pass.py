"""The base pass before training: one pass with the adapter off gives the step-0 snapshot and the
held-out base figures, and what it answers is what answering the test rows alone, with the adapter
off, gives."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from cli.app import app
from daemon.home import Home
from tests.helpers import DEMO


def test_one_base_pass_gives_the_step_zero_snapshot_and_the_base_figures(home):
    import torch
    from peft import PeftModel

    from daemon.config import TrainConfig
    from daemon.models.loading import load_model, load_tokenizer
    from daemon.training.data import read_split
    from daemon.training.outputs import BASE_TEST_FILE, exact_match

    r = CliRunner().invoke(app, ["train", str(DEMO), "--home", str(home), "--max-steps", "12"])
    assert r.exit_code == 0, r.output
    assert "base model: " in r.output and "held-out test exact match" in r.output
    h = Home(home)
    run = h.run_dir(1)
    result = json.loads((run / "result.json").read_text())
    config = json.loads((run / "config.json").read_text())
    dataset = Path(config["dataset_dir"])
    test = read_split(dataset / "test.jsonl")[: config["train"]["final_eval_examples"]]
    snapshots = h.evolution_dir(dataset.name)
    step0 = json.loads((snapshots / "step_000000.json").read_text())

    # One pass answered both sets; the final checks took the base figures from it instead of
    # answering again.
    assert result["base_pass"]["examples"] == len(step0["examples"]) + len(test) > len(test) > 0
    assert result["base_pass"]["snapshot_examples"] == len(step0["examples"])
    base = json.loads((run / BASE_TEST_FILE).read_text())
    assert result["base_test_eval"] == base and base["count"] == len(test)
    assert step0["decoded"] and step0["training_step"] == 0
    # The budget counted none of the base pass; the last snapshot came from the final checks' pass
    # (whole, its first examples the training examples checked, answered alike).
    assert result["snapshots"][0] == 0 and result["snapshots"][-1] == result["steps"] == 12
    assert result["snapshot_seconds"] < result["base_pass"]["seconds"]
    last = json.loads((snapshots / "step_000012.json").read_text())
    assert last["decoded"] and len(last["examples"]) == len(step0["examples"])
    checked = result["train_eval"]["count"]
    right = sum(e["exact_match"] for e in last["examples"][:checked])
    assert result["train_eval"]["exact_match"] == round(right / checked, 4)

    # The test rows answered alone with the adapter switched off, as the final checks would have:
    # the same.
    tok = load_tokenizer("builtin:tiny", h.models)
    model = PeftModel.from_pretrained(
        load_model("builtin:tiny", h.models, "cpu"), str(run / "adapter")
    )
    cfg = TrainConfig(
        **{k: v for k, v in config["train"].items() if k in TrainConfig.__dataclass_fields__}
    )
    with torch.no_grad(), model.disable_adapter():
        alone = exact_match(model, tok, test, cfg, config["precision"]["autocast"])
    assert alone == base
