"""Generation backends behind one small interface: pull requests, yield each completion the moment it is done.

- `HfBackend`: transformers `generate`, `batch_size` requests at a time, on CPU or GPU. A batch that raises is
  retried one request at a time, so one bad prompt becomes one error line, not a lost batch.
- `VllmBackend`: vLLM's engine loop. Requests are added with `add_request` until `max_in_flight` are in the
  engine, `step()` is called, every finished output is yielded at once and the engine is topped up again: the
  engine stays full and a result is written as soon as it ends (one `generate` over everything would write
  nothing until the whole set is done). Tests run it against a stand-in engine; `tests/test_vllm_contract.py`
  holds that stand-in and this module against vLLM's real classes where vllm is installed.

Both take token ids (the chat template is applied once, by the runner, with the model's tokenizer) and a seed per
request derived from the run seed and custom_id, so a resumed request samples the same.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol


@dataclass
class Request:
    custom_id: str
    prompt_ids: list[int]
    max_tokens: int
    temperature: float
    top_p: float
    seed: int


@dataclass
class Completion:
    custom_id: str
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    """`stop` (end of sequence) or `length` (max_tokens reached)."""
    started_at: float
    finished_at: float
    error: str | None = None
    """`generation_failed: ...` when the backend raised for this request; text is empty then."""


class Backend(Protocol):
    name: str

    def run(self, requests: Iterable[Request]) -> Iterator[Completion]:
        """Pull requests as capacity frees up; yield each completion as soon as it is finished. When `requests` is
        exhausted, finish what is in flight and return."""
        ...


class HfBackend:
    name = "hf"

    def __init__(self, model: Any, tok: Any, batch_size: int):
        self.model, self.tok, self.batch_size = model, tok, batch_size

    def _generate(self, batch: list[Request]) -> list[dict[str, Any]]:
        from daemon.generation import RowSampling, generate_batch

        rows = [RowSampling(r.max_tokens, r.temperature, r.top_p, r.seed) for r in batch]
        return generate_batch(self.model, self.tok, [r.prompt_ids for r in batch], rows)

    def run(self, requests: Iterable[Request]) -> Iterator[Completion]:
        it = iter(requests)
        while True:
            batch: list[Request] = []
            for r in it:
                batch.append(r)
                if len(batch) == self.batch_size:
                    break
            if not batch:
                return
            started = time.time()
            try:
                outs: list[dict[str, Any] | Exception] = list(self._generate(batch))
            except Exception:  # noqa: BLE001 - isolate the request that fails, keep the others
                outs = []
                for r in batch:
                    try:
                        outs.append(self._generate([r])[0])
                    except Exception as exc:  # noqa: BLE001
                        outs.append(exc)
            finished = time.time()
            for r, out in zip(batch, outs):
                if isinstance(out, Exception):
                    yield Completion(r.custom_id, "", len(r.prompt_ids), 0, "error", started, finished,
                                     error=f"generation_failed: {type(out).__name__}: {out}")
                else:
                    yield Completion(r.custom_id, out["text"], out["prompt_tokens"], out["completion_tokens"],
                                     out["finish_reason"], started, finished)


def load_hf_backend(model: str, models_dir: Path, adapter: Path | None, tok: Any, batch_size: int) -> HfBackend:
    """`model` as the user named it (builtin:tiny, hub id, folder); on a GPU when there is one."""
    from transformers.utils import logging as hf_logging

    from daemon.models import load_adapter, load_model

    hf_logging.disable_progress_bar()  # the bench draws its own progress bar
    net = load_model(model, models_dir)
    if adapter is not None:
        # Merged once: generation then costs what the base model costs (no extra LoRA matmuls per token).
        net = load_adapter(net, adapter).merge_and_unload()
    net.eval()
    return HfBackend(net, tok, batch_size)


class VllmBackend:
    name = "vllm"

    def __init__(self, engine: Any, max_in_flight: int, sampling_params: Callable[..., Any],
                 lora_request: Any = None):
        """`engine` follows vLLM's LLMEngine contract (add_request / step / has_unfinished_requests);
        `sampling_params` builds a vllm.SamplingParams from keyword arguments."""
        self.engine, self.max_in_flight = engine, max_in_flight
        self.sampling_params, self.lora_request = sampling_params, lora_request

    def _add(self, r: Request) -> None:
        params = self.sampling_params(max_tokens=r.max_tokens, temperature=r.temperature, top_p=r.top_p,
                                      seed=r.seed)
        self.engine.add_request(r.custom_id, {"prompt_token_ids": r.prompt_ids}, params,
                                lora_request=self.lora_request)

    def run(self, requests: Iterable[Request]) -> Iterator[Completion]:
        it = iter(requests)
        started: dict[str, float] = {}
        exhausted = False
        while True:
            # Keep the engine full: its scheduler batches whatever is waiting at every step.
            while not exhausted and len(started) < self.max_in_flight:
                r = next(it, None)
                if r is None:
                    exhausted = True
                    break
                started[r.custom_id] = time.time()
                try:
                    self._add(r)
                except Exception as exc:  # noqa: BLE001 - a request the engine refuses is one error line
                    t = started.pop(r.custom_id)
                    yield Completion(r.custom_id, "", len(r.prompt_ids), 0, "error", t, time.time(),
                                     error=f"generation_failed: {type(exc).__name__}: {exc}")
            if not self.engine.has_unfinished_requests():
                # Anything still counted as started was dropped by the engine: one error line each, not a hang.
                for cid, t0 in started.items():
                    yield Completion(cid, "", 0, 0, "error", t0, time.time(),
                                     error="generation_failed: the engine dropped the request")
                started.clear()
                if exhausted:
                    return
                continue
            for out in self.engine.step():
                if not out.finished:
                    continue
                first = out.outputs[0]
                t0 = started.pop(out.request_id, time.time())
                yield Completion(out.request_id, first.text, len(out.prompt_token_ids or []), len(first.token_ids),
                                 str(first.finish_reason or "stop"), t0, time.time())


def engine_args(model_path: str, adapter: Path | None, cfg: Any, trust_remote_code: bool = False) -> dict[str, Any]:
    """vLLM `EngineArgs` for one engine: the model, the LoRA adapter, how many requests it schedules at once, and
    how it splits the model over GPUs (`bench.tensor_parallel_size`, `pipeline_parallel_size`)."""
    lora_rank = 16
    if adapter is not None:
        import json

        lora_rank = int(json.loads((adapter / "adapter_config.json").read_text()).get("r", 16))
    return {"model": model_path, "seed": cfg.seed, "enable_lora": adapter is not None, "max_lora_rank": lora_rank,
            "max_num_seqs": cfg.max_in_flight, "trust_remote_code": trust_remote_code,
            "tensor_parallel_size": cfg.tensor_parallel_size, "pipeline_parallel_size": cfg.pipeline_parallel_size}


def load_vllm_backend(model_path: str, adapter: Path | None, cfg: Any, trust_remote_code: bool = False) -> VllmBackend:
    try:
        from vllm import EngineArgs, LLMEngine, SamplingParams
        from vllm.lora.request import LoRARequest
    except ImportError as exc:
        from daemon.errors import BenchError

        raise BenchError(f"the vllm backend needs vLLM ({exc}) — `pip install 'trainctl[vllm]'` on a CUDA machine, "
                         "or use --backend hf") from exc
    engine = LLMEngine.from_engine_args(EngineArgs(**engine_args(model_path, adapter, cfg, trust_remote_code)))
    lora = LoRARequest("adapter", 1, str(adapter)) if adapter is not None else None
    return VllmBackend(engine, cfg.max_in_flight, SamplingParams, lora)
