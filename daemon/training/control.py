"""RunControl: stop requests, orphan detection and complete-checkpoint markers, as one TrainerCallback.

A stop (SIGTERM from `trainctl stop`, or the daemon dying) makes the Trainer save a checkpoint at the end of the
current step and leave the loop. A checkpoint counts as complete only once `on_save` has run, which happens after
the Trainer has written every file of it; a folder without the marker (killed mid-write) is never resumed from.
"""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

from transformers import TrainerCallback

COMPLETE_MARKER = "TRAINCTL_COMPLETE"
_CKPT = re.compile(r"^checkpoint-(\d+)$")


def newest_complete_checkpoint(ckpt_dir: Path) -> Path | None:
    best: tuple[int, Path] | None = None
    if not ckpt_dir.exists():
        return None
    for d in ckpt_dir.iterdir():
        m = _CKPT.match(d.name)
        if m and (d / COMPLETE_MARKER).exists() and (best is None or int(m.group(1)) > best[0]):
            best = (int(m.group(1)), d)
    return best[1] if best else None


class RunControl(TrainerCallback):
    def __init__(self, ckpt_dir: Path, watch_parent: bool = False):
        self.ckpt_dir = ckpt_dir
        self.stop_requested = False
        self.stop_reason = ""
        self.parent = os.getppid() if watch_parent else None
        self._previous: dict[int, object] = {}

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT ask for a checkpoint and a stop instead of killing; undone at the end of training."""
        def handler(signum, frame):
            self.request_stop(f"signal {signal.Signals(signum).name}")
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, handler)

    def on_train_end(self, args, state, control, **kw):
        for sig, old in self._previous.items():
            signal.signal(sig, old)  # type: ignore[arg-type]
        self._previous.clear()

    def request_stop(self, reason: str) -> None:
        self.stop_requested = True
        self.stop_reason = reason

    def on_step_end(self, args, state, control, **kw):
        if self.parent is not None and os.getppid() != self.parent:
            self.request_stop("the daemon went away")
        if self.stop_requested:
            control.should_save = True
            control.should_training_stop = True
        return control

    def on_save(self, args, state, control, **kw):
        from daemon.training.ranks import barrier, is_main

        # Several processes: each writes its own RNG state into the folder; it is complete once all have
        barrier()
        d = self.ckpt_dir / f"checkpoint-{state.global_step}"
        if is_main() and d.is_dir():
            (d / COMPLETE_MARKER).write_text(f"{state.global_step}\n")
            fd = os.open(d, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
