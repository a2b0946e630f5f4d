"""The LoRA fine-tuning recipe, in three stages: `setup()` -> `train()` -> `finish()`.

- setup: run folder, resolved config, seeds -> data (the curated train split, tokenised, prompt
  tokens masked) -> model (the base model with LoRA adapters, only they train) -> batches,
  TrainingArguments, collectors, Trainer.
- train: the Trainer's loop, resumed from the newest complete checkpoint in
  data/runs/<job>/checkpoints/.
- finish: what happened (stopped, failed on a critical alert, or done) -> the adapter(s) -> final
  checks -> result.json and the last status.

Runs inside the daemon's child process (or the foreground for `trainctl train`); under torchrun or
Ray every rank runs it and rank 0 alone reports. The worker records the outcome in the job queue.
The benchmarks build their Trainers from the same public pieces (`build_model`, `training_args`,
`build_collectors`).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from daemon.atomic import read_json, write_json_atomic
from daemon.config import BUILTIN_TINY, Settings, TrainConfig
from daemon.errors import TrainingError
from daemon.home import Home
from daemon.models.library_names import checkpointing_args, quiet_peft_wrap
from daemon.training.outputs import final_checks, flag_suspects, save_adapter, save_best_adapter
from daemon.training.ranks import is_main, world_size
from daemon.training.wiring import Collectors, build_collectors

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import Trainer, TrainingArguments

    from daemon.training.data import TrainedParts
    from daemon.training.packing import Batching
    from daemon.training.run_control import RunControl
    from daemon.training.status_writer import StatusWriter


@dataclass
class TrainOutcome:
    interrupted: bool
    """True when a stop request ended training early; a checkpoint was saved and the job resumes
    later."""
    steps: int
    adapter_dir: Path | None = None
    resumed_from: str | None = None
    final_loss: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunContext:
    home: Home
    job_id: int
    dataset_dir: Path
    settings: Settings
    echo: Callable[[str], None] = print
    watch_parent: bool = False
    """In a daemon child: stop (with a checkpoint) if the daemon goes away."""
    checkpoints_dir: Path | None = None
    """Where checkpoints go; None = data/runs/<job>/checkpoints (Ray: a folder every node sees)."""
    placement: dict[str, Any] = field(default_factory=dict)
    """Where the job runs (daemon.devices.Placement as a dict), recorded in config.json."""

    def checkpoints(self) -> Path:
        return self.checkpoints_dir or self.home.run_dir(self.job_id) / "checkpoints"


def resolved_config(ctx: RunContext) -> dict[str, Any]:
    """The settings as trained with, defaults filled in: saved as config.json beside the adapter.
    `precision` says which device and dtypes `train.device`/`train.dtype` resolved to, and why."""
    from daemon.models.loading import default_lr, pick_device, pick_precision

    cfg = ctx.settings.train
    doc = ctx.settings.to_dict()
    if not doc["train"]["lr"]:
        doc["train"]["lr"] = default_lr(cfg.model)
    device = pick_device(cfg.device)
    doc["precision"] = {"device": device, **pick_precision(cfg.dtype, device).to_dict()}
    # Where it ran: every process of the job, and the devices they saw
    doc["placement"] = {
        **ctx.placement,
        "world_size": world_size(),
        "devices": os.environ.get("CUDA_VISIBLE_DEVICES") if device == "cuda" else device,
    }
    doc["job_id"] = ctx.job_id
    doc["dataset_dir"] = str(ctx.dataset_dir)
    return doc


def load_data(
    ctx: RunContext, tok: Any, parts: TrainedParts | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, list[int]]]]:
    """The curated train split: its rows, and each one tokenised with the prompt's labels masked
    (`parts` counts the calls and reasoning that reached the loss, per layout)."""
    from daemon.training.data import encode_rows, read_split

    cfg = ctx.settings.train
    rows = read_split(ctx.dataset_dir / "train.jsonl")
    encoded = encode_rows(
        tok, rows, cfg.resolved_max_length, cfg.loss_on, cfg.loss_on_reasoning, parts
    )
    if not encoded:
        raise TrainingError(
            f"{ctx.dataset_dir.name} has no training example with a trainable token"
        )
    return rows, encoded


def build_model(ctx: RunContext) -> PeftModel:
    """The base model with LoRA adapters on `train.target_modules`; only they train."""
    from peft import LoraConfig, get_peft_model

    from daemon.models.loading import load_model

    cfg = ctx.settings.train
    base = load_model(
        cfg.model, ctx.home.models, cfg.device, cfg.dtype, cfg.trust_remote_code, cfg.quantization
    )
    # Training passes no cache: transformers builds the packed (block-diagonal) mask only without
    # one.
    base.config.use_cache = False
    targets: Any = "all-linear" if cfg.target_modules == ["all-linear"] else cfg.target_modules
    # builtin:tiny's output head is random: frozen, it caps the loss near 2.0 and leaves the model
    # badly calibrated even when every answer is right, so it is trained in full (50k parameters,
    # saved with the adapter).
    head = ["lm_head"] if cfg.model == BUILTIN_TINY else None
    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=targets,
        task_type="CAUSAL_LM",
        modules_to_save=head,
    )
    # peft reads a renamed transformers property (daemon/models/library_names.py)
    with quiet_peft_wrap():
        return get_peft_model(base, lora)


def training_args(
    ctx: RunContext, config: dict[str, Any], model: Any, batch_size: int
) -> TrainingArguments:
    """The Trainer's arguments for this run (`config`: resolved_config's; `batch_size`: dataset
    items per device per step, examples when padded, 1 micro-batch when packed)."""
    from transformers import TrainingArguments

    cfg = ctx.settings.train
    on_cpu = next(model.parameters()).device.type == "cpu"
    precision = config["precision"]
    # The Trainer's bf16/fp16 switch is autocast (accelerate's mixed precision): with fp32 weights
    # that is fp32 master weights and bf16 matmuls; with bf16 weights the matmuls were bf16 anyway.
    half = precision["autocast"] or precision["weights"]
    lr = config["train"]["lr"]
    several = world_size() > 1
    if cfg.fsdp and (on_cpu or not several):
        raise TrainingError(
            "train.fsdp shards the model across several GPUs — it needs CUDA and more than one "
            "process (train.gpus_per_job > 1); turn it off to train with DDP or on one device"
        )
    return TrainingArguments(
        output_dir=str(ctx.checkpoints()),
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=lr,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps if cfg.max_steps > 0 else -1,
        warmup_steps=cfg.warmup_ratio,  # < 1 means a fraction of all steps
        weight_decay=cfg.weight_decay,
        lr_scheduler_type="linear",
        logging_steps=cfg.logging_steps,
        # A NaN/Inf loss is logged as it is: the default filter would show the earlier losses' mean
        logging_nan_inf_filter=False,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        eval_strategy="no",
        seed=cfg.seed,
        use_cpu=on_cpu,
        bf16=half == "bfloat16",
        fp16=half == "float16",
        # gradient_checkpointing, or activation_checkpointing where transformers renamed it
        **checkpointing_args(cfg.gradient_checkpointing),
        use_liger_kernel=_liger(cfg, on_cpu),
        include_num_input_tokens_seen="non_padding",
        remove_unused_columns=False,
        dataloader_num_workers=0,
        disable_tqdm=True,
        report_to="none",
        # Several processes: LoRA leaves most parameters frozen, so DDP must not look for unused
        # ones each step
        ddp_find_unused_parameters=False if several else None,
        ddp_backend="gloo" if several and on_cpu else None,
        fsdp="full_shard auto_wrap" if cfg.fsdp else "",
        fsdp_config={"use_orig_params": True} if cfg.fsdp else None,
    )


def _liger(cfg: TrainConfig, on_cpu: bool) -> bool:
    """Liger kernels where asked for, installed, and on a CUDA GPU (they are Triton kernels)."""
    import importlib.util

    return cfg.liger and not on_cpu and importlib.util.find_spec("liger_kernel") is not None


def total_steps(cfg: TrainConfig, items_per_epoch: int, batch_size: int) -> int:
    """Optimizer steps of the run: `items_per_epoch` dataset items (examples, or packed
    micro-batches), `batch_size` of them per process per micro-step, on every process of the
    job."""
    per_epoch = math.ceil(items_per_epoch / (batch_size * cfg.grad_accum * world_size()))
    return cfg.max_steps if cfg.max_steps > 0 else max(1, math.ceil(per_epoch * cfg.epochs))


def _rendering_status(report: dict[str, Any]) -> dict[str, Any]:
    """The status file's `rendering` line, for datasets with tools, calls or reasoning at all: how
    the template renders them, the layouts, and what reached the loss."""
    if not any(report["rows_with"].values()):
        return {}
    trained = f" — {report['trained']}" if report.get("trained") else ""
    return {"rendering": report["summary"] + trained}


def _max_length_status(config: dict[str, Any]) -> str:
    """The status file's `max_length` line: the number, and with "auto" how it was chosen."""
    from daemon.models.max_length import AutoLength

    auto = config.get("max_length_auto")
    if not auto:
        return f"{config['train']['max_length']} tokens (set)"
    fields = {k: auto[k] for k in AutoLength.__dataclass_fields__ if k in auto}
    try:
        return AutoLength(**fields).summary()
    except TypeError:  # an older record
        return f"{config['train']['max_length']} tokens (auto)"


