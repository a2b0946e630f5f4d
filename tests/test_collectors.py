"""Collectors in a plain transformers Trainer (as anyone would use them), and the alerts they raise
on injected faults: a frozen LoRA layer is named dead, a learning rate 100x too high is caught."""

from __future__ import annotations

import json

import pytest

from daemon.config import CurationConfig, TrainConfig
from daemon.curation.curator import Curator
from daemon.home import Home
from daemon.training.collectors.alerts import Alerts
from daemon.training.collectors.fixed_eval import FixedEval, expected_calibration_error
from daemon.training.collectors.lora_monitor import LoRAMonitor
from daemon.training.collectors.streaming import StreamingMetrics
from tests.helpers import DEMO


@pytest.fixture(scope="module")
def demo_rows(tmp_path_factory, tiny_models):
    from daemon.models.loading import load_tokenizer

    tok = load_tokenizer("builtin:tiny", tiny_models)
    out = tmp_path_factory.mktemp("ds") / "demo"
    Curator(CurationConfig(), TrainConfig(), tokenizer=tok).run(DEMO, out)
    return tok, [json.loads(x) for x in (out / "train.jsonl").read_text().splitlines()]


def _trainer(
    tmp_path, tiny_models, demo_rows, lr: float, steps: int, callbacks, freeze: str | None = None
):
    """A plain Trainer + peft on builtin:tiny: nothing of trainctl's recipe but the callbacks under
    test."""
    from peft import LoraConfig, get_peft_model
    from transformers import Trainer, TrainingArguments

    from daemon.models.loading import load_model
    from daemon.training.data import PadCollator, encode_rows

    tok, rows = demo_rows
    model = get_peft_model(
        load_model("builtin:tiny", tiny_models, "cpu"),
        LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM"),
    )
    if freeze:
        for name, p in model.named_parameters():
            if freeze in name and "lora_" in name:
                p.requires_grad_(False)
    args = TrainingArguments(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=8,
        learning_rate=lr,
        max_steps=steps,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
        remove_unused_columns=False,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=encode_rows(tok, rows, 512, "assistant"),
        data_collator=PadCollator(tok.pad_token_id),
    )
    for cb in callbacks:
        trainer.add_callback(cb)
    return trainer


def test_frozen_lora_layer_is_named_dead(tmp_path, tiny_models, demo_rows):
    streaming, lora = StreamingMetrics(), LoRAMonitor(every=1, dead_after=10)
    alerts = Alerts(streaming, lora, log_path=tmp_path / "alerts.jsonl")
    _trainer(
        tmp_path,
        tiny_models,
        demo_rows,
        3e-3,
        25,
        [streaming, lora, alerts],
        freeze="layers.1.self_attn.q_proj",
    ).train()
    assert lora.dead() == ["base_model.model.model.layers.1.self_attn.q_proj"] or lora.dead() == [
        "model.layers.1.self_attn.q_proj"
    ]
    assert "dead_layers" in alerts.active and "q_proj" in alerts.active["dead_layers"].message
    s = lora.summary()
    assert s["lora_summary"]["layers"] == 21 and len(s["lora_stats"]) == 21
    live = [v for k, v in s["lora_stats"].items() if "layers.1.self_attn.q_proj" not in k]
    assert all(v["update"] > 0 and v["grad_norm"] > 0 for v in live)
    assert streaming.summary()["streaming_ce"] > 0 and streaming.summary()["token_entropy"] > 0
    events = [json.loads(x) for x in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    # fired once, not repeated
    assert [e["id"] for e in events if e["event"] == "fired"].count("dead_layers") == 1


def test_learning_rate_100x_too_high_is_caught(home):
    """The real recipe at lr 0.3, 100x builtin:tiny's default: a spike, divergence or exploding
    gradients, early."""
    from typer.testing import CliRunner

    from cli.app import app

    r = CliRunner().invoke(
        app,
        [
            "train",
            str(DEMO),
            "--home",
            str(home),
            "--lr",
            "0.3",
            "--max-steps",
            "40",
            "--eval-steps",
            "-1",
        ],
    )
    assert r.exit_code == 0, r.output
    events = [
        json.loads(x) for x in (Home(home).run_dir(1) / "alerts.jsonl").read_text().splitlines()
    ]
    caught = [
        e
        for e in events
        if e["event"] == "fired"
        and e["id"] in ("loss_spike", "exploding_gradients", "lr_too_high")
    ]
    assert caught and caught[0]["step"] <= 30, events
    assert {e["severity"] for e in caught} == {"warning"}


def test_healthy_settings_raise_no_warning(tmp_path, tiny_models, demo_rows):
    streaming, lora = StreamingMetrics(), LoRAMonitor()
    alerts = Alerts(streaming, lora)
    _trainer(tmp_path, tiny_models, demo_rows, 3e-3, 40, [streaming, lora, alerts]).train()
    serious = {k for k in alerts.fired if k not in ("plateau", "gradient_imbalance")}
    assert serious == set(), alerts.fired


def test_alert_fires_once_stays_active_and_resolves():
    class S:  # the streaming collector's interface, driven by hand
        last_loss, ema, steps, trend_window = 1.0, 1.0, 20, 50

        def improvement(self):
            return None

    s = S()
    alerts = Alerts(streaming=s)
    s.last_loss = 5.0
    alerts.check(21)
    alerts.check(22)
    assert list(alerts.active) == ["loss_spike"] and alerts.fired == {"loss_spike": 1}
    s.last_loss = 1.0
    alerts.check(23)
    assert alerts.active == {} and alerts.fired == {"loss_spike": 1}
    s.last_loss = float("nan")
    alerts.check(24)
    assert alerts.critical is not None and alerts.critical.id == "nan_loss"


def test_ece_on_known_values():
    assert expected_calibration_error([0.9] * 10, [True] * 9 + [False]) == pytest.approx(0.0)
    assert expected_calibration_error([0.9] * 10, [False] * 10) == pytest.approx(0.9)
    assert expected_calibration_error([0.2, 0.8], [False, True]) == pytest.approx(0.2)


def test_fixed_eval_measures_em_ce_ece(tmp_path, tiny_models, demo_rows):
    from daemon.models.loading import load_model

    tok, rows = demo_rows
    model = load_model("builtin:tiny", tiny_models, "cpu")
    ev = FixedEval(tok, rows[:8], eval_steps=10)
    res = ev.evaluate(model, 0)
    # an untrained model gets nothing right
    assert res["examples"] == 8 and res["exact_match"] == 0.0
    assert res["cross_entropy"] > 3 and 0 <= res["ece"] <= 1
    assert len(ev.last_results) == 8 and {"prompt", "golden", "output", "loss", "matches"} <= set(
        ev.last_results[0]
    )
    assert ev.summary()["fixed_eval_em"] == 0.0 and ev.summary()["accuracy_last_20"] == 0.0


def test_mfu_only_where_the_peak_is_known():
    from daemon.training.collectors.throughput import peak_flops

    assert peak_flops("NVIDIA H100 80GB HBM3", True) == 989e12
    assert peak_flops("NVIDIA H100 PCIe", True) == 756e12
    assert peak_flops("NVIDIA A100-SXM4-40GB", True) == 312e12
    # fp32: tensor-core peaks do not apply
    assert peak_flops("NVIDIA H100 80GB HBM3", False) is None
    assert peak_flops("Some Future GPU", True) is None
