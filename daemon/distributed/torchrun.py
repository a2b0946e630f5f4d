"""Run a job's training as several processes on this machine under torchrun
(torch.distributed.elastic).

The worker prepares data/runs/<job>/launch.json (settings, dataset, placement), starts the agent
(daemon/distributed/agent.py) with one process per GPU (or `train.nproc` gloo processes on CPU) and
the job's own rendezvous port, and waits. A stop request (the daemon stopping, or dying) is passed
to the agent, which passes it to every rank; they agree on the step, save a checkpoint and leave. A
rank that dies takes the group down and torchrun restarts it (`distributed.max_restarts`); the new
ranks resume from the newest complete checkpoint.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from daemon.atomic import write_json_atomic
from daemon.config import Settings
from daemon.devices import Placement
from daemon.distributed.outcome import read_outcome
from daemon.distributed.rank import LAUNCH_FILE
from daemon.errors import TrainingError
from daemon.home import Home
from daemon.stop_signals import StopSignals


def prepare_launch(
    home: Home,
    job_id: int,
    dataset: Path,
    settings: Settings,
    place: Placement,
    checkpoints_dir: Path | None = None,
) -> dict[str, Any]:
    """Write launch.json for the ranks and return it; its `launch` id is what their outcome must
    carry."""
    run_dir = home.run_dir(job_id)
    run_dir.mkdir(parents=True, exist_ok=True)
    doc = {
        "launch": uuid.uuid4().hex,
        "job_id": job_id,
        "dataset_dir": str(dataset),
        "settings": settings.to_dict(),
        "placement": place.to_dict(),
        "checkpoints_dir": str(checkpoints_dir) if checkpoints_dir else None,
    }
    write_json_atomic(run_dir / LAUNCH_FILE, doc)
    return doc


def torchrun_command(
    home: Home, job_id: int, place: Placement, max_restarts: int, stop_timeout: int
) -> list[str]:
    assert place.port is not None, "a job with several processes holds a rendezvous port"
    return [
        sys.executable,
        "-m",
        "daemon.distributed.agent",
        "--nnodes",
        "1",
        "--nproc-per-node",
        str(place.nproc),
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(place.port),
        "--max-restarts",
        str(max_restarts),
        # after a stop, the ranks finish their step and save before torchrun would kill them
        "--shutdown-timeout",
        str(stop_timeout),
        # each rank's output also in data/runs/<job>/ranks/ (the console shows it too)
        "--log-dir",
        str(home.run_dir(job_id) / "ranks"),
        "--tee",
        "3",
        "-m",
        "daemon.distributed.rank",
        "--home",
        str(home.root),
        "--job",
        str(job_id),
    ]


def rank_env(place: Placement) -> dict[str, str]:
    """What every rank's environment adds: its GPUs, and (on CPU) the loopback interface for gloo
    and one thread per process, so that N processes share the cores instead of each taking all of
    them."""
    env = {**os.environ, **place.env()}
    env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    if not place.gpus:
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // place.nproc)))
    return env


def run_torchrun(
    home: Home,
    job_id: int,
    dataset: Path,
    settings: Settings,
    place: Placement,
    echo: Callable[[str], None],
) -> dict[str, Any]:
    """Train under torchrun; returns rank 0's outcome document (daemon/distributed/outcome.py)."""
    launch = prepare_launch(home, job_id, dataset, settings, place)["launch"]
    cmd = torchrun_command(
        home,
        job_id,
        place,
        settings.distributed.max_restarts,
        settings.distributed.stop_timeout_seconds,
    )
    echo(f"job {job_id}: {place.nproc} processes under torchrun ({place.describe()})")
    agent = subprocess.Popen(cmd, env=rank_env(place))  # it dies with this worker (agent.py)

    def forward(name: str) -> None:
        if agent.poll() is None:
            agent.send_signal(signal.SIGTERM)  # the agent passes it to every rank; they checkpoint

    # Once: a repeat would make the agent give up waiting for the ranks' checkpoint
    # (daemon/stop_signals.py)
    with StopSignals(forward) as stop:
        code = agent.wait()
    doc = read_outcome(home.run_dir(job_id), launch)
    if doc is not None:
        return doc
    if stop.received:
        return {"interrupted": True, "steps": None, "error": None}
    raise TrainingError(
        f"the job's {place.nproc} training processes failed (torchrun exit "
        f"code {code}, after up to {settings.distributed.max_restarts} "
        f"restarts) — each rank's output is in {home.run_dir(job_id) / 'ranks'}"
    )
