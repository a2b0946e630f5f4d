"""Run a job's training on an existing Ray cluster (`[distributed] backend = "ray"`): several
boxes.

The daemon's worker joins the cluster as a driver (`ray.init(address=...)`; it never starts one),
starts `num_workers` actors, each reserving `cpus_per_worker`/`gpus_per_worker`, and runs the same
rank code as torchrun's processes (daemon/distributed/rank.py) in each. Rank 0 is pinned to this
machine, so the status, metrics, flags and adapter land in this home folder as for a local job; the
other ranks may run anywhere. They read the dataset from, and every rank writes its part of each
checkpoint to, `storage_path`: a folder every node sees at the same path.

The actors die with the driver (Ray ends a driver's actors when it exits), so the job's processes
live and die as one group. A stop request goes to rank 0 (a SIGTERM on this machine); the ranks
agree on the step and checkpoint. A lost actor (node gone, killed) fails the attempt; the group is
started again from the newest complete checkpoint, up to `distributed.max_restarts` times. Ray is
imported only here, only when configured.
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from daemon.config import Settings
from daemon.devices import Placement
from daemon.distributed.outcome import read_outcome
from daemon.distributed.torchrun import prepare_launch
from daemon.errors import PlacementError, TrainingError
from daemon.home import Home
from daemon.stop_signals import StopSignals


class RankActor:
    """One training process of a job, in a Ray actor (the class is wrapped with `ray.remote` when
    used)."""

    def where(self) -> tuple[str, int, str]:
        import ray

        return ray.util.get_node_ip_address(), os.getpid(), ray.get_runtime_context().get_node_id()

    def run(
        self,
        home_root: str,
        job_id: int,
        rank: int,
        world: int,
        master: tuple[str, int],
        launch: dict[str, Any],
    ) -> int:
        import datetime

        import torch
        import torch.distributed as dist

        from daemon.distributed.agent import listening_socket
        from daemon.distributed.rank import run_rank

        # The environment torchrun would give: Ray shows each actor only its own GPUs, so each is
        # local rank 0
        os.environ.update(
            RANK=str(rank),
            WORLD_SIZE=str(world),
            LOCAL_RANK="0",
            LOCAL_WORLD_SIZE="1",
            MASTER_ADDR=master[0],
            MASTER_PORT=str(master[1]),
        )
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo" if master[0].startswith("127.") else "")
        if not os.environ["GLOO_SOCKET_IFNAME"]:
            del os.environ["GLOO_SOCKET_IFNAME"]
        timeout = datetime.timedelta(minutes=30)
        if rank == 0:
            # The store listens on this node's cluster address only (torch binds every interface
            # otherwise)
            sock = listening_socket(*master)
            store = dist.TCPStore(
                master[0], master[1], world, True, timeout, master_listen_fd=sock.fileno()
            )
        else:
            store = dist.TCPStore(master[0], master[1], world, False, timeout)
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend, store=store, rank=rank, world_size=world, timeout=timeout)
        try:
            return run_rank(home_root, job_id, launch)
        finally:
            dist.destroy_process_group()


def _storage(
    home: Home, job_id: int, dataset: Path, settings: Settings
) -> tuple[Path, Path | None]:
    """(the dataset the ranks read, their checkpoints folder): copies in storage_path, or the
    home's own."""
    shared = settings.distributed.storage_path
    if not shared:
        return dataset, None
    root = Path(shared).expanduser().resolve() / f"job-{job_id:05d}"
    copy = root / "dataset" / dataset.name
    if not (copy / "stats.json").exists():
        tmp = copy.with_name(copy.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(dataset, tmp)
        # whole or absent: a kill mid-copy leaves only the .tmp, copied again next time
        tmp.rename(copy)
    return copy, root / "checkpoints"


def run_on_ray(
    home: Home,
    job_id: int,
    dataset: Path,
    settings: Settings,
    place: Placement,
    echo: Callable[[str], None],
) -> dict[str, Any]:
    """Train on the Ray cluster; returns rank 0's outcome document
    (daemon/distributed/outcome.py)."""
    r = settings.distributed
    host = r.address.removeprefix("ray://").rsplit(":", 1)[0]
    if host in ("127.0.0.1", "localhost"):
        # A cluster on this machine's loopback (one box, the tests): Ray would otherwise rewrite
        # 127.0.0.1 into the machine's network address, where such a cluster does not listen
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    except ImportError:
        raise PlacementError(
            "distributed.backend = 'ray' needs Ray on this machine and the cluster's "
            "— pip install 'trainctl[ray]', or set distributed.backend = 'local'"
        ) from None
    if host in ("127.0.0.1", "localhost"):
        # Ray reads that setting once, when it is first imported; in a process that imported it
        # earlier (a test run, a notebook) the loopback address would still be rewritten
        from ray._private import ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        ray.init(address=r.address, logging_level="WARNING", log_to_driver=True)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise PlacementError(
            f"cannot join the Ray cluster at {r.address!r}: {exc} — "
            "start it with `ray start --head` (and `ray start --address "
            "HEAD:6379` on the other boxes), or fix distributed.address"
        ) from None
    try:
        here = ray.get_runtime_context().get_node_id()
        data, checkpoints = _storage(home, job_id, dataset, settings)
        launch = prepare_launch(home, job_id, data, settings, place, checkpoints_dir=checkpoints)
        actor = ray.remote(RankActor)
        for attempt in range(r.max_restarts + 1):
            n = r.num_workers
            echo(f"job {job_id}: {n} Ray workers at {r.address} (attempt {attempt + 1})")
            opts = {"num_cpus": r.cpus_per_worker, "num_gpus": r.gpus_per_worker}
            # Rank 0 on this machine (it writes the home's status and adapter), placed before the
            # others are asked for: asked for together, another rank could take this node's last
            # CPU/GPU and leave rank 0, pinned here, waiting. The others go where Ray finds room.
            workers = [
                actor.options(
                    **opts, scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False)
                ).remote()
            ]
            try:
                found = ray.get([workers[0].where.remote()], timeout=600)
                workers += [actor.options(**opts).remote() for _ in range(n - 1)]
                found += ray.get([w.where.remote() for w in workers[1:]], timeout=600)
            except ray.exceptions.GetTimeoutError:
                where = (
                    "on this machine (rank 0 runs here)"
                    if len(workers) == 1
                    else f"for all {n} of them"
                )
                raise PlacementError(
                    f"the Ray cluster found no room for a worker with {opts} "
                    f"{where} in 10 minutes — give the nodes CPUs/GPUs (`ray start "
                    "--num-cpus/--num-gpus`) or lower distributed.*_per_worker"
                ) from None
            ip, pid0, _ = found[0]
            echo(
                f"job {job_id}: ranks on nodes "
                + ", ".join(f"{i}:{node[:8]} ({addr})" for i, (addr, _, node) in enumerate(found))
            )
            assert place.port is not None
            refs = [
                w.run.remote(str(home.root), job_id, i, n, (ip, place.port), launch)
                for i, w in enumerate(workers)
            ]
            stopped = _wait(ray, refs, pid0)
            doc = read_outcome(home.run_dir(job_id), launch["launch"])
            for w in workers:
                ray.kill(w)
            if doc is not None:
                return doc
            if stopped:
                return {"interrupted": True, "steps": None, "error": None}
        raise TrainingError(
            f"the job's {r.num_workers} Ray workers failed {r.max_restarts + 1} time(s) "
            "— see the Ray logs (`ray logs`, /tmp/ray/session_latest/logs on each node)"
        )
    finally:
        ray.shutdown()


def _wait(ray: Any, refs: list[Any], pid0: int) -> bool:
    """Wait for every rank; a stop request (SIGTERM/SIGINT to the worker) is passed to rank 0,
    which tells the others at the end of the step. True if a stop was requested. A failed rank ends
    the wait (its error is logged by Ray); the caller restarts the group."""

    def forward(name: str) -> None:
        try:
            os.kill(pid0, signal.SIGTERM)
        except ProcessLookupError:
            pass

    with StopSignals(forward) as stop:  # once (daemon/stop_signals.py)
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1, timeout=1.0)
            for ref in done:
                try:
                    ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - a rank died: the attempt is over
                    print(
                        f"a training process failed: {type(exc).__name__}: {str(exc)[:500]}",
                        flush=True,
                    )
                    return stop.received is not None
    return stop.received is not None
