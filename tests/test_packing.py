"""Padding-free batches compute exactly what padded ones do, with no attention across examples."""

from __future__ import annotations

import pytest

from daemon.chat.render import IGNORE, encode_messages
from daemon.home import Home
from daemon.training.data import PadCollator
from daemon.training.packing import PackedCollator, plan_batches
from tests.helpers import packing_examples, small_model


def _per_example_padded(model, examples, pad_id):
    import torch

    batch = PadCollator(pad_id)(examples)
    logits = model(**batch).logits.float()
    out = []
    for i, ex in enumerate(examples):
        n = len(ex["input_ids"])
        target = batch["labels"][i, 1:n]
        ce = torch.nn.functional.cross_entropy(
            logits[i, : n - 1], target, ignore_index=IGNORE, reduction="sum"
        )
        out.append((ce, int((target != IGNORE).sum())))
    return out, logits


def _per_example_packed(model, rows, pad_id):
    """rows: lists of example dicts; returns per-example (summed CE, trained tokens) in row order,
    and the logits."""
    import torch

    batch = PackedCollator(pad_id)([rows])
    inputs = {
        k: v for k, v in batch.items() if k not in ("attention_mask", "shift_labels", "labels")
    }
    logits = model(**inputs).logits.float()
    out = []
    for r, row in enumerate(rows):
        at = 0
        for ex in row:
            n = len(ex["input_ids"])
            target = batch["shift_labels"][r, at : at + n]
            ce = torch.nn.functional.cross_entropy(
                logits[r, at : at + n], target, ignore_index=IGNORE, reduction="sum"
            )
            out.append((ce, int((target != IGNORE).sum())))
            at += n
    return out, logits, batch


def _check_equal(model_path, tok):
    import torch

    examples = packing_examples(tok)
    pad = tok.pad_token_id
    rows = [[examples[0], examples[1], examples[2]], [examples[3], examples[4]]]
    flat = [ex for row in rows for ex in row]

    model = small_model(model_path)
    padded, _ = _per_example_padded(model, flat, pad)
    total = sum(c for c, _ in padded) / sum(n for _, n in padded)
    total.backward()
    grads_padded = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()

    packed, _, batch = _per_example_packed(model, rows, pad)
    # the same trained tokens, example by example
    assert [n for _, n in packed] == [n for _, n in padded]
    for (a, _), (b, _) in zip(padded, packed):
        assert abs(a.item() - b.item()) <= 1e-5 * max(1.0, abs(a.item()))
    total_packed = sum(c for c, _ in packed) / sum(n for _, n in packed)
    total_packed.backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(p.grad, grads_padded[name], atol=1e-5, rtol=1e-4, msg=name)

    # The model's own loss (what the Trainer optimises): the mean over trained tokens, equal on
    # both paths.
    with torch.no_grad():
        loss_padded = model(**PadCollator(pad)(flat)).loss
        inputs = {k: v for k, v in batch.items() if k != "attention_mask"}
        loss_packed = model(**inputs).loss
    assert abs(loss_padded.item() - loss_packed.item()) <= 1e-5
    # Across an accumulation window the Trainer passes num_items_in_batch (all trained tokens of
    # the window): the micro-batches' losses add up to the padded batch's mean.
    n_items = sum(n for _, n in packed)
    with torch.no_grad():
        parts = [
            model(
                **{
                    k: v for k, v in PackedCollator(pad)([[[ex]]]).items() if k != "attention_mask"
                },
                num_items_in_batch=n_items,
            ).loss
            for ex in flat
        ]
    assert abs(sum(p.item() for p in parts) - loss_padded.item()) <= 1e-5


def test_packed_batch_equals_padded_on_tiny(home):
    from daemon.models.loading import load_tokenizer, resolve_model_path

    models = Home.open(home).models
    _check_equal(
        resolve_model_path("builtin:tiny", models), load_tokenizer("builtin:tiny", models)
    )


@pytest.mark.slow
def test_packed_batch_equals_padded_on_the_real_model(smollm2):
    from daemon.models.loading import load_tokenizer

    _check_equal(smollm2, load_tokenizer(str(smollm2), smollm2))


