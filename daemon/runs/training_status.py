"""The live status of a training job: status/training_status.json and status/jobs/job-N.json.

`TrainingStatus` is the record's schema. The StatusWriter (daemon/training/status_writer.py)
writes it from the collectors' summaries and the recipe's fields; `trainctl status` and the
browser's monitor read it with `read_training_status`. Every key is optional: a record grows as
the run gets further (no evaluation yet, no fixed-eval keys), and a record from an older version
may lack newer keys.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypedDict

from daemon.atomic import read_json


class TrainingStatus(TypedDict, total=False):
    # -- the job and where it stands (the recipe, the Trainer's state)
    state: str  # training | evaluating | interrupted | failed | done
    job_id: int
    dataset: str
    model: str
    run_dir: str
    world_size: int
    rendering: (
        str  # how tools, calls and reasoning reached the tokens (only for datasets that have them)
    )
    max_length: str  # the number, and with "auto" how it was chosen
    current_step: int
    total_steps: int
    epoch: float
    resumed_from: str | None
    message: str | None
    updated_at: str
    adapter_dir: str
    collector_errors: dict[str, str]
    # -- the Trainer's log
    loss: float | str  # "NaN", "Inf" or "-Inf" when the loss is not finite (so is every figure)
    learning_rate: float
    grad_norm: float
    # -- throughput
    tokens_per_sec: float
    tokens_per_sec_avg: float
    throughput_trend: str
    eta_seconds: float | None
    tokens_seen: int
    eval_seconds: float
    mfu: float
    # -- streaming metrics
    streaming_ce: float | None
    raw_loss: float | None
    loss_variance: float | None
    token_entropy: float | None
    loss_trend: str
    # -- LoRA monitor
    lora_stats: dict[str, dict[str, float | None]]
    lora_summary: dict[str, Any]
    # -- diagnostics budget
    diagnostics_budget: float
    diagnostics_share: float | None
    diagnostics_skipped: dict[str, int]
    diagnostics_scored_only: int
    # -- fixed evaluation
    fixed_eval_em: float
    fixed_eval_ce: float | None
    fixed_eval_ece: float
    fixed_eval_trend: str
    # improving | stable | degrading: the newest exact match against the three before
    accuracy_trend: str
    fixed_eval_step: int
    fixed_eval_examples: int
    fixed_eval_errors: list[str]
    accuracy_last_20: float | None  # exact match over the last 20 evaluated examples
    accuracy_last_50: float | None
    evaluations: int
    # -- flagged examples
    flagged_count: int  # the job's open flags: the current model's mistakes
    flagged_this_run: int
    flags_resolved_this_run: int
    # -- evolution snapshots
    evolution_snapshots: int
    evolution_skipped: int
    evolution_errors: list[str]
    # -- per-example dynamics
    dynamics_passes: int
    dynamics_errors: list[str]
    dynamics_unavailable: str
    # -- best checkpoint
    best_step: int
    best_metric: str
    best_value: float
    best_checkpoint: str | None
    evaluations_since_best: int
    stopped_early: str | None
    best: dict[str, Any] | None
    # -- alerts
    active_alerts: list[dict[str, Any]]
    alert_summary: dict[str, Any]
    # -- the final checks (exact match: training examples; the test split, tuned and base)
    train_exact_match: float | None
    test_exact_match: float | None
    base_test_exact_match: float | None
    train_eval_examples: int | None  # the training examples train_exact_match is measured on
    # the held-out test examples test_exact_match (and the base's) is measured on
    test_examples: int | None


STATUS_KEYS = frozenset(TrainingStatus.__annotations__)
"""Every key a status record may carry."""


def read_training_status(path: Path) -> TrainingStatus:
    """The record at `path`, or an empty one when there is none yet."""
    doc = read_json(path)
    return TrainingStatus(**doc) if isinstance(doc, dict) else TrainingStatus()
