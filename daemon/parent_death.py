"""Processes that die with their parent, even when the parent is killed with kill -9 (Linux:
PR_SET_PDEATHSIG).

Our own children (the training worker, ranks, bench shards) call `die_with_parent()` at start. The
processes that vLLM starts for its engine (the engine core, its workers) run none of our code on
purpose, so `spawning_engine_children()` marks the time the engine starts:
- a child *forked* meanwhile gets the death signal in the fork hook below;
- a child *spawned* meanwhile imports its parent's main module, and with it `daemon`, whose
  `__init__` calls `adopt_if_asked()`: `ENGINE_CHILD_ENV` names the process that started the
  engine.
Their own children inherit the mark, so a kill -9 of the bench takes the whole engine down (found
orphaned before: the engine worker kept 5.5 GB and 75% of a core after its bench was killed).
Torch-free.
"""

from __future__ import annotations

import ctypes
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager

ENGINE_CHILD_ENV = "TRAINCTL_DIE_WITH_PARENT"
"""Set to the pid of the process that spawns an engine while it does; its children and theirs die
with it."""


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Get `sig` when the parent dies (other systems: nothing; RunControl also notices a parent
    change)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, sig)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def adopt_if_asked() -> None:
    """In a process spawned under `spawning_engine_children`: die with the parent. SIGKILL: vLLM's
    engine core takes SIGTERM as "shut down gracefully" and then waits for the client that just
    died (seen: it stayed up for good). If the spawning process is already gone, leave now."""
    owner = os.environ.get(ENGINE_CHILD_ENV, "")
    if not owner.isdigit() or int(owner) == os.getpid():
        return
    die_with_parent(signal.SIGKILL)
    try:
        os.kill(int(owner), 0)
    except ProcessLookupError:
        os._exit(1)
    except PermissionError:
        pass


_starting_engine = False
"""True in a process between entering and leaving `spawning_engine_children` (and in what it forks
then)."""


def _after_fork_in_child() -> None:
    if _starting_engine:
        die_with_parent(signal.SIGKILL)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


@contextmanager
def spawning_engine_children() -> Iterator[None]:
    """Around the call that starts an engine's processes: they (and their own children) die with
    this process."""
    global _starting_engine
    old = os.environ.get(ENGINE_CHILD_ENV)
    os.environ[ENGINE_CHILD_ENV] = str(os.getpid())
    _starting_engine = True
    try:
        yield
    finally:
        _starting_engine = False
        if old is None:
            os.environ.pop(ENGINE_CHILD_ENV, None)
        else:
            os.environ[ENGINE_CHILD_ENV] = old
