"""The LoRA fine-tuning recipe, top to bottom: setup -> data -> model -> train -> save -> final check.

Runs inside the daemon's child process (or the foreground for `trainctl train`). Resumes from the newest complete
checkpoint in data/runs/<job>/checkpoints/. Returns what happened; the caller records it in the job queue.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daemon.atomic import write_json_atomic
from daemon.config import BUILTIN_TINY, Settings
from daemon.errors import TrainingError
from daemon.home import Home
from daemon.training.ranks import is_main, world_size


@dataclass
class TrainOutcome:
    interrupted: bool
    """True when a stop request ended training early; a checkpoint was saved and the job resumes later."""
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
    """The settings as trained with, defaults filled in: saved as config.json beside the adapter. `precision` says
    which device and dtypes `train.device`/`train.dtype` resolved to, and why."""
    from daemon.models.loading import default_lr, pick_device, pick_precision

    cfg = ctx.settings.train
    doc = ctx.settings.to_dict()
    if not doc["train"]["lr"]:
        doc["train"]["lr"] = default_lr(cfg.model)
    device = pick_device(cfg.device)
    doc["precision"] = {"device": device, **pick_precision(cfg.dtype, device).to_dict()}
    # Where it ran: every process of the job, and the devices they saw
    doc["placement"] = {**ctx.placement, "world_size": world_size(),
                        "devices": os.environ.get("CUDA_VISIBLE_DEVICES") if device == "cuda" else device}
    doc["job_id"] = ctx.job_id
    doc["dataset_dir"] = str(ctx.dataset_dir)
    return doc


def _setup(ctx: RunContext) -> tuple[Path, dict[str, Any]]:
    from transformers import set_seed

    run_dir = ctx.home.run_dir(ctx.job_id)
    ctx.checkpoints().mkdir(parents=True, exist_ok=True)
    config = resolved_config(ctx)
    if is_main():
        write_json_atomic(run_dir / "config.json", config)
    set_seed(ctx.settings.train.seed)
    return run_dir, config


def _data(ctx: RunContext, tok: Any) -> tuple[list[dict[str, Any]], list[dict[str, list[int]]]]:
    from daemon.training.data import encode_rows, read_split

    cfg = ctx.settings.train
    rows = read_split(ctx.dataset_dir / "train.jsonl")
    encoded = encode_rows(tok, rows, cfg.max_length, cfg.loss_on, cfg.loss_on_reasoning)
    if not encoded:
        raise TrainingError(f"{ctx.dataset_dir.name} has no training example with a trainable token")
    return rows, encoded


def _model(ctx: RunContext) -> Any:
    from peft import LoraConfig, get_peft_model

    from daemon.models.loading import load_model

    cfg = ctx.settings.train
    base = load_model(cfg.model, ctx.home.models, cfg.device, cfg.dtype, cfg.trust_remote_code, cfg.quantization)
    # Training passes no cache: transformers builds the packed (block-diagonal) mask only without one.
    base.config.use_cache = False
    targets: Any = "all-linear" if cfg.target_modules == ["all-linear"] else cfg.target_modules
    # builtin:tiny's output head is random: frozen, it caps the loss near 2.0 and leaves the model badly calibrated
    # even when every answer is right, so it is trained in full (50k parameters, saved with the adapter).
    head = ["lm_head"] if cfg.model == BUILTIN_TINY else None
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=targets, task_type="CAUSAL_LM", modules_to_save=head)
    return get_peft_model(base, lora)


def _training_args(ctx: RunContext, run_dir: Path, config: dict[str, Any], model: Any, batch_size: int) -> Any:
    """`batch_size`: dataset items per device per step (examples when padded, 1 micro-batch when packed)."""
    from transformers import TrainingArguments

    cfg = ctx.settings.train
    on_cpu = next(model.parameters()).device.type == "cpu"
    precision = config["precision"]
    # The Trainer's bf16/fp16 switch is autocast (accelerate's mixed precision): with fp32 weights that is fp32
    # master weights and bf16 matmuls; with bf16 weights the matmuls were bf16 anyway.
    half = precision["autocast"] or precision["weights"]
    lr = config["train"]["lr"]
    several = world_size() > 1
    if cfg.fsdp and (on_cpu or not several):
        raise TrainingError("train.fsdp shards the model across several GPUs — it needs CUDA and more than one "
                            "process (train.gpus_per_job > 1); turn it off to train with DDP or on one device")
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
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        eval_strategy="no",
        seed=cfg.seed,
        use_cpu=on_cpu,
        bf16=half == "bfloat16",
        fp16=half == "float16",
        gradient_checkpointing=cfg.gradient_checkpointing,
        # Non-reentrant: works with frozen base weights (LoRA) without forcing input gradients, and under DDP.
        gradient_checkpointing_kwargs={"use_reentrant": False} if cfg.gradient_checkpointing else None,
        use_liger_kernel=_liger(cfg, on_cpu),
        include_num_input_tokens_seen="non_padding",
        remove_unused_columns=False,
        dataloader_num_workers=0,
        disable_tqdm=True,
        report_to="none",
        # Several processes: LoRA leaves most parameters frozen, so DDP must not look for unused ones each step
        ddp_find_unused_parameters=False if several else None,
        ddp_backend="gloo" if several and on_cpu else None,
        fsdp="full_shard auto_wrap" if cfg.fsdp else "",
        fsdp_config={"use_orig_params": True} if cfg.fsdp else None,
    )


def _save_adapter(model: Any, tok: Any, run_dir: Path, config: dict[str, Any]) -> Path:
    """adapter/ = adapter_model.safetensors + adapter_config.json + tokenizer + the resolved config.
    Written to a temporary folder and renamed, so a kill never leaves half an adapter."""
    final = run_dir / "adapter"
    tmp = run_dir / ".adapter.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp), safe_serialization=True)
    tok.save_pretrained(str(tmp))
    write_json_atomic(tmp / "trainctl_config.json", config)
    return _publish(tmp, final)


def _publish(tmp: Path, final: Path) -> Path:
    """Put the finished folder `tmp` in place of `final` by a rename (a kill before it leaves the old one)."""
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    return final


def _save_best_adapter(run_dir: Path, ckpt_dir: Path, best: dict[str, Any], adapter_dir: Path) -> Path | None:
    """adapter-best/: the best checkpoint's adapter files beside the final adapter's tokenizer and config, written to
    a temporary folder and renamed. None when the best checkpoint is gone (it never is, unless removed by hand)."""
    ckpt = ckpt_dir / best["checkpoint"]
    if not (ckpt / "adapter_model.safetensors").exists():
        return None
    final, tmp = run_dir / "adapter-best", run_dir / ".adapter-best.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(adapter_dir, tmp)  # tokenizer, trainctl_config.json
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        shutil.copy2(ckpt / name, tmp / name)
    write_json_atomic(tmp / "trainctl_best.json", best)
    return _publish(tmp, final)


def exact_match(model: Any, tok: Any, rows: list[dict[str, Any]], max_new_tokens: int) -> dict[str, Any]:
    """Greedy answers to `rows`; share whose answer equals the golden one (daemon.chat.answers.same_answer)."""
    from daemon.chat.answers import same_answer
    from daemon.chat.messages import messages_of, question_and_answer, tools_of
    from daemon.chat.render import prompt_text
    from daemon.models.generation import generate_texts

    if not rows:
        return {"count": 0, "exact_match": None}
    msgs = [messages_of(r) for r in rows]
    prompts = [prompt_text(tok, m, tools_of(r)) for m, r in zip(msgs, rows)]
    golden = [question_and_answer(m)[1] for m in msgs]
    answers = generate_texts(model, tok, prompts, max_new_tokens=max_new_tokens)
    hits = [same_answer(a["text"], g) for a, g in zip(answers, golden)]
    return {"count": len(rows), "exact_match": round(sum(hits) / len(rows), 4),
            "misses": [{"line": r.get("line"), "golden": g, "model": a["text"]}
                       for r, g, a, h in zip(rows, golden, answers, hits) if not h][:10]}


def _final_checks(ctx: RunContext, model: Any, tok: Any, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Greedy exact match on training examples (did it learn them?) and on the held-out test split, tuned and with
    the adapter switched off (did it learn the task, and could the base model already do it?)."""
    from daemon.training.data import read_split

    cfg = ctx.settings.train
    out = {"train_eval": exact_match(model, tok, rows[: cfg.final_eval_examples], cfg.max_new_tokens)}
    test = read_split(ctx.dataset_dir / "test.jsonl")[: cfg.final_eval_examples]
    if test:
        out["test_eval"] = exact_match(model, tok, test, cfg.max_new_tokens)
        with model.disable_adapter():
            out["base_test_eval"] = exact_match(model, tok, test, cfg.max_new_tokens)
    return out


