"""Processes an engine starts die with the process that started it, even under kill -9
(daemon/parent_death.py).

Found with vLLM's CPU engine: after kill -9 of `trainctl bench run`, its engine core and worker
lived on, the worker holding 5.5 GB and 75% of a core. Here a parent starts children the ways vLLM
does (forked, spawned, and a child that spawns its own), is killed with SIGKILL, and every one of
them must be gone; a child started outside the engine's start is left alone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.helpers import ROOT, wait_for

PARENT = textwrap.dedent("""
    import multiprocessing as mp, os, sys, time
    sys.path.insert(0, sys.argv[2])
    import daemon
    from daemon.parent_death import spawning_engine_children

    def sleeper():
        time.sleep(120)

    def spawner(out):
        grandchild = mp.get_context("spawn").Process(target=sleeper)
        grandchild.start()
        with open(out, "w") as fh:
            fh.write(str(grandchild.pid))
        time.sleep(120)

    if __name__ == "__main__":
        with spawning_engine_children():
            kids = [
                mp.get_context("fork").Process(target=sleeper),
                mp.get_context("spawn").Process(target=sleeper),
                mp.get_context("spawn").Process(target=spawner, args=(sys.argv[1],)),
            ]
            for kid in kids:
                kid.start()
        outside = mp.get_context("fork").Process(target=sleeper)
        outside.start()
        print(" ".join(str(k.pid) for k in kids), outside.pid, flush=True)
        time.sleep(120)
""")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie waiting for its new parent to reap it is gone too
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except OSError:
        return False


def test_every_process_started_with_an_engine_dies_with_its_parent_under_kill_9(tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    grandchild_file = tmp_path / "grandchild.pid"
    proc = subprocess.Popen(
        [sys.executable, str(script), str(grandchild_file), str(ROOT)],
        stdout=subprocess.PIPE,
        text=True,
    )
    *kids, outside = (int(p) for p in proc.stdout.readline().split())
    grandchild = int(
        wait_for(
            lambda: grandchild_file.exists() and grandchild_file.read_text(),
            60,
            "the grandchild's pid",
        )
    )
    try:
        assert all(_alive(p) for p in [*kids, grandchild, outside])
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        wait_for(
            lambda: not any(_alive(p) for p in [*kids, grandchild]),
            30,
            "the engine's processes to die with their parent",
        )
        assert _alive(outside), "a process started outside the engine's start must not be touched"
    finally:
        for pid in [*kids, grandchild, outside]:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
