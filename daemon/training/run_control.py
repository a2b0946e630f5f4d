"""RunControl: stop and checkpoint requests, orphan detection and complete-checkpoint markers, as
one TrainerCallback.

A stop (SIGTERM from `trainctl stop`, `pause` or `cancel`, or the daemon dying) makes the Trainer
save a checkpoint at the end of the current step and leave the loop. `trainctl checkpoint` leaves a
request file in the run folder: the main process sees it at the end of a step and the Trainer saves
a checkpoint there (every process of the job agrees through AgreeOnStop), then goes on; the file is
removed once that checkpoint is complete.

A checkpoint counts as complete only once `on_save` has run, which happens after the Trainer has
written every file of it (daemon/runs/checkpoints.py).
"""

from __future__ import annotations

import os
from pathlib import Path

from transformers import TrainerCallback

from daemon.runs.checkpoints import COMPLETE_MARKER
from daemon.stop_signals import StopSignals


class RunControl(TrainerCallback):
    def __init__(
        self, ckpt_dir: Path, watch_parent: bool = False, request_file: Path | None = None
    ):
        self.ckpt_dir = ckpt_dir
        self.request_file = request_file
        self._saving_on_request = False
        self.stop_requested = False
        self.stop_reason = ""
        self.parent = os.getppid() if watch_parent else None
        self._signals = StopSignals(lambda name: self.request_stop(f"signal {name}"))

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT ask for a checkpoint and a stop instead of killing (repeats of it change
        nothing: daemon/stop_signals.py); undone at the end of training unless a stop came."""
        self._signals.install()

    def release_signal_handlers(self) -> None:
        """Undo install_signal_handlers (once; a stop that came keeps later signals ignored)."""
        self._signals.release()

    def on_train_end(self, args, state, control, **kw):
        self.release_signal_handlers()

    def request_stop(self, reason: str) -> None:
        self.stop_requested = True
        self.stop_reason = reason

    def on_step_end(self, args, state, control, **kw):
        if self.parent is not None and os.getppid() != self.parent:
            self.request_stop("the daemon went away")
        if self.stop_requested:
            control.should_save = True
            control.should_training_stop = True
        elif self.request_file is not None and self.request_file.exists():
            from daemon.training.ranks import is_main

            if is_main():
                control.should_save = True
                self._saving_on_request = True
        return control

    def on_save(self, args, state, control, **kw):
        from daemon.training.ranks import barrier, is_main

        # Several processes: each writes its own RNG state into the folder; it is complete once all
        # have
        barrier()
        d = self.ckpt_dir / f"checkpoint-{state.global_step}"
        if is_main() and d.is_dir():
            (d / COMPLETE_MARKER).write_text(f"{state.global_step}\n")
            fd = os.open(d, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            if self._saving_on_request and self.request_file is not None:
                self.request_file.unlink(missing_ok=True)  # answered: checkpoint-N is complete
                self._saving_on_request = False
