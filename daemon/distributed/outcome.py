"""What a job's rank 0 leaves for its worker: data/runs/<job>/outcome.json (written atomically),
read back as the TrainOutcome the worker records, or as the error that failed the job. Nothing here
imports torch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from daemon.atomic import read_json, write_json_atomic

OUTCOME_FILE = "outcome.json"


def write_outcome(
    run_dir: Path, launch: str, outcome: Any = None, error: str | None = None
) -> None:
    """`outcome`: a TrainOutcome; `error`: a TrainctlError's message (the job failed for a reason
    it explains). `launch` ties it to one launch, so that a stale file from an earlier attempt is
    never read as this one's."""
    doc: dict[str, Any] = {"launch": launch, "error": error}
    if outcome is not None:
        doc.update(
            interrupted=outcome.interrupted,
            steps=outcome.steps,
            resumed_from=outcome.resumed_from,
            final_loss=outcome.final_loss,
            metrics=outcome.metrics,
            adapter_dir=str(outcome.adapter_dir) if outcome.adapter_dir else None,
        )
    write_json_atomic(run_dir / OUTCOME_FILE, doc)


def read_outcome(run_dir: Path, launch: str) -> dict[str, Any] | None:
    doc = read_json(run_dir / OUTCOME_FILE)
    return doc if doc and doc.get("launch") == launch else None
