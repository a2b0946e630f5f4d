"""Per-example dynamics from the training forward pass: the figures equal a separate evaluation
pass, the record survives resume and torn writes, and on data with planted wrong answers the
whole-dataset view finds them."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.app import app
from daemon.home import Home
from daemon.runs.dynamics import RECORD, aggregate, read_records
from tests.helpers import TINY_SETTINGS, packing_examples, planted_dataset, small_model

# CliRunner has no terminal: a wide console keeps Rich from folding table cells mid-phrase
pytestmark = pytest.mark.usefixtures("wide_console")

runner = CliRunner()


def _reference(model, examples, pad_id) -> list[tuple[float, float, float, float]]:
    """Per example, from a separate eval-mode padded pass: mean loss, golden probability, argmax
    share, margin."""
    import torch

    from daemon.chat.render import IGNORE
    from daemon.training.data import PadCollator

    model.eval()
    with torch.no_grad():
        batch = PadCollator(pad_id)(
            [{"input_ids": e["input_ids"], "labels": e["labels"]} for e in examples]
        )
        logits = model(**batch).logits.float()
    out = []
    for i in range(len(examples)):
        target = batch["labels"][i, 1:]
        keep = target != IGNORE
        lg, tg = logits[i, :-1][keep], target[keep]
        logp = torch.log_softmax(lg, -1)
        gold = logp.gather(1, tg[:, None])[:, 0]
        other = lg.clone()
        other.scatter_(1, tg[:, None], float("-inf"))
        out.append(
            (
                -gold.mean().item(),
                gold.exp().mean().item(),
                (lg.argmax(-1) == tg).float().mean().item(),
                (lg.gather(1, tg[:, None])[:, 0] - other.max(-1).values).mean().item(),
            )
        )
    return out


@pytest.mark.parametrize("packing", [True, False])
def test_recorded_figures_equal_a_separate_eval_pass(home, tmp_path, packing):
    """The training forward pass (train mode, no dropout) gives each example the figures an
    eval-mode pass gives, packed rows split by example."""
    from transformers import TrainingArguments

    from daemon.config import TrainConfig
    from daemon.home import Home
    from daemon.models.loading import load_tokenizer, resolve_model_path
    from daemon.training.dynamics_recorder import DynamicsRecorder
    from daemon.training.packing import Batching

    models = Home.open(home).models
    tok = load_tokenizer("builtin:tiny", models)
    examples = [{**e, "index": i} for i, e in enumerate(packing_examples(tok))]
    b = Batching(
        examples, TrainConfig(packing=packing, batch_size=5, max_length=512), tok.pad_token_id
    )
    model = small_model(resolve_model_path("builtin:tiny", models))
    recorder = DynamicsRecorder(tmp_path, "d", tmp_path / "train.jsonl", len(examples))
    args = TrainingArguments(
        str(tmp_path / "out"),
        report_to="none",
        use_cpu=True,
        per_device_train_batch_size=b.batch_size,
    )
    trainer = b.trainer_class(
        model=model,
        args=args,
        train_dataset=b.dataset,
        data_collator=b.collator,
        dynamics=recorder,
    )
    model.train()
    batch = b.collator([b.dataset[k] for k in range(len(b.dataset))] if packing else examples)
    trainer.compute_loss(model, batch)
    got = {i: (lo, p, c, m) for i, lo, p, c, m, _ in recorder.buffer}
    assert sorted(got) == list(range(len(examples)))
    for i, ref in enumerate(_reference(model, examples, tok.pad_token_id)):
        for a, r in zip(got[i], ref):
            assert abs(a - r) <= 1e-4 * max(1.0, abs(r)), (i, got[i], ref)


def test_resume_drops_the_redone_steps_and_a_torn_tail(tmp_path):
    from types import SimpleNamespace

    from daemon.training.dynamics_recorder import DynamicsRecorder

    rec = DynamicsRecorder(tmp_path, "d", tmp_path / "train.jsonl", 4)
    path = tmp_path / "dynamics.bin"
    rows = [(i % 4, s // 4, s, 1.0, 0.5, 0.0, -1.0, 3) for s in range(1, 9) for i in range(2)]
    # a torn tail
    path.write_bytes(b"".join(RECORD.pack(*r) for r in rows) + RECORD.pack(*rows[0])[:7])
    assert len(read_records(path)) == len(rows)  # the torn tail is ignored by readers
    rec.on_train_begin(None, SimpleNamespace(global_step=5), None)  # resumed from checkpoint-5
    kept = read_records(path)
    assert [r[2] for r in kept] == [s for s in range(1, 6) for _ in range(2)]
    assert path.stat().st_size == len(kept) * RECORD.size
    # The resumed run appends after them; step 6 is recorded once
    rec.buffer = [(3, 2.0, 0.2, 0.0, -2.0, 4)]
    rec.on_epoch_begin(None, SimpleNamespace(epoch=1.25), None)
    rec.on_step_end(None, SimpleNamespace(global_step=6), None)
    last = read_records(path)[-1]
    assert last[:3] == (3, 1, 6) and [r[2] for r in read_records(path)].count(6) == 1
    assert json.loads((tmp_path / "dynamics.json").read_text())["fields"][0] == "example"


def test_per_example_summary_forgetting_aum_and_suspects():
    # 40 examples over 3 epochs: 36 learned (probability up, margin positive), 3 mislabelled (low
    # and flat, negative margin), 1 forgotten in the last epoch.
    recs = []
    for ex in range(40):
        for epoch in range(3):
            if ex < 36:
                p, c, m = (0.5, 0.6, 0.5) if epoch == 0 else (0.9, 1.0, 3.0)
                if ex == 35 and epoch == 2:
                    p, c, m = 0.85, 0.5, 2.0
            else:
                p, c, m = 0.05, 0.0, -3.0
            recs.append((ex, epoch, epoch * 10 + 1, -__import__("math").log(p), p, c, m, 4))
    dyn = {e.index: e for e in aggregate(recs)}
    assert (
        dyn[0].cls == "easy"
        and dyn[0].correctness == pytest.approx(2 / 3)
        and dyn[0].forgetting_events == 0
    )
    assert dyn[35].forgetting_events == 1 and dyn[35].right == [False, True, False]
    # Confidence and AUM leave the first epoch out when there are later ones (the model was still
    # learning the task)
    assert dyn[0].aum == pytest.approx(3.0) and dyn[0].confidence == pytest.approx(0.9)
    assert dyn[35].confidence == pytest.approx(0.875)
    assert dyn[35].variability == pytest.approx(0.025)
    assert [i for i, e in dyn.items() if e.suspect] == [36, 37, 38, 39]
    # A model that learned nothing suspects nothing: everyone is equally lost
    flat = [(ex, 1, 1, 3.0, 0.05 + 0.001 * ex, 0.0, -3.0, 4) for ex in range(40)]
    assert not any(e.suspect for e in aggregate(flat))
    # One epoch says when an example came more than what it is: no suspects from it
    assert not any(e.suspect for e in aggregate([r for r in recs if r[1] == 0]))


@pytest.mark.slow
def test_whole_dataset_dynamics_find_planted_wrong_answers_on_tiny(home, tmp_path):
    planted = planted_dataset(tmp_path / "planted.jsonl", n=300)
    Home(home).settings_file.write_text(
        TINY_SETTINGS + "evolution_examples = 20\neval_steps = -1\n[curation]\n"
        "min_quality = 0\nmin_diversity = 0\nval_fraction = 0\ntest_fraction = 0\n"
    )
    r = runner.invoke(
        app, ["train", str(tmp_path / "planted.jsonl"), "--home", str(home), "--epochs", "6"]
    )
    assert r.exit_code == 0, r.output
    _check_signal(home, planted, "builtin:tiny")


def _check_signal(
    home: Path,
    planted: set[str],
    model: str,
    suspect_recall: float = 0.5,
    suspect_precision: float = 0.7,
) -> None:
    r = runner.invoke(app, ["evolution", "--home", str(home), "--json", "--limit", "0"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    examples = doc["examples"]
    # every training example, not a probe
    assert len(examples) == 300 and sum(doc["classes"].values()) == 300
    # no epoch counted twice
    assert all(len(e["per_epoch"]) == len(examples[0]["per_epoch"]) for e in examples)
    ranked = sorted(examples, key=lambda e: e["confidence"])
    low = ranked[: int(0.15 * len(ranked))]
    recall = len({e["example_id"] for e in low} & planted) / len(planted)
    suspects = {e["example_id"] for e in examples if e["suspect_label"]}
    precision = len(suspects & planted) / max(1, len(suspects))
    by_aum = sorted(examples, key=lambda e: e["aum"])[: int(0.15 * len(ranked))]
    aum_recall = len({e["example_id"] for e in by_aum} & planted) / len(planted)
    print(
        f"{model}: lowest-confidence 15% hold {recall:.0%} of the planted (lowest "
        f"AUM: {aum_recall:.0%}); suspect_label: {len(suspects)} flagged, precision "
        f"{precision:.2f}, recall {len(suspects & planted) / len(planted):.2f}"
    )
    assert recall >= 0.9 and precision >= suspect_precision
    assert len(suspects & planted) >= suspect_recall * len(planted)

    # The same suspects are flags, with their figures, and a cleaned copy goes back to the inbox
    r = runner.invoke(
        app, ["flags", "--reason", "suspect_label", "--home", str(home), "--json", "--limit", "0"]
    )
    flags = json.loads(r.output)["flags"]
    median_aum = statistics.median(e["aum"] for e in examples)
    assert {f["example_id"] for f in flags} == suspects
    assert all(f["dynamics"]["aum"] < median_aum and f["golden"] and f["messages"] for f in flags)
    r = runner.invoke(app, ["evolution", "--home", str(home), "--sort", "aum", "--limit", "5"])
    assert r.exit_code == 0 and "suspected label errors" in r.output and "suspect" in r.output
    r = runner.invoke(
        app,
        ["evolution", "export", "--without", "suspect_label", "--to-inbox", "--home", str(home)],
    )
    assert r.exit_code == 0, r.output
    (clean,) = Home(home).inbox.glob("*.clean.jsonl")
    ids = [json.loads(x)["id"] for x in clean.read_text().splitlines()]
    assert len(ids) == 300 - len(suspects) and not set(ids) & suspects


@pytest.mark.slow
def test_whole_dataset_dynamics_find_planted_wrong_answers_on_the_real_model(
    home, tmp_path, smollm2
):
    planted = planted_dataset(tmp_path / "planted.jsonl", n=300)
    Home(home).settings_file.write_text(
        '[train]\nmodel = "builtin:smollm2-135m"\nevolution_examples = 0\n'
        "eval_steps = -1\n"
        "final_eval_examples = 0\n"
        "[curation]\n"
        "min_quality = 0\n"
        "min_diversity = 0\n"
        "val_fraction = 0\n"
        "test_fraction = 0\n"
    )
    r = runner.invoke(
        app, ["train", str(tmp_path / "planted.jsonl"), "--home", str(home), "--epochs", "2"]
    )
    assert r.exit_code == 0, r.output
    _check_signal(home, planted, "builtin:smollm2-135m", suspect_recall=0.9, suspect_precision=0.8)


DDP_SCRIPT = r"""
import json, os, sys
from pathlib import Path
from transformers import TrainingArguments
from daemon.config import TrainConfig
from daemon.distributed.rank import leave_group
from daemon.home import Home
from daemon.models.loading import load_tokenizer, resolve_model_path
from daemon.training.dynamics_recorder import DynamicsRecorder
from daemon.training.packing import Batching
from tests.helpers import packing_examples, small_model

