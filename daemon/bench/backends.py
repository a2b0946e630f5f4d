"""Generation backends behind one small interface: pull requests, yield each completion the moment
it is done.

- `HfBackend`: transformers `generate`, `batch_size` requests at a time, on CPU or GPU. A batch
  that raises is retried one request at a time, so one bad prompt becomes one error line, not a
  lost batch.
- `VllmBackend`: vLLM's engine loop. Requests are added with `add_request` until `max_in_flight`
  are in the engine, `step()` is called, every finished output is yielded at once and the engine is
  topped up again: the engine stays full and a result is written as soon as it ends (one `generate`
  over everything would write nothing until the whole set is done). A LoRA adapter rides on each
  request (`LoRARequest`), so one engine answers for the base model and any number of adapters.

A loaded model (`HfModel`, `VllmModel`) is the expensive part: it is built once and hands out a
backend per adapter (`backend(adapter)`), which is how `bench sweep` judges every checkpoint of a
job in one engine.

Both take token ids (the chat template is applied once, by the runner, with the model's tokenizer)
and a seed per request derived from the run seed and custom_id, so a resumed request samples the
same.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from daemon.config import BenchConfig


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
    """`hf` or `vllm`: recorded with each run."""
    version: str
    """The engine's version (transformers' or vLLM's), recorded with each run."""

    def run(self, requests: Iterable[Request]) -> Iterator[Completion]:
        """Pull requests as capacity frees up; yield each completion as soon as it is finished.
        When `requests` is exhausted, finish what is in flight and return."""
        ...


class HfBackend:
    name = "hf"

    def __init__(
        self,
        model: Any,
        tok: Any,
        batch_size: int,
        context: Callable[[], AbstractContextManager[Any]] = nullcontext,
    ):
        """`context`: entered around each generate call (peft's `disable_adapter` answers as the
        base model)."""
        import transformers

        self.model, self.tok, self.batch_size, self.context = model, tok, batch_size, context
        self.version = transformers.__version__

    def _generate(self, batch: list[Request]) -> list[dict[str, Any]]:
        from daemon.models.generation import RowSampling, generate_batch

        rows = [RowSampling(r.max_tokens, r.temperature, r.top_p, r.seed) for r in batch]
        with self.context():
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
                    yield Completion(
                        r.custom_id,
                        "",
                        len(r.prompt_ids),
                        0,
                        "error",
                        started,
                        finished,
                        error=f"generation_failed: {type(out).__name__}: {out}",
                    )
                else:
                    yield Completion(
                        r.custom_id,
                        out["text"],
                        out["prompt_tokens"],
                        out["completion_tokens"],
                        out["finish_reason"],
                        started,
                        finished,
                    )


class HfModel:
    """One transformers model in memory. With one adapter it is merged in once (generation then
    costs what the base model costs); with several (a sweep) each is loaded as a named peft adapter
    and switched per run, and the base model answers with the adapters disabled."""

    name = "hf"

    def __init__(
        self, model: str, models_dir: Path, tok: Any, batch_size: int, adapters: list[Path]
    ):
        """`model` as the user named it (builtin:tiny, hub id, folder); on a GPU when there is
        one."""
        from transformers.utils import logging as hf_logging

        from daemon.models.loading import load_adapter, load_model

        hf_logging.disable_progress_bar()  # the bench draws its own progress bar
        self.tok, self.batch_size = tok, batch_size
        self.net = load_model(model, models_dir)
        self.merged: Path | None = None
        self.peft: Any = None
        self.names: dict[str, str] = {}
        if len(adapters) == 1:
            self.net, self.merged = (
                load_adapter(self.net, adapters[0]).merge_and_unload(),
                adapters[0],
            )
        self.net.eval()

    def close(self) -> None:
        pass

    def backend(self, adapter: Path | None) -> HfBackend:
        if self.merged is not None:
            if adapter != self.merged:
                raise ValueError(
                    f"this model was loaded with {self.merged} merged in, not {adapter}"
                )
            return HfBackend(self.net, self.tok, self.batch_size)
        if adapter is None:
            context = self.peft.disable_adapter if self.peft is not None else nullcontext
            return HfBackend(self.peft or self.net, self.tok, self.batch_size, context)
        name = self.names.setdefault(str(adapter), f"adapter-{len(self.names) + 1}")
        if self.peft is None:
            from peft import PeftModel

            from daemon.models.library_names import quiet_peft_wrap

            with quiet_peft_wrap():
                self.peft = PeftModel.from_pretrained(
                    self.net, str(adapter), adapter_name=name
                ).eval()
        elif name not in self.peft.peft_config:
            self.peft.load_adapter(str(adapter), adapter_name=name)
        self.peft.set_adapter(name)
        return HfBackend(self.peft, self.tok, self.batch_size)


