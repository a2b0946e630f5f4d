"""A stop asked of a job's process by signal (SIGTERM, SIGINT), taken once.

The same stop can reach a job's processes several times within milliseconds. The kernel sends the
parent-death signal (PR_SET_PDEATHSIG, daemon/service/worker.py) each time the worker passes from
one thread of a dying daemon to the next, so a daemon killed with four threads delivers up to four
SIGTERMs; a daemon asked twice (Ctrl-C, then `trainctl stop`) passes both on. The first starts the
stop. The others must change nothing: passed on to torchrun's agent, a second signal makes it stop
waiting for the ranks' checkpoint (a third can leave it hung at exit); left to the default action,
a late one kills the worker before it has recorded how the job ended.

Nothing here imports torch.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopSignals:
    """While installed, the first SIGTERM/SIGINT calls `on_stop(signal name)`; later ones are
    ignored.

    `release()` (or leaving the `with` block) puts the previous handlers back if no stop came. If
    one came, later signals stay ignored: the process is finishing that stop (recording it, then
    exiting), and a repeat of the same stop must not cut that short.
    """

    def __init__(self, on_stop: Callable[[str], None]):
        self.on_stop = on_stop
        self.received: str | None = None
        """The name of the signal that asked for the stop; None while none has."""
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is None:
            self.received = signal.Signals(signum).name
            self.on_stop(self.received)

    def install(self) -> StopSignals:
        self._previous = {s: signal.signal(s, self._handle) for s in STOP_SIGNALS}
        return self

    def release(self) -> None:
        if self.received is None:
            for s, old in self._previous.items():
                signal.signal(s, old)
        self._previous.clear()

    def __enter__(self) -> StopSignals:
        return self.install()

    def __exit__(self, *exc: Any) -> None:
        self.release()