home, out = Path(sys.argv[1]), Path(sys.argv[2])
models = Home.open(home).models
tok = load_tokenizer("builtin:tiny", models)
examples = [{**e, "index": i} for i, e in enumerate(packing_examples(tok) * 4)]  # 20 examples
b = Batching(examples, TrainConfig(packing=True, batch_size=2, max_length=512), tok.pad_token_id)
recorder = DynamicsRecorder(out, "d", out / "train.jsonl", len(examples))
args = TrainingArguments(
    str(out / "ckpt"), report_to="none", use_cpu=True, ddp_backend="gloo", num_train_epochs=2,
    per_device_train_batch_size=1, save_strategy="no", logging_steps=1,
)
model = small_model(resolve_model_path("builtin:tiny", models)).train()
trainer = b.trainer_class(
    model=model, args=args, train_dataset=b.dataset, data_collator=b.collator, dynamics=recorder
)
trainer.train()
leave_group()
# Past this point only the interpreter's teardown is left, where torch's threads now and then
# abort the process ("terminate called without an active exception", exit -6) after everything
# was written
sys.stdout.flush()
sys.stderr.flush()
os._exit(0)
"""


@pytest.mark.slow
def test_two_processes_gather_every_example_to_rank_zero(home, tmp_path):
    """Under torchrun (2 CPU processes, gloo) each process trains half the micro-batches; rank 0
    writes every example's record, once per epoch."""
    import os
    import subprocess
    import sys

    from tests.helpers import ROOT

    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    out = tmp_path / "run"
    out.mkdir()
    env = {
        **os.environ,
        "GLOO_SOCKET_IFNAME": "lo",
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
    }
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            "2",
            "--master-addr",
            "127.0.0.1",
            "--master-port",
            "29533",
            str(script),
            str(home),
            str(out),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    records = read_records(out / "dynamics.bin")
    by_epoch = {e: sorted({x[0] for x in records if x[1] == e}) for e in (0, 1)}
    assert by_epoch == {0: list(range(20)), 1: list(range(20))}, by_epoch
    # When the micro-batches do not split evenly, the sampler repeats a few to even them out (as
    # DDP does): those examples really are trained twice, and their two passes make one epoch's
    # figures
    assert len(records) < 40 + 10 and all(e.epochs == [0, 1] for e in aggregate(records))