class VllmBackend:
    name = "vllm"

    def __init__(
        self,
        engine: Any,
        max_in_flight: int,
        sampling_params: Callable[..., Any],
        lora_request: Any = None,
        version: str = "",
    ):
        """`engine` follows vLLM's LLMEngine contract (add_request / step /
        has_unfinished_requests); `sampling_params` builds a vllm.SamplingParams from keyword
        arguments."""
        self.engine, self.max_in_flight = engine, max_in_flight
        self.sampling_params, self.lora_request = sampling_params, lora_request
        self.version = version

    def _add(self, r: Request) -> None:
        params = self.sampling_params(
            max_tokens=r.max_tokens, temperature=r.temperature, top_p=r.top_p, seed=r.seed
        )
        self.engine.add_request(
            r.custom_id, {"prompt_token_ids": r.prompt_ids}, params, lora_request=self.lora_request
        )

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
                # any exception: a request the engine refuses is one error line
                except Exception as exc:  # noqa: BLE001
                    t = started.pop(r.custom_id)
                    yield Completion(
                        r.custom_id,
                        "",
                        len(r.prompt_ids),
                        0,
                        "error",
                        t,
                        time.time(),
                        error=f"generation_failed: {type(exc).__name__}: {exc}",
                    )
            if not self.engine.has_unfinished_requests():
                # Anything still counted as started was dropped by the engine: one error line each,
                # not a hang.
                for cid, t0 in started.items():
                    yield Completion(
                        cid,
                        "",
                        0,
                        0,
                        "error",
                        t0,
                        time.time(),
                        error="generation_failed: the engine dropped the request",
                    )
                started.clear()
                if exhausted:
                    return
                continue
            for out in self.engine.step():
                if not out.finished:
                    continue
                first = out.outputs[0]
                t0 = started.pop(out.request_id, time.time())
                yield Completion(
                    out.request_id,
                    first.text,
                    len(out.prompt_token_ids or []),
                    len(first.token_ids),
                    str(first.finish_reason or "stop"),
                    t0,
                    time.time(),
                )


class VllmModel:
    """One vLLM engine for a model; each adapter is a `LoRARequest` on the requests (loaded by the
    engine on first use), so the base model and every adapter share the engine."""

    name = "vllm"

    def __init__(
        self,
        model_path: str,
        cfg: BenchConfig,
        adapters: list[Path],
        max_model_len: int | None,
        trust_remote_code: bool = False,
    ):
        import os

        # vLLM logs every engine detail at INFO; the bench draws its own progress and says what
        # matters.
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
        import torch
        from vllm import EngineArgs, LLMEngine, SamplingParams
        from vllm.lora.request import LoRARequest

        from daemon.bench.engines import cpu_engine_env, engine_args, lora_rank_of, vllm_version

        on_gpu = torch.cuda.is_available()
        if not on_gpu:
            cpu_engine_env()
        args = engine_args(
            model_path,
            cfg,
            lora_rank=lora_rank_of(adapters),
            max_model_len=max_model_len,
            on_gpu=on_gpu,
            trust_remote_code=trust_remote_code,
        )
        self.args = args
        from daemon.parent_death import spawning_engine_children

        # a kill -9 of the bench must not leave the engine running
        with spawning_engine_children():
            self.engine = LLMEngine.from_engine_args(EngineArgs(**args))
        self.cfg, self.sampling_params, self.lora_request = cfg, SamplingParams, LoRARequest
        self.version = vllm_version() or ""
        self.ids: dict[str, int] = {}

    def close(self) -> None:
        """Stop the engine's processes now (left to the interpreter's exit, they report a
        crash)."""
        core = getattr(self.engine, "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()

    def backend(self, adapter: Path | None) -> VllmBackend:
        lora = None
        if adapter is not None:
            if not self.args["enable_lora"]:
                raise ValueError(
                    f"this engine was built without LoRA, so it cannot answer with {adapter}"
                )
            lora_id = self.ids.setdefault(str(adapter), len(self.ids) + 1)
            lora = self.lora_request(f"adapter-{lora_id}", lora_id, str(adapter))
        return VllmBackend(
            self.engine, self.cfg.max_in_flight, self.sampling_params, lora, self.version
        )
