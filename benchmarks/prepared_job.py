"""A training job prepared in a throwaway home, for the benchmarks that time the recipe's Trainer
in-process: the sample dataset curated, the settings, the encoded training split.

builtin:tiny trains on examples/demo_uppercase.jsonl (what it can learn); every other model on
examples/demo_reverse.jsonl, the `make demo` task.
"""

from __future__ import annotations

import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def sample_file(model: str) -> Path:
    name = "demo_uppercase.jsonl" if model == "builtin:tiny" else "demo_reverse.jsonl"
    return ROOT / "examples" / name


@dataclass
class PreparedJob:
    ctx: Any
    """The recipe's RunContext (home, dataset, settings)."""
    tok: Any
    rows: list[dict[str, Any]]
    train_set: list[dict[str, list[int]]]

    def batching(self) -> Any:
        """The recipe's batches for the current settings (packed or padded)."""
        from daemon.training.packing import Batching

        return Batching(self.train_set, self.ctx.settings.train, self.tok.pad_token_id)


def prepare(model: str, steps: int, batch_size: int, tok_model: str | None = None) -> PreparedJob:
    """Settings for `steps` optimizer steps with no checkpoints, final check or snapshots inside
    the timed runs."""
    from daemon.config import Settings
    from daemon.curation.curator import Curator
    from daemon.home import Home
    from daemon.models.loading import load_tokenizer
    from daemon.training.recipe import RunContext, load_data

    home = Home.open(Path(tempfile.mkdtemp(prefix="trainctl-bench-")))
    s = Settings()
    s.train.model = model
    s.train.max_steps = steps
    s.train.batch_size = batch_size
    s.train.save_steps = 10**6
    s.train.final_eval_examples = 0
    # evolution snapshots are an evaluation pass too: benchmarks/snapshot_cost.py
    s.train.evolution_examples = 0
    s.train.max_length = 512  # as measured before max_length became "auto" (its rows are shorter)
    tok = load_tokenizer(tok_model or model, home.models)
    ds = home.datasets / "bench"
    Curator(s.curation, s.train, tokenizer=tok).run(sample_file(tok_model or model), ds)
    ctx = RunContext(home=home, job_id=1, dataset_dir=ds, settings=s, echo=lambda m: None)
    rows, train_set = load_data(ctx, tok)
    return PreparedJob(ctx, tok, rows, train_set)


def timed_train(
    job: PreparedJob, model: Any, args: Any, callbacks: list[Any], b: Any
) -> tuple[Any, float]:
    """Train `model` on the job's training split with the Trainer (its own progress printers
    removed); returns the trainer and the wall time of `trainer.train()` (GPU work waited for at
    both ends)."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    dynamics = next((c for c in callbacks if getattr(c, "name", None) == "dynamics"), None)
    trainer = b.trainer_class(
        model=model,
        args=args,
        train_dataset=b.dataset,
        data_collator=b.collator,
        callbacks=callbacks,
        dynamics=dynamics,
    )
    for noisy in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(noisy)
    return trainer, train_seconds(trainer)


def train_seconds(trainer: Any) -> float:
    """Wall time of `trainer.train()`, GPU work waited for at both ends."""
    import time

    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    trainer.train()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t0
