"""`trainctl export JOB`: a finished job's adapter as is, or its base model with the LoRA merged in
(peft's merge_and_unload), as an ordinary transformers folder that AutoModelForCausalLM and vLLM
load directly.

Written to a temporary sibling and renamed, so a kill leaves the old folder or the new one, never
half. The destination is data/exports/ in the home, or `to` (anywhere but the inbox, where the
daemon would take it for input).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from daemon.atomic import read_json, write_json_atomic
from daemon.errors import HomeError, JobError
from daemon.home import Home
from daemon.jobs import JobQueue, JobState
from daemon.runs.checkpoints import complete_checkpoint_steps, job_checkpoints_dir

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def _adapter_of(
    home: Home, job_id: int, best: bool, checkpoint: int | None
) -> tuple[Path, Path, dict[str, Any]]:
    """(the adapter's weights, the final adapter beside which the job's settings and tokenizer were
    saved, those settings)."""
    with JobQueue(home.jobs_db, readonly=True) as q:
        job = q.get(job_id)
    if job.state != JobState.DONE or not job.adapter_dir:
        raise JobError(
            f"job {job_id} is {job.state.value} — only a finished (done) "
            "job has an adapter to export; `trainctl queue` shows the jobs"
        )
    final = adapter = Path(job.adapter_dir)
    if best and checkpoint is not None:
        raise JobError("--best and --checkpoint name two different adapters — keep one")
    if best:
        best_dir = adapter.parent / "adapter-best"
        # no adapter-best/: the last step was best
        adapter = final = best_dir if best_dir.exists() else adapter
    if checkpoint is not None:
        ckpts = job_checkpoints_dir(home, job_id)
        steps = complete_checkpoint_steps(ckpts)
        if checkpoint not in steps:
            kept = ", ".join(map(str, steps)) or "none"
            raise JobError(
                f"job {job_id} has no complete checkpoint at step {checkpoint} (kept: "
                f"{kept}) — `trainctl bench sweep --job {job_id}` judges the kept ones"
            )
        adapter = ckpts / f"checkpoint-{checkpoint}"
    config = read_json(final / "trainctl_config.json") or {}
    if not (adapter / "adapter_config.json").exists() or not config:
        raise JobError(
            f"{adapter} is not a complete trainctl adapter "
            "(no adapter_config.json or trainctl_config.json)"
        )
    return adapter, final, config


def _destination(home: Home, job_id: int, merge: bool, which: str, to: Path | None) -> Path:
    if to is None:
        name = f"job-{job_id}" + which + ("-merged" if merge else "-adapter")
        return home.root / "data" / "exports" / name
    dest = to.expanduser().resolve()
    inbox = home.inbox.resolve()
    if dest == inbox or inbox in dest.parents:
        raise HomeError(
            f"{to} is inside the inbox, where the daemon would "
            "take the files for training data — choose another --to"
        )
    return dest


def export_job(
    home: Home,
    job_id: int,
    merge: bool = False,
    best: bool = False,
    to: Path | None = None,
    checkpoint: int | None = None,
) -> Path:
    """Write job `job_id`'s adapter (or merged model) to its destination; returns the folder.
    `checkpoint`: the adapter of that kept checkpoint (step) instead of the final one."""
    adapter, final, config = _adapter_of(home, job_id, best, checkpoint)
    which = "-best" if best else f"-step-{checkpoint}" if checkpoint is not None else ""
    dest = _destination(home, job_id, merge, which, to)
    if dest.exists() and any(dest.iterdir()):
        raise HomeError(
            f"{dest} already exists and is not empty — remove it or choose another --to"
        )
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    if merge:
        _write_merged(home, adapter, final, config, tmp)
    elif adapter == final:
        shutil.copytree(adapter, tmp)
    else:
        # A checkpoint holds the weights; the tokenizer, chat template and settings were saved with
        # the final one.
        shutil.copytree(final, tmp, ignore=shutil.ignore_patterns(*ADAPTER_FILES))
        for name in ADAPTER_FILES:
            shutil.copy2(adapter / name, tmp / name)
    write_json_atomic(
        tmp / "trainctl_export.json",
        {
            "job_id": job_id,
            "merged": merge,
            "adapter": str(adapter),
            "base_model": config["train"]["model"],
            "checkpoint": checkpoint,
        },
    )
    if dest.exists():
        dest.rmdir()  # empty (checked above)
    tmp.rename(dest)
    return dest


def _write_merged(
    home: Home, adapter: Path, final: Path, config: dict[str, Any], out: Path
) -> None:
    """The base model with the adapter merged in, in the base's own dtype: weights (safetensors),
    config, generation config, and the tokenizer with its chat template (as trained with)."""
    import torch
    from transformers import AutoConfig, AutoTokenizer

    from daemon.models.loading import load_adapter, load_model, resolve_model_path

    train = config["train"]
    path = resolve_model_path(train["model"], home.models)
    stored = getattr(
        AutoConfig.from_pretrained(path, trust_remote_code=train["trust_remote_code"]),
        "dtype",
        None,
    )
    # Merged in fp32 (W + scale * B @ A without rounding twice), then saved as the base was
    base = load_model(
        train["model"],
        home.models,
        device="cpu",
        dtype="fp32",
        trust_remote_code=train["trust_remote_code"],
    )
    merged = load_adapter(base, adapter).merge_and_unload()
    if isinstance(stored, torch.dtype):
        merged = merged.to(stored)
    merged.save_pretrained(str(out), safe_serialization=True)
    # the tokenizer saved with the adapter
    AutoTokenizer.from_pretrained(str(final)).save_pretrained(str(out))
