"""A small stand-in for vLLM's LLMEngine, for testing our vllm backend where vLLM cannot run (no
CPU wheel).

It follows the documented engine contract our backend uses: `add_request(request_id, prompt,
params, lora_request=...)` with a TokensPrompt dict, `step()` returning RequestOutput-shaped
objects (finished or not) and `has_unfinished_requests()`. Like vLLM's scheduler it runs at most
`max_num_seqs` requests at once and adds one token per running request per step, so requests finish
out of order. Tokens are a deterministic function of the request's seed and prompt, so a test can
check that a resumed request samples the same. `tests/test_vllm_contract.py` holds these names and
signatures against the real vLLM classes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any


@dataclass
class StandInSamplingParams:
    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None


@dataclass
class StandInCompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None = None
    logprobs: Any = None
    finish_reason: str | None = None


@dataclass
class StandInRequestOutput:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    prompt_logprobs: Any
    outputs: list[StandInCompletionOutput]
    finished: bool


@dataclass
class _Req:
    rid: str
    prompt_ids: list[int]
    params: Any
    tokens: list[int] = field(default_factory=list)


class StandInEngine:
    EOS = 0

    def __init__(self, max_num_seqs: int = 8, fail_ids: set[str] | None = None):
        self.max_num_seqs = max_num_seqs
        self.waiting: list[_Req] = []
        self.running: list[_Req] = []
        self.seen: set[str] = set()
        self.fail_ids = fail_ids or set()
        self.max_running = 0
        self.steps = 0
        self.added: list[tuple[str, Any]] = []
        self.loras: list[Any] = []

    def add_request(
        self,
        request_id: str,
        prompt: Any,
        params: Any,
        arrival_time: float | None = None,
        lora_request: Any = None,
        tokenization_kwargs: dict[str, Any] | None = None,
        trace_headers: Any = None,
        priority: int = 0,
    ) -> str:
        if request_id in self.seen:
            raise ValueError(f"request id {request_id} already exists")
        if request_id in self.fail_ids:
            raise ValueError(f"prompt of {request_id} is longer than the model's context")
        self.seen.add(request_id)
        self.added.append((request_id, params))
        self.loras.append(lora_request)
        self.waiting.append(_Req(request_id, list(prompt["prompt_token_ids"]), params))
        return request_id

    def _next_token(self, r: _Req) -> int:
        key = f"{r.params.seed}:{r.prompt_ids}:{len(r.tokens)}".encode()
        return hashlib.sha256(key).digest()[0] % 40  # 0 (EOS) about one step in 40

    def step(self) -> list[StandInRequestOutput]:
        self.steps += 1
        while self.waiting and len(self.running) < self.max_num_seqs:
            self.running.append(self.waiting.pop(0))
        self.max_running = max(self.max_running, len(self.running))
        outs = []
        for r in list(self.running):
            t = self._next_token(r)
            r.tokens.append(t)
            done_eos, done_len = t == self.EOS, len(r.tokens) >= r.params.max_tokens
            finished = done_eos or done_len
            text = "".join(chr(ord("a") + x % 26) for x in r.tokens if x != self.EOS)
            comp = StandInCompletionOutput(
                0,
                text,
                list(r.tokens),
                finish_reason=("stop" if done_eos else "length") if finished else None,
            )
            outs.append(StandInRequestOutput(r.rid, None, r.prompt_ids, None, [comp], finished))
            if finished:
                self.running.remove(r)
        return outs

    def has_unfinished_requests(self) -> bool:
        return bool(self.waiting or self.running)
