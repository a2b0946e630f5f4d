"""The base model's answers, given once, before training: the step-0 evolution snapshot and the
held-out test split's base-model figures come from one pass.

LoRA's B matrices start at zero, so before its first step the model answers as the base model
does, and the job reports the base model's exact match on the held-out test split beside the tuned
one. Both are the same kind of pass (daemon/training/scoring.py: teacher-forced scoring, greedy
decoding continued where the model does not reproduce the golden answer), so they are one pass
over the snapshot's examples and the test rows together, with the adapter switched off and under
the training's autocast, as every later snapshot and the final checks run: one decoding loop
instead of two.

It runs before the training clock starts, as the final checks run after it stops, so the
diagnostics budget (a share of training time) does not pay for it; the budget plans later
snapshots with its cost, pro rata of the examples. Only a fresh run takes it: a resumed one has
its step-0 snapshot and its `base_test.json` from the first start.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from daemon.atomic import write_json_atomic
from daemon.config import TrainConfig

if TYPE_CHECKING:
    from daemon.training.collectors.diagnostics_budget import DiagnosticsBudget
    from daemon.training.collectors.evolution_snapshots import EvolutionSnapshots


def base_pass(
    model: Any,
    tok: Any,
    cfg: TrainConfig,
    test_rows: list[dict[str, Any]],
    run_dir: Path,
    evolution: EvolutionSnapshots | None,
    budget: DiagnosticsBudget | None,
    autocast: str | None,
) -> dict[str, Any] | None:
    """Answer the snapshot's examples and `test_rows` with the adapter off; write the step-0
    snapshot and base_test.json. Returns {"seconds", "examples", "snapshot_examples",
    "base_test_eval"} (None when there is nothing to answer); a failure is reported in it and
    training goes on (the final checks then answer the test rows themselves, and the step-0
    snapshot is taken as training begins)."""
    from daemon.training.outputs import BASE_TEST_FILE, answer_report, answer_rows

    (run_dir / BASE_TEST_FILE).unlink(missing_ok=True)  # a fresh run's figures are its own
    snapshot_rows = evolution.rows if evolution is not None else []
    rows = snapshot_rows + test_rows
    if not rows:
        return None
    started = time.perf_counter()
    try:
        with model.disable_adapter():
            done = answer_rows(model, tok, rows, cfg, autocast)
    except Exception as exc:  # the base pass must never stop training
        return {
            "seconds": round(time.perf_counter() - started, 3),
            "examples": len(rows),
            "error": f"{type(exc).__name__}: {exc}",
        }
    took = time.perf_counter() - started
    n = len(snapshot_rows)
    if evolution is not None and n:
        evolution.record(0, done.part(0, n))
        if budget is not None:
            share = n / len(rows)
            budget.measured("snapshot", took * share, done.scores.decode_seconds * share)
    out: dict[str, Any] = {
        "seconds": round(took, 3),
        "examples": len(rows),
        "snapshot_examples": n,
    }
    if test_rows:
        out["base_test_eval"] = answer_report(test_rows, done.part(n, len(rows)))
        write_json_atomic(run_dir / BASE_TEST_FILE, out["base_test_eval"])
    return out
