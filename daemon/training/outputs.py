"""What a finished run leaves: its adapter folders (each appearing whole, by a rename) and its
final checks (greedy exact match on training examples and on the held-out test split, tuned and
base), and its suspected label errors."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from daemon.atomic import write_json_atomic
from daemon.config import TrainConfig
from daemon.home import Home

if TYPE_CHECKING:
    from daemon.training.collectors.evolution_snapshots import EvolutionSnapshots
    from daemon.training.probe_pass import PassResult

BASE_TEST_FILE = "base_test.json"
"""In the run folder: the base model's exact match on the held-out test rows, from the base pass
before training (daemon/training/base_pass.py); `final_checks` reads it."""


def save_adapter(model: Any, tok: Any, run_dir: Path, config: dict[str, Any]) -> Path:
    """adapter/ = adapter_model.safetensors + adapter_config.json + tokenizer + the resolved
    config. Written to a temporary folder and renamed, so a kill never leaves half an adapter."""
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


def answer_report(rows: list[dict[str, Any]], done: PassResult) -> dict[str, Any]:
    """A pass's answers to `rows` -> the share whose answer equals the golden one
    (daemon.chat.answers.same_answer) and the first ten misses."""
    from daemon.chat.answers import same_answer

    golden, answers = done.probe.golden, done.outputs
    hits = [same_answer(answer, want) for answer, want in zip(answers, golden)]
    return {
        "count": len(rows),
        "exact_match": round(sum(hits) / len(rows), 4) if rows else None,
        "misses": [
            {"line": row.get("line"), "golden": want, "model": answer}
            for row, want, answer, hit in zip(rows, golden, answers, hits)
            if not hit
        ][:10],
    }


def answer_rows(
    model: Any, tok: Any, rows: list[dict[str, Any]], cfg: TrainConfig, autocast: str | None
) -> PassResult:
    """Greedy answers to `rows`, as the evaluations and snapshots answer
    (daemon/training/scoring.py: read off the teacher-forced pass where the model reproduces the
    golden answer, decoded from it elsewhere), under the training's autocast."""
    from daemon.chat.messages import messages_of, tools_of
    from daemon.training.probe_pass import ProbePass

    answering = ProbePass(
        "final",
        tok,
        [messages_of(r) for r in rows],
        [tools_of(r) for r in rows],
        cfg.resolved_max_length,
        cfg.max_new_tokens,
        cfg.loss_on,
        autocast=autocast,
    )
    return answering.run(model)


def exact_match(
    model: Any, tok: Any, rows: list[dict[str, Any]], cfg: TrainConfig, autocast: str | None
) -> dict[str, Any]:
    """`answer_rows` scored by `answer_report`."""
    if not rows:
        return {"count": 0, "exact_match": None}
    return answer_report(rows, answer_rows(model, tok, rows, cfg, autocast))


def final_checks(
    cfg: TrainConfig,
    dataset_dir: Path,
    run_dir: Path,
    model: Any,
    tok: Any,
    rows: list[dict[str, Any]],
    autocast: str | None,
    evolution: EvolutionSnapshots | None = None,
    step: int = 0,
) -> dict[str, Any]:
    """Greedy exact match on training examples (did it learn them?) and on the held-out test split,
    tuned and with the adapter switched off (did it learn the task, and could the base model
    already do it?).

    One pass with the adapter on answers the first `final_eval_examples` training examples, the
    evolution snapshot's examples (the first `evolution_examples` of the same split: `evolution`'s
    last snapshot, at `step`, comes from this pass) and the test rows. The base model's figures
    come from the base pass before training when it gave them (daemon/training/base_pass.py), else
    the test rows are answered with the adapter off here."""
    from daemon.training.data import read_split

    checked = cfg.final_eval_examples
    test = read_split(dataset_dir / "test.jsonl")[:checked]
    snapshot = len(evolution.rows) if evolution is not None else 0
    own = rows[: max(checked, snapshot)]  # evolution.rows is rows[:evolution_examples]
    done = answer_rows(model, tok, own + test, cfg, autocast)
    if evolution is not None and snapshot:
        evolution.record(step, done.part(0, snapshot))
    out = {"train_eval": answer_report(rows[:checked], done.part(0, min(checked, len(own))))}
    if test:
        out["test_eval"] = answer_report(test, done.part(len(own), len(own) + len(test)))
        base = _read_base(run_dir / BASE_TEST_FILE, len(test))
        if base is None:
            with model.disable_adapter():
                base = exact_match(model, tok, test, cfg, autocast)
        out["base_test_eval"] = base
    return out


def _read_base(path: Path, count: int) -> dict[str, Any] | None:
    """The base pass's figures for the same `count` test rows; None when absent or unreadable."""
    import json

    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) and found.get("count") == count else None


def flag_suspects(
    home: Home, cfg: TrainConfig, dataset: str, run_dir: Path, job_id: int | None = None
) -> dict[str, Any]:
    """Per-example dynamics summed up over the learning part of the run; the suspected label errors
    flagged `suspect_label` (daemon/runs/dynamics.py), or why none are reported."""
    from daemon.errors import TrainctlError
    from daemon.runs.dynamics import load, suspect_flags
    from daemon.runs.flag_store import FlagStore

    try:
        run = load(run_dir)
    except TrainctlError:
        return {}
    flags = suspect_flags(run, dataset)
    if flags:
        FlagStore(home.flagged_file, cfg.flags_keep).suspects(job_id, flags)
    return {
        "dynamics": {
            "examples": len(run.examples),
            "classes": run.classes(),
            "suspect_label": len(flags),
            "epochs_used": [e + 1 for e in run.epochs_used],
            "learning_until_step": run.window_end,
            **({"suspects_note": run.suspects_note} if run.suspects_note else {}),
            **({"window_reason": run.window_reason} if run.window_reason else {}),
        }
    }
