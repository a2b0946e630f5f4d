"""Throughput: real (non-padding) tokens per second now and on average, its trend, ETA, and MFU
where known.

Needs `TrainingArguments(include_num_input_tokens_seen="non_padding")` so that
`state.num_input_tokens_seen` counts real tokens. Time spent in evaluation is measured too, so the
ETA includes the evaluations still to come.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from daemon.training.collectors import Collector


class ThroughputCollector(Collector):
    name = "throughput"

    def __init__(
        self, window: int = 20, peak_flops: float | None = None, n_params: int | None = None
    ):
        self.window = window
        self.peak_flops = peak_flops
        """Device peak FLOP/s (for MFU); None = unknown, MFU not reported."""
        self.n_params = n_params
        self.recent: deque[tuple[float, int, int]] = deque(maxlen=window)  # (time, tokens, step)
        self.start_time: float | None = None
        self.start_tokens = 0
        self.start_step = 0
        self.eval_seconds = 0.0
        self.evals_done = 0
        self._eval_started: float | None = None
        self.total_steps = 0
        self.step = 0
        self.eval_steps = 0

    def on_train_begin(self, args, state, control, **kw):
        self.start_time = time.perf_counter()
        self.start_tokens = state.num_input_tokens_seen
        self.start_step = state.global_step
        self.total_steps = state.max_steps
        evaluating = str(getattr(args.eval_strategy, "value", args.eval_strategy)) != "no"
        self.eval_steps = int(args.eval_steps or 0) if evaluating else 0
        self.recent.clear()
        self.recent.append((self.start_time, state.num_input_tokens_seen, state.global_step))

    def on_step_end(self, args, state, control, **kw):
        self.step = state.global_step
        self.recent.append((time.perf_counter(), state.num_input_tokens_seen, state.global_step))

    def begin_eval(self) -> None:
        self._eval_started = time.perf_counter()

    def end_eval(self) -> None:
        if self._eval_started is not None:
            self.eval_seconds += time.perf_counter() - self._eval_started
            self.evals_done += 1
            self._eval_started = None

    def _rate(self, a: tuple[float, int, int], b: tuple[float, int, int]) -> float | None:
        dt = b[0] - a[0]
        return (b[1] - a[1]) / dt if dt > 0 else None

    def summary(self) -> dict[str, Any]:
        if self.start_time is None or len(self.recent) < 2:
            return {}
        now, tokens, step = self.recent[-1]
        current = self._rate(self.recent[-2], self.recent[-1]) if len(self.recent) >= 2 else None
        windowed = self._rate(self.recent[0], self.recent[-1])
        train_seconds = (now - self.start_time) - self.eval_seconds
        avg = (tokens - self.start_tokens) / train_seconds if train_seconds > 0 else None
        steps_done = step - self.start_step
        eta = None
        if steps_done > 0 and self.total_steps:
            per_step = train_seconds / steps_done
            remaining = max(0, self.total_steps - step)
            eta = per_step * remaining
            if self.eval_steps and self.evals_done:
                evals_left = remaining // self.eval_steps
                eta += evals_left * (self.eval_seconds / self.evals_done)
        trend = "stable"
        if windowed and avg:
            ratio = windowed / avg
            trend = "improving" if ratio > 1.1 else "degrading" if ratio < 0.9 else "stable"
        out: dict[str, Any] = {
            "tokens_per_sec": round(windowed or current or 0.0, 1),
            "tokens_per_sec_avg": round(avg or 0.0, 1),
            "throughput_trend": trend,
            "eta_seconds": round(eta, 1) if eta is not None else None,
            "tokens_seen": tokens,
            "eval_seconds": round(self.eval_seconds, 2),
        }
        if self.peak_flops and self.n_params and windowed:
            # ~6 FLOPs per parameter per token for forward + backward (Kaplan et al.).
            out["mfu"] = round(6 * self.n_params * windowed / self.peak_flops, 4)
        return out


# Dense bf16/fp16 tensor-core peaks (vendor data sheets), by a substring of
# torch.cuda.get_device_name().
PEAK_TFLOPS = {
    "H200": 989.0,
    "H100 PCIe": 756.0,
    "H100": 989.0,
    "A100": 312.0,
    "L4": 121.0,
    "V100": 125.0,
}


def peak_flops(device_name: str, half_precision: bool) -> float | None:
    """Peak FLOP/s of a known GPU in bf16/fp16; None when unknown (or in fp32, where tensor-core
    peaks do not apply)."""
    if not half_precision:
        return None
    for key, tflops in PEAK_TFLOPS.items():
        if key in device_name:
            return tflops * 1e12
    return None
