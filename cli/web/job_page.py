"""What the job page (`/jobs/N`) shows, read from the files the run left (no torch): the job, its
figures with the set and size each comes from, its evaluations, and every kept checkpoint with its
fixed-eval figures, its bench exact match where `trainctl bench sweep` judged it, and the command
that uses it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from daemon.atomic import iter_jsonl, read_json
from daemon.home import Home
from daemon.runs.checkpoints import complete_checkpoint_steps, job_checkpoints_dir


def job_doc(home: Home, job: Any) -> dict[str, Any]:
    """The page's document for `job` (a daemon.jobs.Job)."""
    run = Path(job.run_dir) if getattr(job, "run_dir", None) else home.run_dir(job.id)
    config = read_json(run / "config.json") or {}
    result = read_json(run / "result.json") or {}
    train = config.get("train") or {}
    evaluations = _evaluations(run / "metrics.jsonl")
    return {
        "job": job.to_dict(),
        "model": train.get("model"),
        "max_length": train.get("max_length"),
        "max_length_auto": config.get("max_length_auto"),
        "rendering": (config.get("rendering") or {}).get("summary"),
        "dataset": Path(job.dataset_dir).name if job.dataset_dir else None,
        "figures": _figures(result, evaluations, config),
        "evaluations": evaluations,
        "checkpoints": checkpoints(home, job.id, run, result, evaluations),
        "alerts": [e for e in iter_jsonl(run / "alerts.jsonl")]
        if (run / "alerts.jsonl").exists()
        else [],
        "steps": result.get("steps"),
        "stopped_early": result.get("stopped_early"),
        "suspects_note": (result.get("dynamics") or {}).get("suspects_note"),
    }


def _evaluations(path: Path) -> list[dict[str, Any]]:
    """Every fixed evaluation of the run, in order: step, exact match, cross-entropy, ECE,
    examples."""
    out: list[dict[str, Any]] = []
    if not path.exists():
        return out
    seen: set[int] = set()
    for row in iter_jsonl(path):
        step = row.get("fixed_eval_step")
        if isinstance(step, int) and step not in seen and row.get("fixed_eval_em") is not None:
            seen.add(step)
            out.append(
                {
                    "step": step,
                    "exact_match": row.get("fixed_eval_em"),
                    "ce": row.get("fixed_eval_ce"),
                    "ece": row.get("fixed_eval_ece"),
                    "examples": row.get("fixed_eval_examples"),
                }
            )
    return out


def _figures(
    result: dict[str, Any], evaluations: list[dict[str, Any]], config: dict[str, Any]
) -> list[dict[str, Any]]:
    """Each accuracy with the set it is measured on and that set's size."""
    figures = []
    last = evaluations[-1] if evaluations else None
    if last:
        figures.append(
            {
                "name": "fixed eval EM",
                "set": f"{last['examples']} val examples (the fixed set)",
                "value": last["exact_match"],
                "step": last["step"],
            }
        )
    for key, name, of in (
        ("train_eval", "training examples EM", "training examples, after training"),
        ("test_eval", "held-out test EM (tuned)", "test examples"),
        ("base_test_eval", "held-out test EM (base model)", "test examples, before training"),
    ):
        ev = result.get(key) or {}
        if ev.get("count"):
            figures.append(
                {"name": name, "set": f"{ev['count']} {of}", "value": ev.get("exact_match")}
            )
    return figures


def checkpoints(
    home: Home, job_id: int, run: Path, result: dict[str, Any], evaluations: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The kept checkpoints, adapter-best/ and the final adapter, oldest first: the fixed
    evaluation at (or the last one before) each one's step, the sweep's exact match, whether it is
    the best, and how to use it."""
    best = result.get("best") or {}
    sweep = {
        (r.get("label"), r.get("step")): r
        for r in (read_json(home.bench_root / f"job-{job_id}-sweep.json") or {}).get("rows", [])
    }
    ckpts = job_checkpoints_dir(home, job_id)
    rows: list[dict[str, Any]] = []

    def at(step: int | None) -> dict[str, Any] | None:
        before = [e for e in evaluations if step is not None and e["step"] <= step]
        return before[-1] if before else None

    for step in complete_checkpoint_steps(ckpts):
        rows.append(
            {
                "label": f"checkpoint-{step}",
                "step": step,
                "path": str(ckpts / f"checkpoint-{step}"),
                "command": f"trainctl export {job_id} --checkpoint {step}",
                "sweep": sweep.get((f"step-{step}", step)),
            }
        )
    adapter = run / "adapter"
    if (run / "adapter-best").is_dir():
        rows.append(
            {
                "label": "adapter-best",
                "step": best.get("step"),
                "path": str(run / "adapter-best"),
                "command": f"trainctl export {job_id} --best",
                "sweep": sweep.get(("best", best.get("step"))),
            }
        )
    if adapter.is_dir():
        rows.append(
            {
                "label": "adapter (final)",
                "step": result.get("steps"),
                "path": str(adapter),
                "command": f"trainctl export {job_id}",
                "sweep": sweep.get(("final", result.get("steps"))),
            }
        )
    # The best: the final adapter when it is the last step, else adapter-best/ and the checkpoint
    # it came from
    best_labels = (
        {"adapter (final)"} if best.get("is_last") else {"adapter-best", best.get("checkpoint")}
    )
    for r in rows:
        r["fixed_eval"] = at(r["step"])
        r["best"] = r["label"] in best_labels
        r["bench_exact_match"] = (r.pop("sweep") or {}).get("exact_match")
    return rows


def overlay(home: Home, job_ids: list[int]) -> dict[str, Any]:
    """Per job: (step, smoothed loss) and (step, fixed-eval exact match), to lay several runs over
    each other."""
    out = {}
    for job_id in job_ids:
        path = home.run_dir(job_id) / "metrics.jsonl"
        loss, em = [], []
        for row in iter_jsonl(path) if path.exists() else []:
            step = row.get("current_step")
            value = row.get("streaming_ce", row.get("loss"))
            if isinstance(step, int) and isinstance(value, (int, float)):
                loss.append([step, value])
        em = [[e["step"], e["exact_match"]] for e in _evaluations(path)]
        out[str(job_id)] = {"loss": loss, "exact_match": em}
    return out