class LoRARecipe:
    """One job's LoRA fine-tune: `setup()`, then `train()`, then `finish()` (what `run()` does)."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.cfg = ctx.settings.train
        self.run_dir = ctx.home.run_dir(ctx.job_id)
        self.main = is_main()
        """Rank 0 (or the only process): it alone saves, evaluates and reports."""
        # Set by setup()
        self.config: dict[str, Any] = {}
        self.tok: Any = None
        self.rows: list[dict[str, Any]] = []
        self.model: Any = None
        self.batching: Batching | None = None
        self.collectors = Collectors()
        self.control: RunControl | None = None
        self.status: StatusWriter | None = None
        self.trainer: Trainer | None = None
        self.resume: Path | None = None
        # Set by train()
        self.training_loss: float | None = None
        self.seconds = 0.0
        self.base: dict[str, Any] | None = None
        """What the base pass before training did (daemon/training/base_pass.py); None if none
        ran."""

    def setup(self) -> None:
        """Everything up to the first step: config, tokenizer, data, model, batches, collectors,
        the Trainer."""
        from transformers import set_seed
        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        from daemon.chat.render import rendering_report
        from daemon.models.loading import load_tokenizer
        from daemon.runs.checkpoints import CHECKPOINT_REQUEST, newest_complete_checkpoint
        from daemon.training import faults
        from daemon.training.data import TrainedParts, resolve_max_length
        from daemon.training.packing import Batching
        from daemon.training.ranks import AgreeOnStop
        from daemon.training.run_control import RunControl
        from daemon.training.status_writer import StatusWriter

        ctx, cfg, run_dir = self.ctx, self.cfg, self.run_dir
        # 1. setup: run folder, resolved config, seeds
        ctx.checkpoints().mkdir(parents=True, exist_ok=True)
        # A resumed run trains with the number its first start chose for max_length "auto": keep
        # saying how it was chosen
        chosen_before = (read_json(run_dir / "config.json") or {}).get("max_length_auto")
        self.config = config = resolved_config(ctx)
        if self.main:
            write_json_atomic(run_dir / "config.json", config)
        set_seed(cfg.seed)
        # 2. data: the curated train split, tokenised with prompt tokens masked
        self.tok = tok = load_tokenizer(cfg.model, ctx.home.models, cfg.trust_remote_code)
        # train.max_length = "auto" becomes a number here (the curation's choice), before anything
        # tokenises; config.json keeps the number and how it was chosen
        auto_length = resolve_max_length(cfg, ctx.dataset_dir, tok)
        if auto_length is None and chosen_before and chosen_before.get("value") == cfg.max_length:
            auto_length = chosen_before
        if auto_length is not None:
            config["train"]["max_length"] = cfg.max_length
            config["max_length_auto"] = auto_length
        parts = TrainedParts(tok, cfg.loss_on, cfg.loss_on_reasoning)
        self.rows, train_set = load_data(ctx, tok, parts)
        # 3. model: the base model with LoRA adapters (only they train)
        self.model = model = build_model(ctx)
        # Batches: padded, or padding-free packed rows with train.packing
        # (daemon/training/packing.py)
        flash = str(getattr(model.config, "_attn_implementation", "")).startswith("flash")
        self.batching = batching = Batching(train_set, cfg, tok.pad_token_id, flash)
        # How tools, calls and reasoning reached the tokens (the model's template or the documented
        # fallback), and how the examples were batched
        config.update(
            rendering={
                **rendering_report(tok, self.rows),
                "by_layout": parts.report(),
                "trained": parts.summary(),
            },
            batching=batching.report,
        )
        if self.main:
            write_json_atomic(run_dir / "config.json", config)
        # 4. the Trainer and its callbacks. With several processes rank 0 alone reports (status,
        # metrics, evaluations); every rank trains and agrees on when to stop and save.
        args = training_args(ctx, config, model, batching.batch_size)
        self.control = control = RunControl(
            ctx.checkpoints(),
            watch_parent=ctx.watch_parent,
            request_file=run_dir / CHECKPOINT_REQUEST,
        )
        control.install_signal_handlers()  # from here a stop request ends in a checkpoint
        steps = total_steps(cfg, batching.items_per_epoch, batching.batch_size)
        self.collectors = build_collectors(
            cfg,
            ctx.home,
            ctx.job_id,
            ctx.dataset_dir,
            run_dir,
            tok,
            self.rows,
            steps,
            model,
            ctx.settings.alerts,
        )
        collectors = self.collectors.callbacks()
        if self.main:
            ctx.echo(self.collectors.story(ctx.echo))
            self.status = StatusWriter(
                ctx.home.training_status,
                run_dir / "metrics.jsonl",
                base={
                    "job_id": ctx.job_id,
                    "dataset": ctx.dataset_dir.name,
                    "model": cfg.model,
                    "run_dir": str(run_dir),
                    "world_size": world_size(),
                    **_rendering_status(config["rendering"]),
                    "max_length": _max_length_status(config),
                },
                collectors=collectors,
                echo=ctx.echo,
                job_path=ctx.home.job_status(ctx.job_id),
            )
        # Order matters: the measuring collectors update before the alerts read them, every rank
        # agrees on stopping after all of them, and the status is written last.
        callbacks = [
            *faults.from_env(ctx.dataset_dir.name),
            control,
            *collectors,
            AgreeOnStop(control),
            *([self.status] if self.status else []),
        ]
        self.trainer = trainer = batching.trainer_class(
            model=model,
            args=args,
            train_dataset=batching.dataset,
            data_collator=batching.collator,
            callbacks=callbacks,
            dynamics=self.collectors.dynamics,
        )
        for noisy in (
            PrinterCallback,
            ProgressCallback,
        ):  # the StatusWriter reports progress instead
            trainer.remove_callback(noisy)
        self.resume = newest_complete_checkpoint(ctx.checkpoints())
        if self.main and cfg.final_eval_examples and self.collectors.evolution is not None:
            # The final checks answer the snapshot's examples with the final model: the last
            # snapshot
            self.collectors.evolution.last_by_final_checks = True
            if self.collectors.budget is not None:
                self.collectors.budget.last_elsewhere.add("snapshot")

    def train(self) -> None:
        """The training loop, from the newest complete checkpoint if there is one; stops early when
        asked."""
        assert self.trainer is not None and self.control is not None, "setup() first"
        if self.resume and self.main:
            self.ctx.echo(f"resuming job {self.ctx.job_id} from {self.resume.name}")
        if self.main and not self.resume:
            self._base_pass()
        if self.status:
            self.status.set(
                state="training", resumed_from=self.resume.name if self.resume else None
            )
        started = time.time()
        try:
            result = self.trainer.train(
                resume_from_checkpoint=str(self.resume) if self.resume else None
            )
        finally:
            # on_train_end releases the handlers and closes the metrics file too, but not when
            # training raised
            self.control.release_signal_handlers()
            if self.status:
                self.status.close()
        self.seconds = time.time() - started
        self.training_loss = result.training_loss

    def _base_pass(self) -> None:
        """The step-0 snapshot and the base model's held-out figures, in one pass before
        training."""
        from daemon.training.base_pass import base_pass
        from daemon.training.data import read_split

        cfg, ctx = self.cfg, self.ctx
        test = read_split(ctx.dataset_dir / "test.jsonl")[: cfg.final_eval_examples]
        # as the training, the snapshots and the checks
        autocast = self.config["precision"]["autocast"]
        self.base = base_pass(
            self.model,
            self.tok,
            cfg,
            test,
            self.run_dir,
            self.collectors.evolution,
            self.collectors.budget,
            autocast,
        )
        if self.base is None:
            return
        said = (
            f"base model: {self.base['examples']} examples "
            f"answered in {self.base['seconds']:.1f} s"
        )
        if "error" in self.base:
            said += f" — failed ({self.base['error']}); the final checks answer the test split"
        elif "base_test_eval" in self.base:
            em = self.base["base_test_eval"]["exact_match"]
            said += f"; held-out test exact match {em:.0%} ({len(test)} examples)"
            if self.status:
                self.status.set(base_test_exact_match=em)
        self.ctx.echo(said)

    def finish(self) -> TrainOutcome:
        """What the run came to: interrupted, failed (a critical alert; raises TrainingError), or
        done with its adapters saved, the final checks run and result.json written."""
        from daemon.runs.checkpoints import newest_complete_checkpoint

        assert self.trainer is not None and self.control is not None, "setup() and train() first"
        ctx, cfg, run_dir, state = self.ctx, self.cfg, self.run_dir, self.trainer.state
        steps = state.global_step
        resumed_from = self.resume.name if self.resume else None
        stopped = self.control.stop_requested and steps < state.max_steps
        if not self.main:
            # Rank 0 saves, evaluates and reports what happened; this rank's part is done
            return TrainOutcome(interrupted=stopped, steps=steps)
        status, collectors = self.status, self.collectors
        assert (
            status is not None and collectors.alerts is not None and collectors.budget is not None
        )
        critical = collectors.alerts.critical
        if critical is not None:
            kept = newest_complete_checkpoint(ctx.checkpoints())
            status.set(state="failed", message=critical.message)
            status.write(state, force=True)
            raise TrainingError(
                f"{critical.id} (critical) at step {steps}: "
                f"{critical.message} — {critical.recommendation}"
                + (f"; last complete checkpoint kept: {kept}" if kept else "")
            )
        if stopped:
            status.set(
                state="interrupted",
                message=f"stopped at step {steps} ({self.control.stop_reason}); resumes on "
                "restart",
            )
            status.write(state, force=True)
            return TrainOutcome(interrupted=True, steps=steps, resumed_from=resumed_from)
        # 5. save: the final adapter in safetensors with the resolved config beside it; the best
        # checkpoint's adapter as adapter-best/ when the best step is not the last
        adapter_dir = save_adapter(self.model, self.tok, run_dir, self.config)
        best = collectors.best.report(steps) if collectors.best else None
        if best is not None:
            best_dir = (
                None
                if best["is_last"]
                else save_best_adapter(run_dir, ctx.checkpoints(), best, adapter_dir)
            )
            best["adapter_dir"] = str(best_dir or adapter_dir)
            self.config["best"] = best
            write_json_atomic(run_dir / "config.json", self.config)
        # 6. final check: does it answer its own training examples, and the held-out test split?
        metrics: dict[str, Any] = {
            "train_runtime_s": round(self.seconds, 2),
            "train_loss": self.training_loss,
        }
        metrics.update(self._diagnostics_seconds())
        if self.base is not None:
            metrics["base_pass"] = {k: v for k, v in self.base.items() if k != "base_test_eval"}
        if collectors.dynamics is not None:
            metrics.update(flag_suspects(ctx.home, cfg, ctx.dataset_dir.name, run_dir, ctx.job_id))
            dyn = metrics.get("dynamics")
            if dyn:
                ctx.echo(
                    f"per-example dynamics: {dyn['examples']} examples over epochs "
                    f"{dyn['epochs_used']}; suspected label errors: {dyn['suspect_label']}"
                    + (
                        f" — none reported: {dyn['suspects_note']}"
                        if dyn.get("suspects_note")
                        else ""
                    )
                )
        if cfg.final_eval_examples:
            status.set(state="evaluating")
            status.write(state, force=True)
            autocast = self.config["precision"]["autocast"]
            metrics.update(
                final_checks(
                    cfg,
                    ctx.dataset_dir,
                    run_dir,
                    self.model,
                    self.tok,
                    self.rows,
                    autocast,
                    collectors.evolution,
                    steps,
                )
            )
            if collectors.evolution is not None:  # the last snapshot, from the final checks' pass
                metrics["snapshots"] = collectors.evolution.taken
        final_loss = next(
            (row["loss"] for row in reversed(state.log_history) if "loss" in row), None
        )
        metrics.update(
            best=best, stopped_early=collectors.best.stopped_early if collectors.best else None
        )
        write_json_atomic(
            run_dir / "result.json",
            {
                "job_id": ctx.job_id,
                "steps": steps,
                "final_loss": final_loss,
                "adapter_dir": str(adapter_dir),
                **metrics,
                "resumed_from": resumed_from,
            },
        )
        evaluated = ("train_eval", "test_eval", "base_test_eval")
        exact_matches = {
            f"{key.removesuffix('_eval')}_exact_match": (metrics.get(key) or {}).get("exact_match")
            for key in evaluated
        }
        status.set(
            state="done",
            adapter_dir=str(adapter_dir),
            best=best,
            message=metrics["stopped_early"],
            **exact_matches,
            # how many examples each of those is measured on
            train_eval_examples=(metrics.get("train_eval") or {}).get("count"),
            test_examples=(metrics.get("test_eval") or {}).get("count"),
        )
        status.write(state, force=True)
        return TrainOutcome(
            interrupted=False,
            steps=steps,
            adapter_dir=adapter_dir,
            final_loss=final_loss,
            resumed_from=resumed_from,
            metrics=metrics,
        )

    def _diagnostics_seconds(self) -> dict[str, Any]:
        """Where the run's wall time went besides training steps (benchmarks/snapshot_cost.py reads
        these)."""
        found: dict[str, Any] = {}
        fixed_eval, evolution, budget = (
            self.collectors.fixed_eval,
            self.collectors.evolution,
            self.collectors.budget,
        )
        if fixed_eval is not None:
            found["fixed_eval_seconds"] = round(fixed_eval.seconds, 3)
            found["fixed_eval_decode_seconds"] = round(fixed_eval.decode_seconds, 3)
        if evolution is not None:
            found["snapshot_seconds"] = round(evolution.seconds, 3)
            found["snapshot_decode_seconds"] = round(evolution.decode_seconds, 3)
            found["snapshots"] = evolution.taken
        if budget is not None:
            found.update(budget.summary())
        return found

    def run(self) -> TrainOutcome:
        self.setup()
        self.train()
        return self.finish()
