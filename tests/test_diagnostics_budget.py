"""The diagnostics budget keeps fixed evaluations + snapshots within their share of training time:
the schedule keeps the SPEC steps while they fit, then thins itself, always keeping step 0 and the
last step."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from daemon.training.collectors.diagnostics_budget import FULL, SCORED, SKIP, DiagnosticsBudget
from daemon.training.collectors.evolution_snapshots import is_snapshot_step


def simulate(
    share: float,
    steps: int,
    step_s: float,
    snap_s: float,
    snap_decode_s: float,
    eval_s: float,
    eval_every: int,
) -> tuple[DiagnosticsBudget, dict[int, str], float]:
    """A run with a fake clock: each training step takes step_s; a pass costs what it costs, less
    its decoding when scored only. Returns the budget, the snapshot steps with their mode, and the
    diagnostics' share of the wall."""
    now = [0.0]
    budget = DiagnosticsBudget(share, clock=lambda: now[0])
    budget.on_train_begin(None, SimpleNamespace(global_step=0, max_steps=steps), None)

    def run(kind: str, step: int, full_s: float, decode_s: float, required: bool) -> str:
        mode = budget.plan(kind, step, required, can_score=True)
        if mode != SKIP:
            cost = full_s if mode == FULL else full_s - decode_s
            now[0] += cost
            budget.charge(kind, cost, decode_s if mode == FULL else 0.0, whole=mode == FULL)
        return mode

    snaps = {0: run("snapshot", 0, snap_s, snap_decode_s, True)}
    for step in range(1, steps + 1):
        now[0] += step_s
        budget.on_step_end(None, SimpleNamespace(global_step=step), None)
        if step % eval_every == 0 or step == steps:
            run("eval", step, eval_s, eval_s / 3, step == steps)
        if is_snapshot_step(step) or step == steps:
            snaps[step] = run("snapshot", step, snap_s, snap_decode_s, step == steps)
    return budget, snaps, budget.spent / now[0]


@pytest.mark.parametrize("steps, step_s", [(1000, 0.6), (5000, 0.15), (30000, 0.05)])
def test_long_runs_keep_to_the_budget_and_thin_the_schedule_evenly(steps, step_s):
    budget, snaps, share = simulate(
        0.05,
        steps,
        step_s,
        snap_s=3.6,
        snap_decode_s=1.5,
        eval_s=0.8,
        eval_every=max(10, steps // 10),
    )
    assert share <= 0.05
    taken = sorted(s for s, mode in snaps.items() if mode != SKIP)
    assert taken[0] == 0 and taken[-1] == steps and snaps[0] == FULL
    assert {10, 25, 50} <= set(taken)  # the early schedule, where learning moves fastest, is kept
    later = [s for s in taken if s > steps // 2]
    # the second half of the run still gets snapshots, not only its last step
    assert len(later) >= 2
    assert budget.summary()["diagnostics_skipped"]


def test_no_limit_and_cheap_passes_keep_the_whole_schedule():
    for share, step_s in ((0.0, 1.6), (0.05, 50.0)):
        _, snaps, _ = simulate(
            share, 1000, step_s, snap_s=3.6, snap_decode_s=1.5, eval_s=0.8, eval_every=100
        )
        assert all(mode == FULL for mode in snaps.values())
        assert sorted(snaps) == [s for s in range(1001) if is_snapshot_step(s)]


def test_a_short_run_keeps_step_zero_whole_and_scores_the_last_step():
    """The demo's shape: 48 steps of 1.6 s, snapshots of 100 probe examples at 3.6 s. What the
    budget cannot drop (step 0, the last step) runs; the last one scored only when decoding does
    not fit."""
    budget, snaps, share = simulate(
        0.05, 48, 1.6, snap_s=3.6, snap_decode_s=1.5, eval_s=0.8, eval_every=10
    )
    assert snaps == {0: FULL, 10: SKIP, 25: SKIP, 48: SCORED}
    assert budget.summary()["diagnostics_scored_only"] >= 1