def _flag_suspects(ctx: RunContext, run_dir: Path) -> dict[str, Any]:
    """Per-example dynamics summed up; the suspected label errors flagged `suspect_label` (daemon/runs/dynamics.py)."""
    from daemon.errors import TrainctlError
    from daemon.runs.dynamics import load, suspect_flags
    from daemon.runs.flag_store import FlagStore

    try:
        run = load(run_dir)
    except TrainctlError:
        return {}
    flags = suspect_flags(run, ctx.dataset_dir.name)
    if flags:
        FlagStore(ctx.home.flagged_file, ctx.settings.train.flags_keep).add(flags)
    return {"dynamics": {"examples": len(run.examples), "classes": run.classes(), "suspect_label": len(flags)}}


def _liger(cfg: Any, on_cpu: bool) -> bool:
    """Liger kernels where asked for, installed, and on a CUDA GPU (they are Triton kernels)."""
    import importlib.util

    return cfg.liger and not on_cpu and importlib.util.find_spec("liger_kernel") is not None


def total_steps(cfg: Any, items_per_epoch: int, batch_size: int) -> int:
    """Optimizer steps of the run: `items_per_epoch` dataset items (examples, or packed micro-batches), `batch_size`
    of them per process per micro-step, on every process of the job."""
    per_epoch = math.ceil(items_per_epoch / (batch_size * cfg.grad_accum * world_size()))
    return cfg.max_steps if cfg.max_steps > 0 else max(1, math.ceil(per_epoch * cfg.epochs))


