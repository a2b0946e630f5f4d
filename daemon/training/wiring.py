"""Which collectors a run gets, how they are wired to each other, and in which order the Trainer
calls them.

Every collector is an ordinary `TrainerCallback` (daemon/training/collectors/); the few that read
another's state get it here, by its type, and nowhere else. Rank 0 of a job runs them all; the
other ranks only gather the per-example dynamics."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from daemon.config import AlertsConfig, TrainConfig
from daemon.home import Home
from daemon.training.ranks import is_main, world_size

if TYPE_CHECKING:
    from daemon.training.collectors import Collector
    from daemon.training.collectors.alerts import Alerts
    from daemon.training.collectors.best_checkpoint import BestCheckpoint
    from daemon.training.collectors.diagnostics_budget import DiagnosticsBudget
    from daemon.training.collectors.evolution_snapshots import EvolutionSnapshots
    from daemon.training.collectors.fixed_eval import FixedEval
    from daemon.training.collectors.flagged import FlaggedExamples
    from daemon.training.collectors.lora_monitor import LoRAMonitor
    from daemon.training.collectors.streaming import StreamingMetrics
    from daemon.training.collectors.throughput import ThroughputCollector
    from daemon.training.dynamics_recorder import DynamicsRecorder


@dataclass
class Collectors:
    """A run's collectors, in the order the Trainer calls them; None where switched off or not on
    this rank.

    The measuring ones update before the alerts read them: the budget first (its clock starts
    before the step-0 snapshot it charges), the alerts last."""

    budget: DiagnosticsBudget | None = None
    throughput: ThroughputCollector | None = None
    streaming: StreamingMetrics | None = None
    lora: LoRAMonitor | None = None
    fixed_eval: FixedEval | None = None
    flagged: FlaggedExamples | None = None
    evolution: EvolutionSnapshots | None = None
    dynamics: DynamicsRecorder | None = None
    best: BestCheckpoint | None = None
    alerts: Alerts | None = None

    def callbacks(self) -> list[Collector]:
        """The collectors there are, in calling order."""
        present = (getattr(self, spec.name) for spec in fields(self))
        return [collector for collector in present if collector is not None]

    def story(self, echo: Any) -> str:
        """Hand every collector the job log's `echo` (their `say` lines) and describe them in one
        line."""
        for collector in self.callbacks():
            collector.echo = echo
        parts = [
            c.name + (f" ({about})" if (about := c.about()) else "") for c in self.callbacks()
        ]
        return "collectors started: " + ", ".join(parts)


def eval_interval(cfg: TrainConfig, steps: int) -> int:
    """train.eval_steps resolved: 0 = about ten evaluations over the run (at least 10 steps apart),
    -1 = none."""
    if cfg.eval_steps < 0:
        return 0
    return cfg.eval_steps or max(10, steps // 10)


def peak_flops_of(cfg: TrainConfig, model: Any) -> float | None:
    """The job's peak FLOP/s for MFU: train.peak_tflops, else a known GPU's, times the processes;
    None on CPU."""
    import torch

    from daemon.training.collectors.throughput import peak_flops

    # The tokens/s it is compared with count every process of the job: so does the peak
    if cfg.peak_tflops:
        return cfg.peak_tflops * 1e12 * world_size()
    first = next(model.parameters())
    if first.device.type != "cuda":
        return None
    one = peak_flops(
        torch.cuda.get_device_name(first.device), first.dtype in (torch.bfloat16, torch.float16)
    )
    return one * world_size() if one else None


def dynamics_recorder(
    cfg: TrainConfig, run_dir: Path, dataset_dir: Path, examples: int
) -> DynamicsRecorder | None:
    if not cfg.dynamics:
        return None
    from daemon.training.dynamics_recorder import DynamicsRecorder

    return DynamicsRecorder(run_dir, dataset_dir.name, dataset_dir / "train.jsonl", examples)


def build_collectors(
    cfg: TrainConfig,
    home: Home,
    job_id: int,
    dataset_dir: Path,
    run_dir: Path,
    tokenizer: Any,
    rows: list[dict[str, Any]],
    steps: int,
    model: Any,
    limits: AlertsConfig | None = None,
) -> Collectors:
    """Every collector `cfg` asks for, wired together (`rows`: the train split; `steps`: the run's
    length; `limits`: the alerts' thresholds, `[alerts]`)."""
    from daemon.models.loading import pick_precision
    from daemon.training.collectors.alerts import Alerts
    from daemon.training.collectors.diagnostics_budget import DiagnosticsBudget
    from daemon.training.collectors.lora_monitor import LoRAMonitor
    from daemon.training.collectors.streaming import StreamingMetrics
    from daemon.training.collectors.throughput import ThroughputCollector
    from daemon.training.data import read_split

    if not is_main():
        # The other ranks of a job take part in gathering the dynamics; rank 0 alone measures,
        # evaluates, reports
        return Collectors(dynamics=dynamics_recorder(cfg, run_dir, dataset_dir, len(rows)))
    budget = DiagnosticsBudget(cfg.diagnostics_budget)
    throughput = ThroughputCollector(
        peak_flops=peak_flops_of(cfg, model), n_params=model.num_parameters()
    )
    limits = limits or AlertsConfig()
    streaming = StreamingMetrics(alpha=cfg.ema_alpha, trend_window=limits.plateau_steps)
    lora = LoRAMonitor(
        every=cfg.monitor_every,
        exploding=limits.exploding_grad_norm,
        vanishing=limits.vanishing_grad_norm,
        imbalance=limits.imbalance_ratio,
    )
    found = Collectors(budget=budget, throughput=throughput, streaming=streaming, lora=lora)
    # Evaluations and snapshots run under the training's autocast precision
    autocast = pick_precision(cfg.dtype, next(model.parameters()).device.type).autocast
    interval = eval_interval(cfg, steps)
    if interval and cfg.fixed_eval_examples:
        from daemon.runs.flag_store import FlagStore
        from daemon.training.collectors.fixed_eval import FixedEval
        from daemon.training.collectors.flagged import FlaggedExamples

        probe = (
            read_split(dataset_dir / "val.jsonl")[: cfg.fixed_eval_examples]
            or rows[: cfg.fixed_eval_examples]
        )
        found.fixed_eval = FixedEval(
            tokenizer,
            probe,
            interval,
            cfg.resolved_max_length,
            cfg.max_new_tokens,
            cfg.loss_on,
            throughput=throughput,
            budget=budget,
            autocast=autocast,
        )
        found.flagged = FlaggedExamples(
            FlagStore(home.flagged_file, cfg.flags_keep),
            found.fixed_eval,
            file=dataset_dir.name,
            loss_threshold=cfg.flag_loss_threshold,
            job_id=job_id,
        )
    if cfg.evolution_examples:
        from daemon.training.collectors.evolution_snapshots import EvolutionSnapshots

        found.evolution = EvolutionSnapshots(
            tokenizer,
            rows[: cfg.evolution_examples],
            home.evolution_dir(dataset_dir.name),
            dataset_dir.name,
            cfg.resolved_max_length,
            cfg.max_new_tokens,
            cfg.loss_on,
            throughput=throughput,
            budget=budget,
            autocast=autocast,
        )
    found.dynamics = dynamics_recorder(cfg, run_dir, dataset_dir, len(rows))
    if cfg.best_metric == "loss" or found.fixed_eval is not None:
        from daemon.training.collectors.best_checkpoint import BestCheckpoint

        found.best = BestCheckpoint(
            found.fixed_eval, streaming, cfg.best_metric, cfg.early_stop_patience
        )
    found.alerts = Alerts(
        streaming,
        lora,
        found.fixed_eval,
        log_path=run_dir / "alerts.jsonl",
        best=found.best,
        regression_threshold=cfg.regression_threshold,
        job_id=job_id,
        limits=limits,
    )
    return found