def test_no_attention_across_examples(home):
    import torch

    from daemon.models.loading import load_tokenizer, resolve_model_path

    models = Home.open(home).models
    tok = load_tokenizer("builtin:tiny", models)
    model = small_model(resolve_model_path("builtin:tiny", models), lora=False)
    a, b, c = packing_examples(tok)[:3]
    changed = {"input_ids": [(t + 7) % 200 + 30 for t in b["input_ids"]], "labels": b["labels"]}
    with torch.no_grad():
        _, before, _ = _per_example_packed(model, [[a, b, c]], tok.pad_token_id)
        _, after, _ = _per_example_packed(model, [[a, changed, c]], tok.pad_token_id)
    na, nb = len(a["input_ids"]), len(b["input_ids"])
    assert torch.equal(before[0, :na], after[0, :na])  # before b: causal anyway
    # after b: unchanged
    torch.testing.assert_close(before[0, na + nb :], after[0, na + nb :], atol=1e-6, rtol=0)
    assert not torch.allclose(before[0, na : na + nb], after[0, na : na + nb])


def test_plan_is_reproducible_full_and_within_budget():
    import random

    rng = random.Random(3)
    lengths = [int(rng.lognormvariate(4, 0.9)) % 500 + 10 for _ in range(3000)]
    plan = plan_batches(lengths, 512, 2048, seed=1)
    assert plan == plan_batches(lengths, 512, 2048, seed=1) and plan != plan_batches(
        lengths, 512, 2048, seed=2
    )
    seen = sorted(i for batch in plan for row in batch for i in row)
    assert seen == list(range(3000))  # every example once
    assert all(sum(lengths[i] for i in row) <= 512 for batch in plan for row in batch)
    # about the budget
    assert all(sum(lengths[i] for r in batch for i in r) <= 2048 + 512 // 2 for batch in plan)
    # Micro-batches are full (about total / budget of them) and their rows, padded to the longest,
    # waste little.
    assert abs(len(plan) - sum(lengths) / 2048) <= 0.03 * len(plan) + 1
    padded = sum(max(sum(lengths[i] for i in r) for r in batch) * len(batch) for batch in plan)
    assert sum(lengths) / padded > 0.95


def test_each_epoch_has_its_own_plan_with_as_many_steps():
    import random

    rng = random.Random(4)
    lengths = [rng.randint(20, 400) for _ in range(1500)]
    first = plan_batches(lengths, 512, 1500, seed=7)
    for epoch in (1, 2, 5):
        plan = plan_batches(lengths, 512, 1500, seed=7, epoch=epoch, count=len(first))
        # The same number of steps (the Trainer fixed the epoch's length), every example once, new
        # company
        assert len(plan) == len(first) and plan == plan_batches(
            lengths, 512, 1500, 7, epoch, len(first)
        )
        assert sorted(i for b in plan for r in b for i in r) == list(range(1500))
        rows = lambda p: {frozenset(r) for b in p for r in b}  # noqa: E731
        assert len(rows(plan) & rows(first)) < 0.05 * len(rows(first))
        tokens = [sum(lengths[i] for r in b for i in r) for b in plan]
        # only the few micro-batches that made up the count differ
        assert sum(t > 2 * 1500 for t in tokens) <= 2


def test_the_trainer_replans_each_epoch_and_sees_every_example_each_time(home, tmp_path):
    from transformers import TrainingArguments

    from daemon.config import TrainConfig
    from daemon.models.loading import load_tokenizer, resolve_model_path
    from daemon.training.packing import Batching

    models = Home.open(home).models
    tok = load_tokenizer("builtin:tiny", models)
    examples = packing_examples(tok) * 8  # 40 examples
    cfg = TrainConfig(packing=True, batch_size=4, max_length=512)
    b = Batching(examples, cfg, tok.pad_token_id)
    trainer = b.trainer_class(
        model=small_model(resolve_model_path("builtin:tiny", models)).train(),
        args=TrainingArguments(
            str(tmp_path / "out"),
            per_device_train_batch_size=1,
            num_train_epochs=3,
            save_strategy="no",
            report_to="none",
            use_cpu=True,
            logging_steps=1,
        ),
        train_dataset=b.dataset,
        data_collator=b.collator,
    )
    plans = []
    original = b.dataset.set_epoch

    def spy(epoch):  # the dataloader may call it too: once per epoch is what counts
        original(epoch)
        if not plans or plans[-1][0] != epoch:
            plans.append((epoch, [list(map(list, batch)) for batch in b.dataset.plan]))

    b.dataset.set_epoch = spy
    trainer.train()
    assert [e for e, _ in plans] == [0, 1, 2]  # set as each epoch began
    assert trainer.state.global_step == 3 * len(b.dataset)
    for _, plan in plans:
        assert sorted(i for batch in plan for row in batch for i in row) == list(range(40))
    assert plans[0][1] != plans[1][1] != plans[2][1]


def test_rows_are_a_random_sample_not_sorted_by_length():
    """Sorted (first-fit decreasing) rows put a window's longest examples together: on
    length-dependent tasks those steps' losses recur far above the running level. Rows filled in
    shuffled order mix lengths like random batches."""
    import random
    import statistics

    rng = random.Random(5)
    lengths = [rng.randint(25, 70) for _ in range(400)]
    plan = plan_batches(lengths, 512, 8 * 47, seed=0)
    means = [statistics.mean(lengths[i] for r in b for i in r) for b in plan]
    order = list(range(400))
    rng.shuffle(order)
    random_means = [
        statistics.mean(lengths[i] for i in order[k : k + 8]) for k in range(0, 400, 8)
    ]
    assert statistics.pstdev(means) < 1.3 * statistics.pstdev(random_means)


def test_gradient_checkpointing_gives_the_same_gradients(home):
    import torch

    from daemon.models.loading import load_tokenizer, resolve_model_path

    models = Home.open(home).models
    tok = load_tokenizer("builtin:tiny", models)
    batch = PackedCollator(tok.pad_token_id)([[packing_examples(tok)]])
    inputs = {k: v for k, v in batch.items() if k != "attention_mask"}
    grads = []
    for checkpointing in (False, True):
        model = small_model(resolve_model_path("builtin:tiny", models))
        if checkpointing:
            model.gradient_checkpointing_enable({"use_reentrant": False})
        model.train()
        model(**inputs).loss.backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.requires_grad})
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, atol=1e-6, rtol=1e-5, msg=name)