def eval_interval(cfg: Any, steps: int) -> int:
    """train.eval_steps resolved: 0 = about ten evaluations over the run (at least 10 steps apart), -1 = none."""
    if cfg.eval_steps < 0:
        return 0
    return cfg.eval_steps or max(10, steps // 10)


def _peak_flops(cfg: Any, model: Any) -> float | None:
    import torch

    from daemon.training.collectors.throughput import peak_flops

    # The tokens/s it is compared with count every process of the job: so does the peak
    if cfg.peak_tflops:
        return cfg.peak_tflops * 1e12 * world_size()
    p = next(model.parameters())
    if p.device.type != "cuda":
        return None
    one = peak_flops(torch.cuda.get_device_name(p.device), p.dtype in (torch.bfloat16, torch.float16))
    return one * world_size() if one else None


def _rendering_status(report: dict[str, Any]) -> dict[str, Any]:
    """The status file's `rendering` line, for datasets that have tools, calls or reasoning at all."""
    return {"rendering": report["summary"]} if any(report["rows_with"].values()) else {}


def _collectors(ctx: RunContext, tok: Any, rows: list[dict[str, Any]], run_dir: Path, steps: int,
                model: Any) -> dict[str, Any]:
    """Every collector, wired together; each is an ordinary TrainerCallback."""
    from daemon.models.loading import pick_precision
    from daemon.training.collectors.alerts import Alerts
    from daemon.training.collectors.diagnostics_budget import DiagnosticsBudget
    from daemon.training.collectors.fixed_eval import FixedEval
    from daemon.training.collectors.lora_monitor import LoRAMonitor
    from daemon.training.collectors.streaming import StreamingMetrics
    from daemon.training.collectors.throughput import ThroughputCollector
    from daemon.training.data import read_split

    cfg = ctx.settings.train
    if not is_main():
        # The other ranks of a job take part in gathering the dynamics; rank 0 alone measures, evaluates, reports
        return _dynamics(ctx, run_dir, rows)
    # First: the budget's clock starts before the step-0 snapshot that it charges
    budget = DiagnosticsBudget(cfg.diagnostics_budget)
    # Evaluations and snapshots run under the training's autocast precision
    autocast = pick_precision(cfg.dtype, next(model.parameters()).device.type).autocast
    throughput = ThroughputCollector(peak_flops=_peak_flops(cfg, model), n_params=model.num_parameters())
    streaming = StreamingMetrics(alpha=cfg.ema_alpha)
    lora = LoRAMonitor(every=cfg.monitor_every)
    out: dict[str, Any] = {"diagnostics_budget": budget, "throughput": throughput, "streaming": streaming,
                           "lora": lora}
    interval = eval_interval(cfg, steps)
    if interval and cfg.fixed_eval_examples:
        probe = read_split(ctx.dataset_dir / "val.jsonl")[: cfg.fixed_eval_examples] or rows[: cfg.fixed_eval_examples]
        out["fixed_eval"] = FixedEval(tok, probe, interval, cfg.max_length, cfg.max_new_tokens, cfg.loss_on,
                                      throughput=throughput, budget=budget, autocast=autocast)
    if "fixed_eval" in out:
        from daemon.runs.flag_store import FlagStore
        from daemon.training.collectors.flagged import FlaggedExamples

        out["flagged"] = FlaggedExamples(FlagStore(ctx.home.flagged_file, cfg.flags_keep), out["fixed_eval"],
                                         file=ctx.dataset_dir.name, loss_threshold=cfg.flag_loss_threshold)
    if cfg.evolution_examples:
        from daemon.training.collectors.evolution_snapshots import EvolutionSnapshots

        out["evolution"] = EvolutionSnapshots(tok, rows[: cfg.evolution_examples],
                                              ctx.home.evolution_dir(ctx.dataset_dir.name), ctx.dataset_dir.name,
                                              cfg.max_length, cfg.max_new_tokens, cfg.loss_on, throughput=throughput,
                                              budget=budget, autocast=autocast)
    out.update(_dynamics(ctx, run_dir, rows))
    if cfg.best_metric == "loss" or "fixed_eval" in out:
        from daemon.training.collectors.best_checkpoint import BestCheckpoint

        out["best"] = BestCheckpoint(out.get("fixed_eval"), streaming, cfg.best_metric, cfg.early_stop_patience)
    out["alerts"] = Alerts(streaming, lora, out.get("fixed_eval"), log_path=run_dir / "alerts.jsonl",
                           best=out.get("best"), regression_threshold=cfg.regression_threshold, job_id=ctx.job_id)
    return out


def _dynamics(ctx: RunContext, run_dir: Path, rows: list[dict[str, Any]]) -> dict[str, Any]:
    if not ctx.settings.train.dynamics:
        return {}
    from daemon.training.dynamics_recorder import DynamicsRecorder

    return {"dynamics": DynamicsRecorder(run_dir, ctx.dataset_dir.name, ctx.dataset_dir / "train.jsonl", len(rows))}


def train(ctx: RunContext) -> TrainOutcome:
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from daemon.chat.render import rendering_report
    from daemon.models.loading import load_tokenizer
    from daemon.runs.checkpoints import CHECKPOINT_REQUEST, newest_complete_checkpoint
    from daemon.training import faults
    from daemon.training.packing import Batching
    from daemon.training.ranks import AgreeOnStop
    from daemon.training.run_control import RunControl
    from daemon.training.status_writer import StatusWriter

    cfg = ctx.settings.train
    # 1. setup: run folder, resolved config, seeds
    run_dir, config = _setup(ctx)
    # 2. data: the curated train split, tokenised with prompt tokens masked
    tok = load_tokenizer(cfg.model, ctx.home.models, cfg.trust_remote_code)
    rows, train_set = _data(ctx, tok)
    # 3. model: the base model with LoRA adapters (only they train)
    model = _model(ctx)
    # Batches: padded, or padding-free packed rows with train.packing (daemon/training/packing.py)
    flash = str(getattr(model.config, "_attn_implementation", "")).startswith("flash")
    batching = Batching(train_set, cfg, tok.pad_token_id, flash)
    # How tools, calls and reasoning reached the tokens (the model's template or the documented fallback), and how
    # the examples were batched
    config.update(rendering=rendering_report(tok, rows), batching=batching.report)
    write_json_atomic(run_dir / "config.json", config)
    # 4. train: Trainer + collectors; resume from the newest complete checkpoint. With several processes rank 0
    # alone reports (status, metrics, evaluations); every rank trains and agrees on when to stop and save.
    main = is_main()
    args = _training_args(ctx, run_dir, config, model, batching.batch_size)
    control = RunControl(ctx.checkpoints(), watch_parent=ctx.watch_parent,
                         request_file=run_dir / CHECKPOINT_REQUEST)
    control.install_signal_handlers()
    collectors = _collectors(ctx, tok, rows, run_dir,
                             total_steps(cfg, batching.items_per_epoch, batching.batch_size), model)
    status = StatusWriter(ctx.home.training_status, run_dir / "metrics.jsonl",
                          base={"job_id": ctx.job_id, "dataset": ctx.dataset_dir.name, "model": cfg.model,
                                "run_dir": str(run_dir), "world_size": world_size(),
                                **_rendering_status(config["rendering"])},
                          collectors=list(collectors.values()), echo=ctx.echo,
                          job_path=ctx.home.job_status(ctx.job_id)) if main else None
    # Order matters: the measuring collectors update before the alerts read them, every rank agrees on stopping
    # after all of them, and the status is written last.
    callbacks = [*faults.from_env(ctx.dataset_dir.name), control, *collectors.values(), AgreeOnStop(control),
                 *([status] if status else [])]
    trainer = batching.trainer_class(model=model, args=args, train_dataset=batching.dataset,
                                     data_collator=batching.collator, callbacks=callbacks,
                                     dynamics=collectors.get("dynamics"))
    for noisy in (PrinterCallback, ProgressCallback):  # the StatusWriter reports progress instead
        trainer.remove_callback(noisy)
    resume = newest_complete_checkpoint(ctx.checkpoints())
    if resume and main:
        ctx.echo(f"resuming job {ctx.job_id} from {resume.name}")
    if status:
        status.set(state="training", resumed_from=resume.name if resume else None)
    t0 = time.time()
    try:
        result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    finally:
        control.release_signal_handlers()  # on_train_end does it too, but not when training raised
        if status:
            status.close()  # the metrics file (on_train_end closes it too, but not when training raised)
    steps = trainer.state.global_step
    if not main:
        # Rank 0 saves, evaluates and reports what happened; this rank's part is done
        return TrainOutcome(interrupted=control.stop_requested and steps < trainer.state.max_steps, steps=steps)
    assert status is not None
    alerts = collectors["alerts"]
    if alerts.critical is not None:
        kept = newest_complete_checkpoint(ctx.checkpoints())
        status.set(state="failed", message=alerts.critical.message)
        status.write(trainer.state, force=True)
        raise TrainingError(f"{alerts.critical.id} (critical) at step {steps}: {alerts.critical.message} — "
                            f"{alerts.critical.recommendation}"
                            + (f"; last complete checkpoint kept: {kept}" if kept else ""))
    if control.stop_requested and steps < trainer.state.max_steps:
        status.set(state="interrupted", message=f"stopped at step {steps} ({control.stop_reason}); resumes on restart")
        status.write(trainer.state, force=True)
        return TrainOutcome(interrupted=True, steps=steps, resumed_from=resume.name if resume else None)
    # 5. save: the final adapter in safetensors with the resolved config beside it; the best checkpoint's adapter as
    # adapter-best/ when the best step is not the last
    adapter_dir = _save_adapter(model, tok, run_dir, config)
    best = collectors["best"].report(steps) if "best" in collectors else None
    if best is not None:
        best_dir = None if best["is_last"] else _save_best_adapter(run_dir, ctx.checkpoints(), best, adapter_dir)
        best["adapter_dir"] = str(best_dir or adapter_dir)
        config["best"] = best
        write_json_atomic(run_dir / "config.json", config)
    stopped_early = collectors["best"].stopped_early if "best" in collectors else None
    # 6. final check: does it answer its own training examples? (the demo's "it learns" figure)
    metrics: dict[str, Any] = {"train_runtime_s": round(time.time() - t0, 2), "train_loss": result.training_loss}
    # Where the run's wall time went besides training steps (benchmarks/snapshot_cost.py reads these).
    if "fixed_eval" in collectors:
        metrics["fixed_eval_seconds"] = round(collectors["fixed_eval"].seconds, 3)
        metrics["fixed_eval_decode_seconds"] = round(collectors["fixed_eval"].decode_seconds, 3)
    if "evolution" in collectors:
        metrics["snapshot_seconds"] = round(collectors["evolution"].seconds, 3)
        metrics["snapshot_decode_seconds"] = round(collectors["evolution"].decode_seconds, 3)
        metrics["snapshots"] = collectors["evolution"].taken
    metrics.update(collectors["diagnostics_budget"].summary())
    if "dynamics" in collectors:
        metrics.update(_flag_suspects(ctx, run_dir))
    if cfg.final_eval_examples:
        status.set(state="evaluating")
        status.write(trainer.state, force=True)
        metrics.update(_final_checks(ctx, model, tok, rows))
    final_loss = next((h["loss"] for h in reversed(trainer.state.log_history) if "loss" in h), None)
    metrics.update(best=best, stopped_early=stopped_early)
    write_json_atomic(run_dir / "result.json", {"job_id": ctx.job_id, "steps": steps, "final_loss": final_loss,
                                                "adapter_dir": str(adapter_dir), **metrics,
                                                "resumed_from": resume.name if resume else None})
    status.set(state="done", adapter_dir=str(adapter_dir), best=best, message=stopped_early,
               **{f"{k.removesuffix('_eval')}_exact_match": (metrics.get(k) or {}).get("exact_match")
                  for k in ("train_eval", "test_eval", "base_test_eval")})
    status.write(trainer.state, force=True)
    return TrainOutcome(interrupted=False, steps=steps, adapter_dir=adapter_dir, final_loss=final_loss,
                        resumed_from=resume.name if resume else None, metrics=metrics)


