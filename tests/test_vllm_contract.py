"""Our vllm backend and the stand-in engine the fault tests use, held against vLLM's real classes
and signatures.

The stand-in is kept only where a fault must be injected inside the engine (a refused request, a
dropped one); generation itself is tested on the real engine in tests/test_vllm_engine.py. This
checks the contract: the calls our backend makes bind to the real `LLMEngine` methods, the real
`SamplingParams`, `EngineArgs` and `LoRARequest` accept what we pass, and real `RequestOutput` /
`CompletionOutput` objects carry what our backend reads. `make setup` installs vLLM (its CPU build
here); skipped only where a user set up without it (`make setup VLLM=none`).
"""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from daemon.bench.backends import Request, VllmBackend
from tests.vllm_standin import (
    StandInCompletionOutput,
    StandInEngine,
    StandInRequestOutput,
    StandInSamplingParams,
)

vllm = pytest.importorskip("vllm", reason="vllm is not installed (`make setup VLLM=none`)")


def _params(cls) -> set[str]:
    return set(inspect.signature(cls).parameters)


def test_engine_methods_accept_the_calls_our_backend_makes():
    from vllm import LLMEngine, SamplingParams

    params = SamplingParams(max_tokens=8, temperature=0.7, top_p=0.9, seed=123)
    assert (params.max_tokens, params.temperature, params.top_p, params.seed) == (8, 0.7, 0.9, 123)
    for engine_cls in (LLMEngine, StandInEngine):
        add = inspect.signature(engine_cls.add_request)
        add.bind(object(), "req-1", {"prompt_token_ids": [1, 2, 3]}, params, lora_request=None)
        inspect.signature(engine_cls.step).bind(object())
        inspect.signature(engine_cls.has_unfinished_requests).bind(object())
    real = inspect.signature(LLMEngine.add_request).parameters
    assert list(real)[1:4] == ["request_id", "prompt", "params"]
    stand_in = inspect.signature(StandInEngine.add_request).parameters
    assert list(stand_in)[:4] == list(real)[:4]
    assert set(stand_in) <= set(real)


def test_tokens_prompt_is_the_dict_we_send():
    from vllm.inputs import TokensPrompt

    assert "prompt_token_ids" in TokensPrompt.__annotations__
    TokensPrompt(prompt_token_ids=[1, 2, 3])


def test_engine_args_and_lora_request_take_our_arguments():
    from vllm import EngineArgs
    from vllm.lora.request import LoRARequest

    fields = {f.name for f in dataclasses.fields(EngineArgs)}
    assert {
        "model",
        "seed",
        "enable_lora",
        "max_lora_rank",
        "max_num_seqs",
        "trust_remote_code",
    } <= fields
    EngineArgs(
        model="some/model",
        seed=1,
        enable_lora=True,
        max_lora_rank=16,
        max_num_seqs=8,
        trust_remote_code=False,
    )
    lora = LoRARequest("adapter", 1, "/tmp/adapter")
    assert (lora.lora_name, lora.lora_int_id, lora.lora_path) == ("adapter", 1, "/tmp/adapter")


def test_parallel_and_memory_settings_reach_engine_args():
    """[bench] settings are the real EngineArgs fields: parallelism, the KV cache in bytes on CPU
    (where gpu_memory_utilization would reserve that share of all RAM), gpu_memory_utilization on a
    GPU, dtype, the length plan and the LoRA rank."""
    from vllm import EngineArgs

    from daemon.bench.engines import engine_args
    from daemon.config import BenchConfig

    cfg = BenchConfig(
        backend="vllm",
        tensor_parallel_size=4,
        pipeline_parallel_size=2,
        max_in_flight=64,
        kv_cache_gib=1.5,
        dtype="bfloat16",
    )
    cpu = EngineArgs(
        **engine_args("some/model", cfg, lora_rank=16, max_model_len=512, on_gpu=False)
    )
    assert (cpu.tensor_parallel_size, cpu.pipeline_parallel_size, cpu.max_num_seqs) == (4, 2, 64)
    assert cpu.kv_cache_memory_bytes == int(1.5 * 2**30) and cpu.dtype == "bfloat16"
    assert (cpu.enable_lora, cpu.max_lora_rank, cpu.max_model_len) == (True, 16, 512)
    gpu = EngineArgs(
        **engine_args(
            "some/model",
            BenchConfig(gpu_memory_utilization=0.7),
            lora_rank=None,
            max_model_len=None,
            on_gpu=True,
        )
    )
    assert (
        gpu.gpu_memory_utilization == 0.7
        and gpu.kv_cache_memory_bytes is None
        and not gpu.enable_lora
    )


def test_stand_in_outputs_have_the_real_output_fields():
    from vllm.outputs import CompletionOutput, RequestOutput

    stand_in = {f.name for f in dataclasses.fields(StandInCompletionOutput)}
    assert stand_in <= _params(CompletionOutput)
    assert {f.name for f in dataclasses.fields(StandInRequestOutput)} <= _params(RequestOutput)
    stand_in = {f.name for f in dataclasses.fields(StandInSamplingParams)}
    assert stand_in <= _params(vllm.SamplingParams)


class RealOutputsEngine:
    """Replays real vLLM RequestOutput objects, so our backend is shown to read the real
    attributes."""

    def __init__(self):
        self.pending: list[str] = []

    def add_request(self, request_id, prompt, params, lora_request=None):
        assert isinstance(params, vllm.SamplingParams)
        self.pending.append((request_id, prompt["prompt_token_ids"], params.max_tokens))

    def step(self):
        from vllm.outputs import CompletionOutput, RequestOutput

        rid, ids, max_tokens = self.pending.pop(0)
        comp = CompletionOutput(
            index=0,
            text="done " + rid,
            token_ids=list(range(max_tokens)),
            cumulative_logprob=None,
            logprobs=None,
            finish_reason="length",
        )
        return [
            RequestOutput(
                request_id=rid,
                prompt=None,
                prompt_token_ids=ids,
                prompt_logprobs=None,
                outputs=[comp],
                finished=True,
            )
        ]

    def has_unfinished_requests(self):
        return bool(self.pending)


def test_backend_reads_real_request_outputs():
    backend = VllmBackend(
        RealOutputsEngine(), max_in_flight=2, sampling_params=vllm.SamplingParams
    )
    reqs = [Request(f"r{i}", [1, 2, 3, 4][: i + 1], 5, 0.0, 1.0, 7) for i in range(3)]
    outs = list(backend.run(reqs))
    assert [
        (o.custom_id, o.text, o.prompt_tokens, o.completion_tokens, o.finish_reason) for o in outs
    ] == [
        ("r0", "done r0", 1, 5, "length"),
        ("r1", "done r1", 2, 5, "length"),
        ("r2", "done r2", 3, 5, "length"),
    ]
