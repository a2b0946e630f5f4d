"""Devices as a resource of the queue: which GPUs (or CPU slots) and which rendezvous port each
running job holds.

The daemon asks `Devices.take(job_id, settings)` before starting a job: it gets a `Placement` (the
GPUs, the number of processes, a port when there are several), `None` when the job must wait for
others to finish, or a `PlacementError` when the request can never be met on this machine (the job
fails with that message). Nothing here imports torch: GPUs are found from CUDA_VISIBLE_DEVICES or
`nvidia-smi`, as a person would count them.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from dataclasses import asdict, dataclass, field
from typing import Any

from daemon.config import DaemonConfig, Settings
from daemon.errors import PlacementError


def visible_gpus(setting: str | list[int]) -> list[int]:
    """The GPU indices `daemon.gpus` names: a list as given; `all` = CUDA_VISIBLE_DEVICES when it
    is set (the daemon was itself given a subset), else every GPU `nvidia-smi` lists, else none."""
    if isinstance(setting, list):
        return list(setting)
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [int(x) for x in env.split(",") if x.strip().lstrip("-").isdigit() and int(x) >= 0]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [int(line) for line in out.split() if line.strip().isdigit()]


def port_free(port: int) -> bool:
    """Nobody listens on 127.0.0.1:`port` now (a process outside trainctl may hold a port in the
    range)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass
class Placement:
    """Where one job runs; stored with the job (`trainctl queue` shows it) and handed to its
    worker."""

    backend: str = "local"
    """`local` or `ray`."""
    gpus: list[int] = field(default_factory=list)
    """GPU indices the job holds (its CUDA_VISIBLE_DEVICES); empty on CPU."""
    nproc: int = 1
    """Processes of the job on this machine (torchrun when > 1); ray: the cluster's workers."""
    port: int | None = None
    """The rendezvous port, when there are several processes."""
    slot: int | None = None
    """The CPU slot held, on machines without GPUs to hand out."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: dict[str, Any] | None) -> Placement:
        return cls(**doc) if doc else cls()

    def env(self) -> dict[str, str]:
        """What the job's processes see: its GPUs only (an empty string hides every GPU from a CPU
        job)."""
        return {"CUDA_VISIBLE_DEVICES": ",".join(map(str, self.gpus))} if self.gpus else {}

    def describe(self) -> str:
        """`gpu 0,1 x2 :29601`, `cpu slot 1`, `ray x4` — what the queue shows."""
        if self.backend == "ray":
            return f"ray x{self.nproc}" + (f" :{self.port}" if self.port else "")
        where = f"gpu {','.join(map(str, self.gpus))}" if self.gpus else f"cpu slot {self.slot}"
        return (
            where
            + (f" x{self.nproc}" if self.nproc > 1 else "")
            + (f" :{self.port}" if self.port else "")
        )


class Devices:
    """The daemon's ledger of GPUs, CPU slots and ports held by running jobs."""

    def __init__(
        self, cfg: DaemonConfig, gpus: list[int] | None = None, port_check: Any = port_free
    ):
        self.gpus = visible_gpus(cfg.gpus) if gpus is None else gpus
        self.slots = cfg.slots
        self.ports = range(cfg.rendezvous_ports[0], cfg.rendezvous_ports[1] + 1)
        self.port_check = port_check
        self.held: dict[int, Placement] = {}

    def free_gpus(self) -> list[int]:
        busy = {g for p in self.held.values() for g in p.gpus}
        return [g for g in self.gpus if g not in busy]

    def _gpus_wanted(self, s: Settings) -> int:
        want = s.train.gpus_per_job
        return len(self.gpus) if want == "all" else int(want)

    def check(self, s: Settings) -> None:
        """Raise PlacementError when this machine can never run the job as configured."""
        t = s.train
        if s.distributed.backend == "ray":
            return  # the cluster decides; Ray says if it cannot
        if self.gpus and t.device != "cpu":
            want = self._gpus_wanted(s)
            if want > len(self.gpus):
                raise PlacementError(
                    f"the job asks for {want} GPUs (train.gpus_per_job) but this machine offers "
                    f"{len(self.gpus)} (daemon.gpus) — lower train.gpus_per_job or use more GPUs"
                )
            if t.nproc and t.nproc != want:
                raise PlacementError(
                    f"train.nproc = {t.nproc} but the job holds {want} GPU(s): on GPUs it runs "
                    f"one process per GPU — set train.nproc = 0 or train.gpus_per_job = {t.nproc}"
                )
        elif t.device == "cuda" or t.gpus_per_job not in (1, "all"):
            raise PlacementError(
                f"the job asks for GPUs (train.device = {t.device!r}, train.gpus_per_job = "
                f"{t.gpus_per_job!r}) but the daemon has none to hand out (daemon.gpus) — "
                "train on CPU with train.nproc processes, or run the daemon on a GPU machine"
            )
        if t.fsdp and not (self.gpus and t.device != "cpu" and self._gpus_wanted(s) > 1):
            raise PlacementError(
                "train.fsdp shards the model across several GPUs: it needs train.gpus_per_job "
                "> 1 on a machine with GPUs — turn it off to train with DDP or on one device"
            )

    def take(self, job_id: int, s: Settings) -> Placement | None:
        """A placement for `job_id`, or None when it must wait for a running job to finish."""
        self.check(s)
        if s.distributed.backend == "ray":
            # The cluster schedules the workers; this machine only runs the driver, one job at a
            # time per slot.
            if len(self.held) >= self.slots:
                return None
            place = Placement(backend="ray", nproc=s.distributed.num_workers)
        elif self.gpus and s.train.device != "cpu":
            free = self.free_gpus()
            want = self._gpus_wanted(s)
            if len(free) < want:
                return None
            place = Placement(gpus=free[:want], nproc=want)
        else:
            used = {p.slot for p in self.held.values() if p.slot is not None}
            free_slots = [i for i in range(self.slots) if i not in used]
            if not free_slots:
                return None
            place = Placement(slot=free_slots[0], nproc=max(1, s.train.nproc))
        if place.nproc > 1 or place.backend == "ray":
            place.port = self._port()
        self.held[job_id] = place
        return place

    def _port(self) -> int:
        held = {p.port for p in self.held.values()}
        for port in self.ports:
            if port not in held and self.port_check(port):
                return port
        raise PlacementError(
            "no free rendezvous port in daemon.rendezvous_ports "
            f"{self.ports.start}-{self.ports.stop - 1} (held by "
            "running jobs or other programs) — widen the range"
        )

    def release(self, job_id: int) -> None:
        self.held.pop(job_id, None)
