"""What a finished run leaves: its adapter folders (each appearing whole, by a rename) and its final
checks (greedy exact match on training examples and on the held-out test split, tuned and base), and
its suspected label errors."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from daemon.atomic import write_json_atomic
from daemon.config import TrainConfig
from daemon.home import Home


def save_adapter(model: Any, tok: Any, run_dir: Path, config: dict[str, Any]) -> Path:
    """adapter/ = adapter_model.safetensors + adapter_config.json + tokenizer + the resolved config.
    Written to a temporary folder and renamed, so a kill never leaves half an adapter."""
    final = run_dir / "adapter"
    tmp = run_dir / ".adapter.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp), safe_serialization=True)
    tok.save_pretrained(str(tmp))
    write_json_atomic(tmp / "trainctl_config.json", config)
    return publish(tmp, final)


def publish(tmp: Path, final: Path) -> Path:
    """Put the finished folder `tmp` in place of `final` by a rename (a kill before it leaves the
    old one)."""
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    return final


def save_best_adapter(
    run_dir: Path, ckpt_dir: Path, best: dict[str, Any], adapter_dir: Path
) -> Path | None:
    """adapter-best/: the best checkpoint's adapter files beside the final adapter's tokenizer and
    config, written to a temporary folder and renamed. None when the best checkpoint is gone (it
    never is, unless removed by hand)."""
    ckpt = ckpt_dir / best["checkpoint"]
    if not (ckpt / "adapter_model.safetensors").exists():
        return None
    final, tmp = run_dir / "adapter-best", run_dir / ".adapter-best.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(adapter_dir, tmp)  # tokenizer, trainctl_config.json
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        shutil.copy2(ckpt / name, tmp / name)
    write_json_atomic(tmp / "trainctl_best.json", best)
    return publish(tmp, final)


def exact_match(
    model: Any, tok: Any, rows: list[dict[str, Any]], max_new_tokens: int
) -> dict[str, Any]:
    """Greedy answers to `rows`; share whose answer equals the golden one
    (daemon.chat.answers.same_answer)."""
    from daemon.chat.answers import same_answer
    from daemon.chat.messages import messages_of, question_and_answer, tools_of
    from daemon.chat.render import prompt_text
    from daemon.models.generation import generate_texts

    if not rows:
        return {"count": 0, "exact_match": None}
    conversations = [messages_of(row) for row in rows]
    prompts = [
        prompt_text(tok, messages, tools_of(row)) for messages, row in zip(conversations, rows)
    ]
    golden = [question_and_answer(messages)[1] for messages in conversations]
    answers = generate_texts(model, tok, prompts, max_new_tokens=max_new_tokens)
    hits = [same_answer(answer["text"], want) for answer, want in zip(answers, golden)]
    return {
        "count": len(rows),
        "exact_match": round(sum(hits) / len(rows), 4),
        "misses": [
            {"line": row.get("line"), "golden": want, "model": answer["text"]}
            for row, want, answer, hit in zip(rows, golden, answers, hits)
            if not hit
        ][:10],
    }


def final_checks(
    cfg: TrainConfig, dataset_dir: Path, model: Any, tok: Any, rows: list[dict[str, Any]]
) -> dict[str, Any]:
    """Greedy exact match on training examples (did it learn them?) and on the held-out test split,
    tuned and with the adapter switched off (did it learn the task, and could the base model already
    do it?)."""
    from daemon.training.data import read_split

    out = {
        "train_eval": exact_match(model, tok, rows[: cfg.final_eval_examples], cfg.max_new_tokens)
    }
    test = read_split(dataset_dir / "test.jsonl")[: cfg.final_eval_examples]
    if test:
        out["test_eval"] = exact_match(model, tok, test, cfg.max_new_tokens)
        with model.disable_adapter():
            out["base_test_eval"] = exact_match(model, tok, test, cfg.max_new_tokens)
    return out


def flag_suspects(home: Home, cfg: TrainConfig, dataset: str, run_dir: Path) -> dict[str, Any]:
    """Per-example dynamics summed up; the suspected label errors flagged `suspect_label`
    (daemon/runs/dynamics.py)."""
    from daemon.errors import TrainctlError
    from daemon.runs.dynamics import load, suspect_flags
    from daemon.runs.flag_store import FlagStore

    try:
        run = load(run_dir)
    except TrainctlError:
        return {}
    flags = suspect_flags(run, dataset)
    if flags:
        FlagStore(home.flagged_file, cfg.flags_keep).add(flags)
    return {
        "dynamics": {
            "examples": len(run.examples),
            "classes": run.classes(),
            "suspect_label": len(flags),
        }
    }
