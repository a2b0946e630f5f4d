"""StatusWriter: the callback where collectors meet. It writes status/training_status.json
(atomically, throttled) and appends one row per logged step to data/runs/<job>/metrics.jsonl.

Both run every logged step, so they are kept cheap: the metrics file stays open for the run (each
row is flushed whole, so a reader or a kill never sees half a row), and the throttled live-status
rewrites skip the fsync (the rename keeps them atomic; the forced writes at the end of a run are
fsynced)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, cast

import orjson
from transformers import TrainerCallback

from daemon.atomic import JsonlAppender, write_bytes_atomic
from daemon.runs.training_status import TrainingStatus

_INDENTED = orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS


def _metrics_line(row: dict[str, Any]) -> bytes:
    return orjson.dumps(row, default=str, option=orjson.OPT_NON_STR_KEYS)


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return non_finite(v)  # JSON has no NaN/Inf; keep them visible as text, never as 0
    return v


def non_finite(v: float) -> str:
    """NaN, Inf or -Inf: how the status and the metrics write a number JSON has no word for."""
    return "NaN" if math.isnan(v) else "Inf" if v > 0 else "-Inf"


def _shown(v: Any, fmt: str) -> str:
    """A figure for the job log: formatted, NaN/Inf as words, '?' when missing."""
    if isinstance(v, str):
        return v
    if isinstance(v, float) and not math.isfinite(v):
        return non_finite(v)
    return format(v, fmt) if isinstance(v, (int, float)) else "?"


def cut_metrics_after(path: Path, step: int) -> int:
    """Keep the rows of metrics.jsonl up to `step`, and no torn last line; returns the rows
    removed.

    A resumed run redoes the steps after its checkpoint, so their rows would come twice (as
    dynamics.bin's records would, which the dynamics recorder cuts the same way). The file is
    rewritten whole (atomically) only when something goes."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return 0
    kept: list[bytes] = []
    removed = 0
    for line in data.split(b"\n"):
        if not line:
            continue
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError:
            removed += 1  # a torn write: the run was killed mid-line
            continue
        past = (
            isinstance(row, dict)
            and isinstance(row.get("current_step"), int)
            and row["current_step"] > step
        )
        if past:
            removed += 1
        else:
            kept.append(line)
    if removed:
        write_bytes_atomic(path, b"".join(line + b"\n" for line in kept))
    return removed


class StatusWriter(TrainerCallback):
    def __init__(
        self,
        status_path: Path,
        metrics_path: Path,
        base: dict[str, Any],
        collectors: list[Any],
        min_interval: float = 0.5,
        echo: Callable[[str], None] | None = None,
        job_path: Path | None = None,
    ):
        self.status_path = status_path
        self.job_path = job_path
        """status/jobs/job-N.json, the same document kept per job (several jobs may run at
        once)."""
        self.metrics_path = metrics_path
        self.base = dict(base)
        self.collectors = collectors
        self.min_interval = min_interval
        self.echo = echo
        self._last_write = 0.0
        self._last_echo = 0.0
        self._metrics: JsonlAppender | None = None  # metrics.jsonl, open from the first row
        self.fields: dict[str, Any] = {}

    def set(self, **fields: Any) -> None:
        self.fields.update(fields)

    def snapshot(self, state: Any = None) -> TrainingStatus:
        doc: dict[str, Any] = dict(self.base)
        if state is not None:
            doc.update(
                current_step=state.global_step,
                total_steps=state.max_steps,
                epoch=round(state.epoch or 0.0, 3),
            )
        for c in self.collectors:
            try:
                doc.update(c.summary())
            except Exception as exc:  # a broken collector must not stop training
                name = getattr(c, "name", type(c).__name__)
                doc.setdefault("collector_errors", {})[name] = str(exc)
        doc.update(self.fields)
        doc["updated_at"] = now_iso()
        return cast(TrainingStatus, {k: _clean(v) for k, v in doc.items()})

    def write(self, state: Any = None, force: bool = False) -> TrainingStatus | None:
        """The record as written, or None when it was written less than min_interval ago (and not
        forced)."""
        now = time.monotonic()
        if not force and now - self._last_write < self.min_interval:
            return None
        self._last_write = now
        doc = self.snapshot(state)
        data = orjson.dumps(doc, default=str, option=_INDENTED) + b"\n"
        for path in (self.status_path, self.job_path):
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                write_bytes_atomic(path, data, durable=force)
        return doc

    def append_metrics(self, row: dict[str, Any]) -> None:
        if self._metrics is None:
            self._metrics = JsonlAppender(self.metrics_path, dumps=_metrics_line)
        self._metrics.write(row)

    def close(self) -> None:
        if self._metrics is not None:
            self._metrics.close()
            self._metrics = None

    def on_train_begin(self, args, state, control, **kw):
        self.close()  # appends start again after the cut
        cut_metrics_after(self.metrics_path, state.global_step)  # the resumed checkpoint's step
        self.set(state="training")
        self.write(state, force=True)

    def on_log(self, args, state, control, logs=None, **kw):
        logs = logs or {}
        if "loss" in logs:
            self.set(loss=logs["loss"])
        if "learning_rate" in logs:
            self.set(learning_rate=logs["learning_rate"])
        if "grad_norm" in logs:
            self.set(grad_norm=logs["grad_norm"])
        doc = self.snapshot(state)
        row = {
            k: doc.get(k) for k in ("current_step", "epoch", "loss", "learning_rate", "grad_norm")
        }
        row.update(
            {
                k: v
                for k, v in doc.items()
                if k not in row and isinstance(v, (int, float)) and k != "job_id"
            }
        )
        row.update({k: _clean(v) for k, v in logs.items() if isinstance(v, (int, float))})
        row["time"] = time.time()
        # The Trainer's end-of-run summary (train_loss, train_runtime) is not a step: result.json
        # has it, and a second row at the last step (or, for a stopped attempt, at the step it
        # stopped) would repeat that step
        if not ("loss" not in logs and "train_loss" in logs):
            self.append_metrics(row)
        self.write(state)
        if (
            self.echo
            and "loss" in logs
            and (time.monotonic() - self._last_echo > 5 or state.global_step == state.max_steps)
        ):
            self._last_echo = time.monotonic()
            eta = doc.get("eta_seconds")
            self.echo(
                f"step {state.global_step}/{state.max_steps}  loss "
                f"{_shown(doc.get('loss'), '.4f')}  lr {_shown(doc.get('learning_rate'), '.2e')} "
                f" {_shown(doc.get('tokens_per_sec', 0), '.0f')} tok/s"
                + (f"  eta {eta:.0f}s" if eta is not None else "")
            )

    def on_train_end(self, args, state, control, **kw):
        self.close()

    def on_step_end(self, args, state, control, **kw):
        if not (args.logging_steps and state.global_step % args.logging_steps == 0):
            self.write(state)  # on logging steps on_log writes, right after
