"""One pass of the model over a fixed probe set, as the fixed evaluation and the evolution
snapshots both run it.

The pass is daemon.training.scoring's teacher-forced pass (loss, golden-token probability, greedy
reproduction per example) with greedy decoding continued for the examples the model does not
reproduce, unless `decode=False` (scored only). It runs in eval mode without gradients under the
training's autocast, its wall time is reported to the throughput collector (so the ETA includes
it), and it is charged to the diagnostics budget, failed or not. The probe set is tokenised once,
at the first pass."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from daemon.training.scoring import BATCH_ROWS

if TYPE_CHECKING:
    from daemon.chat.messages import Message
    from daemon.training.collectors.diagnostics_budget import DiagnosticsBudget
    from daemon.training.collectors.throughput import ThroughputCollector
    from daemon.training.scoring import Probe, Scores


@dataclass
class PassResult:
    """What one pass gave: the scores per example and token, and each example's answer text."""

    scores: Scores
    outputs: list[str]
    """The model's answer per example; with decode=False "" where it does not reproduce the golden
    answer."""
    generated: int
    """Examples that were decoded (those the teacher-forced pass did not already reproduce)."""
    probe: Probe

    def part(self, start: int, end: int) -> PassResult:
        """Examples start..end-1 of this pass, as if they had been answered alone (the per-token
        lists, which a part does not need, are left empty)."""
        from dataclasses import replace

        from daemon.training.scoring import Scores

        sc, pr = self.scores, self.probe
        scores = Scores(
            loss=sc.loss[start:end],
            golden_prob=sc.golden_prob[start:end],
            greedy_match=sc.greedy_match[start:end],
        )
        probe = replace(
            pr,
            encoded=pr.encoded[start:end],
            prompts=pr.prompts[start:end],
            questions=pr.questions[start:end],
            golden=pr.golden[start:end],
            answer_start=pr.answer_start[start:end],
        )
        outputs = self.outputs[start:end]
        return PassResult(scores, outputs, sum(not ok for ok in scores.greedy_match), probe)


@dataclass
class ProbePass:
    """A probe set and how to answer it; `run()` is one timed, budget-charged pass."""

    kind: str
    """The diagnostics budget's name for these passes: `eval` or `snapshot` (`final`: the base pass
    before training and the final checks after it, daemon/training/outputs.py, which the budget
    does not pay for)."""
    tokenizer: Any
    messages: list[list[Message]]
    tools: list[list[dict[str, Any]] | None]
    max_length: int = 512
    max_new_tokens: int = 64
    loss_on: str = "assistant"
    batch_size: int = BATCH_ROWS
    throughput: ThroughputCollector | None = None
    budget: DiagnosticsBudget | None = None
    """Which scheduled passes run whole, scored only, or not at all (None: all run whole)."""
    autocast: str | None = None
    seconds: float = 0.0
    """Wall time of every pass so far, failed ones included."""
    decode_seconds: float = 0.0
    """Of `seconds`, the part spent decoding answers the model does not reproduce."""
    _probe: Probe | None = field(default=None, repr=False)

    def plan(self, step: int, required: bool) -> str:
        """`full`, `score` (scored only) or `skip` for a pass scheduled at `step`."""
        return (
            self.budget.plan(self.kind, step, required, can_score=True) if self.budget else "full"
        )

    def run(self, model: Any, decode: bool = True) -> PassResult:
        """One pass; an exception propagates after the time is charged (the caller records it and
        training goes on)."""
        from daemon.training.scoring import answer, evaluating, prepare_probe

        started = time.perf_counter()
        decode_before = self.decode_seconds
        try:
            with evaluating(model, self.throughput, self.autocast):
                if self._probe is None:
                    self._probe = prepare_probe(
                        self.tokenizer, self.messages, self.max_length, self.loss_on, self.tools
                    )
                scores, outputs, generated = answer(
                    model,
                    self.tokenizer,
                    self._probe,
                    self.max_new_tokens,
                    self.batch_size,
                    decode=decode,
                )
                self.decode_seconds += scores.decode_seconds
            return PassResult(scores, outputs, generated, self._probe)
        finally:
            took = time.perf_counter() - started
            self.seconds += took
            if self.budget is not None:
                self.budget.charge(
                    self.kind, took, self.decode_seconds - decode_before, whole=decode
                )


class TimedByProbePass:
    """For a collector whose passes are one ProbePass: the time they took, as the recipe reports
    it."""

    probe_pass: ProbePass

    @property
    def seconds(self) -> float:
        """Wall time of every pass so far (failed ones included)."""
        return self.probe_pass.seconds

    @property
    def decode_seconds(self) -> float:
        """Of `seconds`, the part spent decoding answers the model does not reproduce."""
        return self.probe_pass.decode_seconds
