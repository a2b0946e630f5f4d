"""One process of a job with several (`python -m daemon.distributed.rank --home H --job N`, started
by torchrun, or `run_rank` in a Ray actor): read the launch the worker prepared, train, and on rank
0 leave the outcome.

Exit status: 0 whenever the outcome is known (done, interrupted, or failed for a reason it
explains), so that torchrun restarts the group only after a real crash (a killed rank, an OOM): the
restarted ranks resume from the newest complete checkpoint.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path
from typing import Any

from daemon.atomic import read_json
from daemon.config import settings_from_dict
from daemon.distributed.outcome import read_outcome, write_outcome
from daemon.errors import TrainctlError
from daemon.home import Home

LAUNCH_FILE = "launch.json"


def run_rank(home_root: str, job_id: int, launch: dict[str, Any] | None = None) -> int:
    """`launch`: the worker's launch document (Ray hands it over, as other nodes may not see this
    home folder); None = read data/runs/<job>/launch.json."""
    from daemon.training.ranks import is_main
    from daemon.training.recipe import LoRARecipe, RunContext

    home = Home.open(home_root)
    run_dir = home.run_dir(job_id)
    launch = launch or read_json(run_dir / LAUNCH_FILE) or {}
    if not launch:
        print(f"job {job_id}: no {LAUNCH_FILE} in {run_dir}", file=sys.stderr)
        return 1
    main = is_main()
    if read_outcome(run_dir, launch["launch"]) is not None:
        # A restart after rank 0 recorded how this launch ended: nothing left to do, for any rank
        # (every rank of a torchrun job sees the file; Ray never restarts a group whose outcome is
        # recorded)
        return 0
    ctx = RunContext(
        home,
        job_id,
        Path(launch["dataset_dir"]),
        settings_from_dict(launch["settings"]),
        echo=(lambda s: print(s, flush=True)) if main else (lambda s: None),
        watch_parent=True,
        checkpoints_dir=Path(launch["checkpoints_dir"]) if launch.get("checkpoints_dir") else None,
        placement=launch.get("placement") or {},
    )
    recipe = LoRARecipe(ctx)
    try:
        recipe.setup()
        recipe.train()
        outcome = recipe.finish()
    except TrainctlError as exc:
        if main:
            write_outcome(run_dir, launch["launch"], error=str(exc))
        return 0
    if main:
        write_outcome(run_dir, launch["launch"], outcome)
    return 0


def join_group(backend: str | None = None) -> None:
    """Under torchrun: join the job's process group through the agent's store, under a prefix of
    its own for each restart of the group. (The agent keeps one store across restarts; without the
    prefix the ranks of a restarted group would read the addresses the dead group left there, and
    fail to connect.)"""
    import datetime

    import torch
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) == 1 or dist.is_initialized():
        return
    cuda = torch.cuda.is_available() and os.environ.get("CUDA_VISIBLE_DEVICES", "x") != ""
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    timeout = datetime.timedelta(minutes=30)
    store = dist.TCPStore(
        os.environ["MASTER_ADDR"],
        int(os.environ["MASTER_PORT"]),
        int(os.environ["WORLD_SIZE"]),
        False,
        timeout,
    )
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    dist.init_process_group(
        backend or ("nccl" if cuda else "gloo"),
        store=dist.PrefixStore(f"trainctl/attempt_{attempt}", store),
        rank=int(os.environ["RANK"]),
        world_size=int(os.environ["WORLD_SIZE"]),
        timeout=timeout,
    )


def leave_group() -> None:
    """Tear the process group down before the interpreter exits. Left to exit, its background
    threads meet their destructors still joinable and the C++ runtime aborts the process
    ("terminate called without an active exception", exit -6): torchrun then takes a finished rank
    for a crashed one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m daemon.distributed.rank")
    p.add_argument("--home", required=True)
    p.add_argument("--job", type=int, required=True)
    a = p.parse_args(argv)
    # No death signal tied to the agent here: the kernel sends it when the agent's *thread* that
    # started this process ends, and torchrun starts a restarted group from a passing thread. A
    # rank whose agent is gone notices at the end of its step (RunControl watches the parent) and
    # stops with a checkpoint.
    try:
        join_group()
        code = run_rank(a.home, a.job)
        leave_group()
        return code
    except Exception:
        traceback.print_exc()
        print(
            f"rank {os.environ.get('RANK', '?')} of job {a.job} crashed",
            file=sys.stderr,
            flush=True,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
