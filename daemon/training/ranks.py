"""Which process of a job this is, and the one collective that keeps several processes in step.

With several processes (torchrun, Ray) every rank trains; rank 0 alone writes the status, metrics,
flags, snapshots, checkpoint markers and the adapter, and runs the fixed evaluation and the
snapshots while the others wait at the next step's gradient all-reduce. Whatever decides to stop or
save (a stop request, a critical alert, early stopping) is known to one rank only, so `AgreeOnStop`
ORs those decisions over all ranks at the end of every step: a rank that left the loop alone would
leave the others waiting forever.
"""

from __future__ import annotations

import os

from transformers import TrainerCallback


def rank() -> int:
    """This process's global rank (0 with one process). Read from the environment torchrun/Ray set,
    so that it is right before the process group exists."""
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    """Wait for every rank (nothing to wait for with one process)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


class AgreeOnStop(TrainerCallback):
    """After every other callback's on_step_end: should_training_stop and should_save become true
    on every rank if they are true on any, and so does a stop request (`run_control`: a signal
    reached one rank first), so that every rank tells an interrupted run from a finished one, and
    the best checkpoint's step (one small all-reduce per step; nothing with one process)."""

    def __init__(self, run_control):
        self.run_control = run_control

    def on_step_end(self, args, state, control, **kw):
        import torch
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return control
        flags = torch.tensor(
            [
                float(control.should_training_stop),
                float(control.should_save),
                float(self.run_control.stop_requested),
                float(state.best_global_step or 0),
            ],
            device=args.device,
        )
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        control.should_training_stop, control.should_save = bool(flags[0]), bool(flags[1])
        # The best step is known where the evaluation ran (rank 0); the Trainer's checkpoint saving
        # waits for every rank at a barrier when it is set, so every rank must see it
        if flags[3] > 0:
            state.best_global_step = int(flags[3])
        if flags[2] and not self.run_control.stop_requested:
            self.run_control.request_stop("another process of the job was asked to stop")
        return control