def test_quantization_on_cpu_is_refused_before_the_job(home, tmp_path):
    import subprocess
    import sys

    from tests.helpers import DEMO, ROOT, TINY_SETTINGS

    Home(home).settings_file.write_text(TINY_SETTINGS + 'quantization = "4bit"\n')
    r = subprocess.run(
        [sys.executable, "-m", "cli", "train", str(DEMO), "--home", str(home)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 1
    assert (
        "train.quantization = '4bit' needs a CUDA GPU" in r.stderr
        and "Traceback" not in r.stderr + r.stdout
    )
    assert not (Home(home).run_dir(1) / "checkpoints").exists()  # nothing trained


def test_a_packed_job_trains_and_counts_only_real_tokens(home):
    import json

    from typer.testing import CliRunner

    from cli.app import app
    from daemon.chat.messages import messages_of
    from daemon.models.loading import load_tokenizer
    from daemon.training.data import read_split
    from tests.helpers import DEMO, TINY_SETTINGS

    Home(home).settings_file.write_text(TINY_SETTINGS + "packing = true\n")
    r = CliRunner().invoke(app, ["train", str(DEMO), "--home", str(home), "--epochs", "2"])
    assert r.exit_code == 0, r.output
    run = Home(home).run_dir(1)
    batching = json.loads((run / "config.json").read_text())["batching"]
    assert (
        batching["packing"]
        and batching["padding_share"] < 0.05
        and batching["examples_per_step"] > 4
    )
    status = json.loads(Home(home).training_status.read_text())
    assert (
        status["state"] == "done"
        and status["current_step"] == status["total_steps"] == 2 * batching["micro_batches"]
    )
    # tokens/s counts real tokens: two epochs of the encoded training split, not the padded rows.

    tok = load_tokenizer("builtin:tiny", Home.open(home).models)
    rows = read_split(next(Home(home).datasets.iterdir()) / "train.jsonl")
    real = sum(len(encode_messages(tok, messages_of(x), 512).input_ids) for x in rows)
    assert status["tokens_seen"] == 2 * real


@pytest.mark.parametrize("packing", [True, False])
def test_output_layer_on_labelled_positions_trains_as_the_full_forward(home, tmp_path, packing):
    """The Trainer runs the output layer only where a label is: the loss and every LoRA gradient
    equal the model's own full forward pass, with and without the accumulation window's token
    count; the callbacks that read the loss off the model's forward (streaming metrics, the NaN
    fault) still get it."""
    import torch
    from transformers import TrainingArguments

    from daemon.config import TrainConfig
    from daemon.models.loading import load_tokenizer, resolve_model_path
    from daemon.training.collectors.streaming import StreamingMetrics
    from daemon.training.faults import NaNLossFault
    from daemon.training.labelled_head import split_head
    from daemon.training.packing import Batching

    models = Home.open(home).models
    tok = load_tokenizer("builtin:tiny", models)
    examples = packing_examples(tok)
    b = Batching(
        examples, TrainConfig(packing=packing, batch_size=5, max_length=512), tok.pad_token_id
    )
    model = small_model(resolve_model_path("builtin:tiny", models))
    assert split_head(model) is not None  # a llama: the labelled-only path is the one taken
    trainer = b.trainer_class(
        model=model,
        args=TrainingArguments(str(tmp_path / "out"), report_to="none", use_cpu=True),
        train_dataset=b.dataset,
        data_collator=b.collator,
    )
    batch = b.collator([b.dataset[k] for k in range(len(b.dataset))] if packing else examples)
    full_inputs = {
        k: v
        for k, v in batch.items()
        if k not in ("example_index",) and not (packing and k == "attention_mask")
    }
    trained = int((batch["shift_labels" if packing else "labels"] != IGNORE).sum())
    mean = None
    # a window of more tokens than this micro-batch
    for items in (None, torch.tensor(trained + 7)):
        kwargs = {} if items is None else {"num_items_in_batch": items}
        model.zero_grad()
        reference = model(**full_inputs, **kwargs).loss
        reference.backward()
        want = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        model.zero_grad()
        got = trainer.compute_loss(model, dict(batch), num_items_in_batch=items)
        got.backward()
        if items is None:
            # the plain mean over trained tokens, as the streaming metrics get it below
            mean = reference.item()
        assert abs(got.item() - reference.item()) <= 1e-5 * max(1.0, reference.item()), (
            items,
            got,
            reference,
        )
        for name, p in model.named_parameters():
            if p.requires_grad:
                torch.testing.assert_close(p.grad, want[name], atol=1e-6, rtol=1e-4, msg=name)
    streaming, fault = StreamingMetrics(entropy_every=1), NaNLossFault(at_step=1)
    trainer.add_callback(fault)
    trainer.add_callback(streaming)
    model.train()  # (small_model is in eval mode: no dropout either way)
    trainer.compute_loss(model, dict(batch))
    streaming.on_step_end(None, None, None)
    assert streaming.last_loss == pytest.approx(mean, rel=1e-5) and streaming.entropy > 0
    fault.step = 1  # the step the fault poisons
    assert torch.isnan(trainer.compute_loss(model, dict(batch)))


def test_labelled_path_runs_under_the_trainers_mixed_precision(home, tmp_path):
    """With `bf16` the Trainer's autocast (accelerate puts it around the model's own forward)
    covers the decoder and the output layer of the labelled-only path too: the matmuls run in bf16,
    as they would in the model's forward."""
    import torch
    from transformers import TrainingArguments

    from daemon.config import TrainConfig
    from daemon.models.loading import load_tokenizer, resolve_model_path
    from daemon.training.packing import Batching

    models = Home.open(home).models
    tok = load_tokenizer("builtin:tiny", models)
    b = Batching(packing_examples(tok), TrainConfig(max_length=512), tok.pad_token_id)
    model = small_model(resolve_model_path("builtin:tiny", models))
    args = TrainingArguments(str(tmp_path / "out"), report_to="none", use_cpu=True, bf16=True)
    trainer = b.trainer_class(
        model=model, args=args, train_dataset=b.dataset, data_collator=b.collator
    )
    seen = []
    for layer in (
        model.get_base_model().model.layers[0].mlp.down_proj,
        model.get_base_model().lm_head,
    ):
        layer.register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    loss = trainer.compute_loss(model, b.collator([b.dataset[0]]))
    assert seen == [torch.bfloat16, torch.bfloat16] and loss.dtype == torch.float32
