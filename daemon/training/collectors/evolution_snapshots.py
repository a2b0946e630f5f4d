"""Evolution snapshots: at steps 0, 10, 25, 50, 100, ... the model answers a fixed probe set of
training examples, and each snapshot lands in data/evolution_snapshots/<dataset>/step_NNNNNN.json.

A snapshot is one teacher-forced pass over the probe set (loss, mean golden-token probability,
greedy reproduction; see daemon.training.scoring), with greedy decoding continued from that pass
for the examples the model does not reproduce, so that `model_output` is what the model really
writes. Eval mode, no gradients. The last step is snapshotted too (unless a scheduled snapshot lies
within the last 5% of the run), so the final state is in the record. A failing snapshot is logged
and training goes on.

The step-0 snapshot comes from the base pass before training (daemon/training/base_pass.py: the
untrained model is the base model, which the job answers the held-out split with anyway), and in a
job the last step's comes from the final checks' pass (daemon/training/outputs.py: the final model
answers its first training examples anyway), which runs even where training ended early; a run
without them takes these snapshots itself. Under the diagnostics budget
(collectors/diagnostics_budget.py) a scheduled snapshot that does not fit is left out, or, at the
last step, taken scored only (`"decoded": false`: no decoding, `model_output` "" where the model
would not reproduce the golden answer). Step 0 always runs whole. Passes run under the training's
autocast precision. With the first snapshot, data/evolution_snapshots/<dataset name>/ (the name
without the curation timestamp) becomes a link to this run's folder, so the latest run of a dataset
is always found at the same path.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from daemon.atomic import write_json_atomic
from daemon.runs.snapshots import link_stable_name
from daemon.training.collectors import Collector
from daemon.training.probe_pass import ProbePass, TimedByProbePass
from daemon.training.scoring import BATCH_ROWS

if TYPE_CHECKING:
    from daemon.training.collectors.diagnostics_budget import DiagnosticsBudget
    from daemon.training.collectors.throughput import ThroughputCollector
    from daemon.training.probe_pass import PassResult

_EARLY = (
    0,
    10,
    25,
    50,
    100,
    150,
    200,
    250,
    500,
    750,
    1000,
    1500,
    2000,
    2500,
    3000,
    4000,
    5000,
    7500,
    10000,
    15000,
    20000,
)


def is_snapshot_step(step: int) -> bool:
    """The snapshot schedule: the listed steps, then every 1000."""
    return step in _EARLY or (step > 20000 and step % 1000 == 0)


def snapshot_path(folder: Path, step: int) -> Path:
    return folder / f"step_{step:06d}.json"


class EvolutionSnapshots(TimedByProbePass, Collector):
    name = "evolution"

    def __init__(
        self,
        tokenizer: Any,
        rows: list[dict[str, Any]],
        folder: Path,
        dataset: str,
        max_length: int = 512,
        max_new_tokens: int = 64,
        loss_on: str = "assistant",
        throughput: ThroughputCollector | None = None,
        batch_size: int = BATCH_ROWS,
        budget: DiagnosticsBudget | None = None,
        autocast: str | None = None,
    ):
        from daemon.chat.messages import messages_of, tools_of

        self.rows, self.folder, self.dataset = rows, folder, dataset
        self.probe_pass = ProbePass(
            "snapshot",
            tokenizer,
            [messages_of(r) for r in rows],
            [tools_of(r) for r in rows],
            max_length,
            max_new_tokens,
            loss_on,
            batch_size,
            throughput,
            budget,
            autocast,
        )
        self.skipped: list[int] = []
        self.taken: list[int] = []
        self.last_by_final_checks = False
        """Set by the recipe when its final checks run: their pass, with the final model, gives the
        last step's snapshot (whole, outside the training time), so the last step takes none."""
        self.errors: list[str] = []

    # -- when
    def on_train_begin(self, args, state, control, model=None, **kw):
        if state.global_step == 0 and model is not None and 0 not in self.taken:
            self.snapshot(model, 0)  # unless the base pass gave it (daemon/training/base_pass.py)

    def on_step_end(self, args, state, control, model=None, **kw):
        step = state.global_step
        if self.last_by_final_checks and step == state.max_steps:
            # the final checks' pass answers these examples with the final model
            # (daemon/training/outputs.py)
            return
        if (
            model is not None
            and step not in self.taken
            and (is_snapshot_step(step) or self._final(step, state))
        ):
            final = step == state.max_steps
            mode = self.probe_pass.plan(step, final)
            if mode == "skip":
                self.skipped.append(step)
            else:
                self.snapshot(model, step, decode=mode == "full")

    def _final(self, step: int, state: Any) -> bool:
        """The last step gets a snapshot too, unless a scheduled one was taken within the last 5%
        of the run (a 250-step snapshot already shows where a 252-step job ended)."""
        near = max(1, state.max_steps // 20)
        return step == state.max_steps and not (self.taken and step - self.taken[-1] <= near)

    # -- what
    def snapshot(self, model: Any, step: int, decode: bool = True) -> dict[str, Any] | None:
        """`decode=False`: scored only (the teacher-forced pass: loss, golden probability, exact
        match as greedy reproduction of the golden answer; `model_output` is "" where the model
        would write something else)."""
        if not self.rows:
            return None
        return self._save(
            step, lambda: self.document(step, self.probe_pass.run(model, decode), decode)
        )

    def record(self, step: int, done: PassResult) -> None:
        """The snapshot at `step` from a pass another part of the job ran over the same examples:
        the base pass before training gives step 0 (LoRA's B starts at zero), the final checks the
        last step."""
        self._save(step, lambda: self.document(step, done, True))

    def _save(self, step: int, build: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
        """Build the snapshot's contents and write them; a failure is recorded, never raised."""
        try:
            doc = build()
            write_json_atomic(snapshot_path(self.folder, step), doc, indent=None)
        except Exception as exc:  # a snapshot must never stop training
            self.errors.append(f"step {step}: {type(exc).__name__}: {exc}")
            return None
        if not self.taken:
            try:
                # data/evolution_snapshots/<dataset>/ -> this run's folder
                link_stable_name(self.folder)
            except OSError as exc:  # a missing link must never stop training
                self.errors.append(f"link to {self.folder.name}: {exc}")
        self.taken.append(step)
        s = doc["summary"]
        self.say(
            f"snapshot at step {step}: {s['correct']} of {s['total_examples']} "
            f"probe examples right ({s['accuracy']:.0%}), mean loss {s['avg_loss']}"
            + ("" if doc["decoded"] else " (scored only)")
            + f" -> {snapshot_path(self.folder, step).name}"
        )
        return doc

    def document(self, step: int, done: PassResult, decode: bool) -> dict[str, Any]:
        """The snapshot file's contents from a pass over the probe set."""
        from daemon.chat.answers import same_answer

        sc, outputs = done.scores, done.outputs
        inputs, golden = done.probe.questions, done.probe.golden
        examples = []
        for i, row in enumerate(self.rows):
            out = outputs[i]
            em = same_answer(out, golden[i]) if decode else bool(sc.greedy_match[i])
            meta = {k: row[k] for k in ("id", "line", "domain") if k in row}
            examples.append(
                {
                    "example_id": f"ex_{i:03d}",
                    "input": inputs[i],
                    "expected_output": golden[i],
                    "model_output": out,
                    "loss": round(sc.loss[i], 4),
                    "similarity": round(difflib.SequenceMatcher(None, out, golden[i]).ratio(), 4),
                    "exact_match": em,
                    "golden_prob": round(sc.golden_prob[i], 4),
                    "metadata": meta,
                }
            )
        correct = sum(bool(e["exact_match"]) for e in examples)
        return {
            "snapshot_id": f"{self.dataset}_step_{step:06d}",
            "training_step": step,
            "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "model_version": "training",
            "decoded": decode,
            "examples": examples,
            "summary": {
                "avg_loss": round(sum(sc.loss) / len(sc.loss), 4),
                "accuracy": round(correct / len(examples), 4),
                "total_examples": len(examples),
                "correct": correct,
                "incorrect": len(examples) - correct,
            },
        }

    def about(self) -> str:
        return f"{len(self.rows)} probe examples, into {self.folder}"

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"evolution_snapshots": len(self.taken)} if self.taken else {}
        if self.skipped:
            out["evolution_skipped"] = len(self.skipped)
        if self.errors:
            out["evolution_errors"] = self.errors[-3:]
        return out
