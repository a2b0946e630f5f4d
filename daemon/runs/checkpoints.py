"""Which checkpoints of a job are complete, and the request file `trainctl checkpoint` leaves (no
torch here: the queue commands read these too).

A checkpoint folder counts as complete only once RunControl has written its marker, after the
Trainer wrote every file of it; a folder without one (killed mid-write) is never resumed from.
"""

from __future__ import annotations

import re
from pathlib import Path

from daemon.atomic import read_json
from daemon.home import Home

COMPLETE_MARKER = "TRAINCTL_COMPLETE"
CHECKPOINT_REQUEST = "checkpoint.request"
"""In a job's run folder: `trainctl checkpoint` asks the running job to save a complete checkpoint
now."""
_CKPT = re.compile(r"^checkpoint-(\d+)$")


def complete_checkpoint_steps(ckpt_dir: Path) -> list[int]:
    """Steps of the complete checkpoints in `ckpt_dir`, oldest first."""
    if not ckpt_dir.is_dir():
        return []
    return sorted(
        int(m.group(1))
        for d in ckpt_dir.iterdir()
        if (m := _CKPT.match(d.name)) and (d / COMPLETE_MARKER).exists()
    )


def newest_complete_checkpoint(ckpt_dir: Path) -> Path | None:
    steps = complete_checkpoint_steps(ckpt_dir)
    return ckpt_dir / f"checkpoint-{steps[-1]}" if steps else None


def job_checkpoints_dir(home: Home, job_id: int) -> Path:
    """Where job `job_id` keeps its checkpoints: its run folder, or a Ray job's storage_path (its
    launch says)."""
    run_dir = home.run_dir(job_id)
    launch = read_json(run_dir / "launch.json") or {}
    return (
        Path(launch["checkpoints_dir"])
        if launch.get("checkpoints_dir")
        else run_dir / "checkpoints"
    )
