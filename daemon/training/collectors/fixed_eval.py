"""Fixed evaluation: the same validation examples at every eval step: exact match, cross-entropy,
ECE, trend.

One teacher-forced pass over the golden answers (daemon.training.scoring) gives cross-entropy, ECE
and, per example, whether greedy decoding reproduces the answer; only the others are generated
(batched, greedy), so that their output can be shown and compared with the golden answer for exact
match (daemon.chat.answers.same_answer: the prose whitespace-normalised, tool calls by name and
parsed arguments). For ECE each answer token contributes the model's top-1 confidence and whether
the top-1 token is the golden one; ECE = sum over 15 equal-width confidence bins of |accuracy -
confidence| weighted by the bin's share of tokens. Runs in eval mode without gradients; a failure
is recorded and training goes on. Its wall time is reported to the throughput collector so the ETA
includes it. Under the diagnostics budget (collectors/diagnostics_budget.py) a scheduled evaluation
that does not fit is left out or scored only (no decoding; exact match = greedy reproduction token
for token, and the flags are decided on that); those at checkpoints and at the last step always
run, scored only if they must. `accuracy_last_20`/`_50` are over the last 20/50 evaluated examples
(the newest evaluation's first), and `accuracy_trend` compares the newest exact match with the mean
of the three before it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from daemon.training.collectors import Collector
from daemon.training.probe_pass import ProbePass, TimedByProbePass
from daemon.training.scoring import BATCH_ROWS

if TYPE_CHECKING:
    from daemon.training.collectors.diagnostics_budget import DiagnosticsBudget
    from daemon.training.collectors.throughput import ThroughputCollector

ECE_BINS = 15
RECENT_EXAMPLES = 50


def expected_calibration_error(
    confidences: list[float], correct: list[bool], bins: int = ECE_BINS
) -> float:
    if not confidences:
        return 0.0
    total = len(confidences)
    sums = [[0.0, 0.0, 0] for _ in range(bins)]  # confidence sum, correct count, n
    for c, ok in zip(confidences, correct):
        b = sums[min(bins - 1, int(c * bins))]
        b[0] += c
        b[1] += ok
        b[2] += 1
    return sum(abs(b[1] / b[2] - b[0] / b[2]) * b[2] / total for b in sums if b[2])


class FixedEval(TimedByProbePass, Collector):
    name = "fixed_eval"

    def __init__(
        self,
        tokenizer: Any,
        rows: list[dict[str, Any]],
        eval_steps: int,
        max_length: int = 512,
        max_new_tokens: int = 64,
        loss_on: str = "assistant",
        throughput: ThroughputCollector | None = None,
        batch_size: int = BATCH_ROWS,
        budget: DiagnosticsBudget | None = None,
        autocast: str | None = None,
    ):
        from daemon.chat.messages import messages_of, tools_of

        self.rows = rows
        self.messages = [messages_of(r) for r in rows]
        self.tools = [tools_of(r) for r in rows]
        self.eval_steps = eval_steps
        self.probe_pass = ProbePass(
            "eval",
            tokenizer,
            self.messages,
            self.tools,
            max_length,
            max_new_tokens,
            loss_on,
            batch_size,
            throughput,
            budget,
            autocast,
        )
        self.history: deque[dict[str, Any]] = deque(maxlen=50)
        self.recent: deque[bool] = deque(maxlen=RECENT_EXAMPLES)
        """Right or wrong, per evaluated example, over the last evaluations (newest last)."""
        self.last: dict[str, Any] | None = None
        self.last_results: list[dict[str, Any]] = []
        """Per example of the last evaluation: prompt, golden, output, loss, matches (for flagged
        examples)."""
        self.errors: list[str] = []
        self.listeners: list[Callable[[int, list[dict[str, Any]], bool], None]] = []
        """Called as fn(step, results, scored_only) after each evaluation (e.g. flagged-example
        storage)."""

    def on_step_end(self, args, state, control, model=None, **kw):
        step = state.global_step
        # Every checkpoint is evaluated at its step too, so that it can be scored
        # (best_checkpoint.BestCheckpoint).
        due = self.eval_steps > 0 and (step % self.eval_steps == 0 or control.should_save)
        if (
            (due or step == state.max_steps)
            and model is not None
            and self.rows
            and (self.last is None or self.last["step"] != step)
        ):
            # A checkpoint's evaluation scores it (best checkpoint), the last one ends the record:
            # both always run
            required = control.should_save or step == state.max_steps
            mode = self.probe_pass.plan(step, required)
            if mode != "skip":
                self.evaluate(model, step, decode=mode == "full")

    def evaluate(self, model: Any, step: int, decode: bool = True) -> dict[str, Any] | None:
        """`decode=False`: scored only (the teacher-forced pass; exact match = greedy decoding
        reproduces the golden answer token for token; no outputs)."""
        try:
            result = self._run(model, step, decode)
        except Exception as exc:  # an evaluation must never stop training
            msg = f"{type(exc).__name__}: {exc}"
            self.errors.append(f"step {step}: {msg}")
            self._notify(
                step,
                [{**self._describe(i), "error": msg} for i in range(len(self.rows))],
                not decode,
            )
            return None
        self.last = result
        self.history.append(result)
        self.recent.extend(bool(r["matches"]) for r in self.last_results)
        self.say(
            f"evaluation at step {step}: exact match {result['exact_match']:.0%} of "
            f"{result['examples']} fixed-eval examples, cross-entropy {result['cross_entropy']}"
            + (" (scored only)" if not decode else "")
        )
        self._notify(step, self.last_results, not decode)
        return result

    def _notify(self, step: int, results: list[dict[str, Any]], scored_only: bool) -> None:
        for fn in self.listeners:
            try:
                fn(step, results, scored_only)
            except Exception as exc:
                self.errors.append(f"step {step} listener: {type(exc).__name__}: {exc}")

    def _describe(self, i: int) -> dict[str, Any]:
        """Example i as people read it: the prompt turns, the last user turn, the golden answer."""
        from daemon.chat.messages import last_answer, question_and_answer

        msgs = self.messages[i]
        question, golden = question_and_answer(msgs)
        last = last_answer(msgs)
        out = {
            "prompt": question,
            "golden": golden,
            "messages": [m.to_row() for m in msgs[:last]],
            "answer": msgs[last].to_row(),
            "line": self.rows[i].get("line"),
            "id": self.rows[i].get("id"),
        }
        if self.tools[i]:
            out["tools"] = self.tools[i]
        return out

    def _run(self, model: Any, step: int, decode: bool = True) -> dict[str, Any]:
        from daemon.chat.answers import same_answer

        seconds_before = self.probe_pass.seconds
        done = self.probe_pass.run(model, decode)
        sc, outputs, golden = done.scores, done.outputs, done.probe.golden
        matches = (
            [same_answer(o, g) for o, g in zip(outputs, golden)]
            if decode
            else list(sc.greedy_match)
        )
        self.last_results = [
            {**self._describe(i), "output": o, "loss": round(loss, 4), "matches": ok}
            for i, (o, loss, ok) in enumerate(zip(outputs, sc.loss, matches))
        ]
        ce = sum(sc.loss) / len(sc.loss) if sc.loss else None
        return {
            "step": step,
            "exact_match": round(sum(matches) / len(matches), 4),
            "cross_entropy": round(ce, 4) if ce is not None else None,
            "ece": round(expected_calibration_error(sc.token_conf, sc.token_correct), 4),
            "tokens": len(sc.token_conf),
            "examples": len(matches),
            "generated": done.generated,
            "seconds": round(self.probe_pass.seconds - seconds_before, 3),
            **({} if decode else {"scored_only": True}),
        }

    def about(self) -> str:
        return f"{len(self.rows)} examples every {self.eval_steps} steps"

    @property
    def trend(self) -> str:
        if len(self.history) < 2:
            return "stable"
        prev = [h["exact_match"] for h in list(self.history)[-4:-1]]
        now = self.history[-1]["exact_match"]
        base = sum(prev) / len(prev)
        return "improving" if now > base + 0.02 else "degrading" if now < base - 0.02 else "stable"

    def _accuracy_last(self, n: int) -> float | None:
        """Exact match over the last `n` evaluated examples."""
        last = list(self.recent)[-n:]
        return round(sum(last) / len(last), 4) if last else None

    def summary(self) -> dict[str, Any]:
        if self.last is None:
            return {"fixed_eval_errors": self.errors[-3:]} if self.errors else {}
        out = {
            "fixed_eval_em": self.last["exact_match"],
            "fixed_eval_ce": self.last["cross_entropy"],
            "fixed_eval_ece": self.last["ece"],
            "fixed_eval_trend": self.trend,
            "fixed_eval_step": self.last["step"],
            "fixed_eval_examples": self.last["examples"],
            "accuracy_trend": self.trend,
            "accuracy_last_20": self._accuracy_last(20),
            "accuracy_last_50": self._accuracy_last(50),
            "evaluations": len(self.history),
        }
        if self.errors:
            out["fixed_eval_errors"] = self.errors[-3:]
        return out
