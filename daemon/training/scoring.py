"""Teacher-forced scoring of golden answers, and greedy answers that reuse that pass.

A `Probe` is a fixed set of examples prepared once (encodings, prompts, golden answers) for
answering again and again: the fixed evaluation and the evolution snapshots. `answer()` does one
teacher-forced forward pass per batch and gets from it, per example: the mean cross-entropy of the
golden answer tokens, the mean probability the model gives them (dataset cartography's confidence),
and, per token, top-1 confidence and whether top-1 is golden (ECE).

The same pass says what greedy decoding would write, without generating from scratch. Greedy
decoding follows the golden answer for as long as every position's argmax is the golden token;
where the first one is not, greedy writes that argmax instead. So an example whose argmaxes are
golden all the way to the end token is answered exactly by its golden answer, and any other one by
its golden prefix, the first wrong argmax, and a continuation decoded from the pass's own key/value
cache (the context is already in it). No prompt is processed twice; only models whose cache cannot
be used this way (sliding windows, linear attention, flash-attention's own padding handling) go
through `generate` from the prompt instead.

The tokens every row of a batch begins with (a system prompt, a chat template's opening, an
instruction's fixed wording) are processed once: one row's pass over that shared prefix fills the
key/value cache, which is repeated for every row, and the batch's pass covers only what follows it.
With a long system prompt that is most of the work.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from daemon.models.library_names import cache_argument, cache_of, forward_parameters
from daemon.training.labelled_head import labelled_logits, split_head

BATCH_ROWS = 128
"""Rows per scoring batch (the token budget may make it fewer). Decoding costs about the same per
step whatever the batch, so the fewer batches the fewer steps."""
TOKEN_BUDGET = 8192
"""Tokens per scoring batch (rows x padded width): bounds the logits and the key/value cache a
batch holds."""
MIN_SHARED_PREFIX = 4
"""Shared leading tokens worth a pass of their own (below this the extra forward call costs more
than it saves)."""
MERGE_BUDGET_BYTES = 256 << 20
"""Largest total size of the LoRA-targeted weights that `lora_merged` copies; bigger models answer
unmerged."""


@dataclass
class Scores:
    loss: list[float] = field(default_factory=list)
    golden_prob: list[float] = field(default_factory=list)
    greedy_match: list[bool] = field(default_factory=list)
    token_conf: list[float] = field(default_factory=list)
    token_correct: list[bool] = field(default_factory=list)
    decode_seconds: float = 0.0
    """Wall time spent decoding the answers the pass could not read off
    (benchmarks/snapshot_cost.py reports it)."""


@dataclass
class Probe:
    """A fixed set of examples answered again and again (fixed evaluation, evolution snapshots),
    prepared once."""

    encoded: list[Any]
    """Teacher-forced encodings (labels only on the answer)."""
    prompts: list[str]
    """Rendered prompts with the generation prompt appended."""
    questions: list[str]
    """The last user turn of each example, as people read it."""
    golden: list[str]
    longest: int
    """The longest golden answer, in tokens (generation never needs more than this + 2)."""
    answer_start: list[int | None]
    """Where the last answer starts in `encoded[i].input_ids`: the encoding's tokens before it are
    exactly the prompt's tokens, so greedy decoding can continue from the scoring pass. None where
    they differ (a tokenizer that merges across the turn boundary) or truncation cut the answer:
    that example is generated from its prompt."""


def prepare_probe(
    tok: Any,
    messages: list[list[Any]],
    max_length: int,
    loss_on: str,
    tools: list[Any] | None = None,
) -> Probe:
    """`tools`: each example's tool definitions (None for none)."""
    from daemon.chat.messages import question_and_answer
    from daemon.chat.render import encode_messages, prompt_text

    tools = tools or [None] * len(messages)
    qa = [question_and_answer(m) for m in messages]
    golden = [a for _, a in qa]
    encoded = [encode_messages(tok, m, max_length, loss_on, t) for m, t in zip(messages, tools)]
    prompts = [prompt_text(tok, m, t) for m, t in zip(messages, tools)]
    starts: list[int | None] = []
    for enc, p_ids in zip(encoded, tok(prompts, add_special_tokens=False)["input_ids"]):
        a = len(p_ids)
        whole = enc.input_ids[:a] == p_ids and tok.eos_token_id in enc.input_ids[a:]
        starts.append(a if whole and a > 0 else None)
    return Probe(
        encoded=encoded,
        prompts=prompts,
        questions=[q for q, _ in qa],
        golden=golden,
        longest=max(len(tok(g, add_special_tokens=False)["input_ids"]) for g in golden),
        answer_start=starts,
    )


def _batches(encoded: list[Any], batch_size: int, budget: int) -> Iterator[list[int]]:
    """Consecutive index ranges of at most `batch_size` rows and `budget` padded tokens (at least
    one row)."""
    batch: list[int] = []
    width = 0
    for i, e in enumerate(encoded):
        w = max(width, len(e.input_ids))
        if batch and (len(batch) >= batch_size or w * (len(batch) + 1) > budget):
            yield batch
            batch, w = [], len(e.input_ids)
        batch.append(i)
        width = w
    if batch:
        yield batch


def _cache_continues(model: Any) -> bool:
    """Whether greedy decoding may continue from a right-padded pass's cache: a plain
    full-attention cache, with an attention implementation that reads a padding mask with holes."""
    cfg = getattr(model, "config", None)
    if getattr(cfg, "_attn_implementation", "eager") not in ("eager", "sdpa"):
        return False
    kinds = set(getattr(cfg, "layer_types", None) or ["full_attention"])
    return kinds == {"full_attention"} and not getattr(cfg, "sliding_window", None)


def _first_scored(encs: list[Any]) -> int:
    """The first position whose logits any row of the batch reads: the one before its first
    labelled token."""
    return max(
        0,
        min(
            next((t for t, label in enumerate(e.labels) if label != -100), len(e.labels))
            for e in encs
        )
        - 1,
    )


def _shared_prefix(encs: list[Any]) -> int:
    """How many leading tokens every row shares and none is scored on (a row's first labelled token
    is predicted by the position before it, which must lie in the batch's own pass); 0 when too few
    to be worth a pass."""
    first = encs[0].input_ids
    n = min(min(len(e.input_ids) for e in encs) - 1, _first_scored(encs))
    for e in encs[1:]:
        ids = e.input_ids
        k = 0
        while k < n and ids[k] == first[k]:
            k += 1
        n = k
    return n if n >= MIN_SHARED_PREFIX and len(encs) > 1 else 0


def _keeps_logits(model: Any) -> bool:
    """Whether the model's forward takes `logits_to_keep` (transformers' causal LMs do; some remote
    code does not)."""
    return "logits_to_keep" in forward_parameters(model)


def _forward(
    model: Any, ids: Any, attn: Any, targets: Any, prefix: int, use_cache: bool
) -> tuple[Any, Any]:
    """The batch's teacher-forced pass: (logits at the positions that predict a labelled token [K,
    vocab], in row order, and the pass's cache). With a shared prefix, one row's pass over it fills
    the cache, repeated for every row, and the batch's pass covers only the rest. The output layer
    runs on the K labelled positions alone (daemon/training/labelled_head.py) — with a 49k
    vocabulary the other positions' logits would be most of a batch's memory and a large share of
    its time; a model whose logits are more than that layer computes them from the first labelled
    position on (`logits_to_keep`), or everywhere without it. A model whose cache cannot be
    repeated (no transformers Cache) gets the whole pass: prefix 0."""
    keep = targets != -100  # [b, t]
    parts = split_head(model)
    if prefix:
        fill = parts[0] if parts is not None else model  # the decoder alone: no logits at all
        one = {"logits_to_keep": 1} if parts is None and _keeps_logits(model) else {}
        # [1, heads, prefix, dim]
        cache = cache_of(fill(input_ids=ids[:1, :prefix], use_cache=True, **one))
        if hasattr(cache, "batch_repeat_interleave"):
            cache.batch_repeat_interleave(ids.shape[0])
            # Positions continue from the cache's length; right padding keeps each row's tokens at
            # their positions.
            return _pass(model, parts, ids[:, prefix:], attn, keep[:, prefix:], cache, True)
    return _pass(model, parts, ids, attn, keep, None, use_cache)


def _pass(
    model: Any, parts: Any, ids: Any, attn: Any, keep: Any, cache: Any, use_cache: bool
) -> tuple[Any, Any]:
    """One forward call over `ids` [b, t'] whose labelled positions are `keep` [b, t'] -> (logits
    [K, vocab], cache)."""
    inputs = {"input_ids": ids, "attention_mask": attn, "use_cache": use_cache}
    if cache is not None:
        # past_key_values, or cache where transformers renamed it
        inputs[cache_argument(model)] = cache
    if parts is not None:
        logits, out = labelled_logits(parts, inputs, keep)
        return logits, cache_of(out)
    cols = keep.any(0).nonzero()
    first = int(cols[0]) if len(cols) else ids.shape[1] - 1
    trim = {"logits_to_keep": ids.shape[1] - first} if first and _keeps_logits(model) else {}
    out = model(**inputs, **trim)
    return out.logits[keep[:, ids.shape[1] - out.logits.shape[1] :]], cache_of(out)


def answer(
    model: Any,
    tok: Any,
    probe: Probe,
    max_new_tokens: int,
    batch_size: int,
    token_budget: int = TOKEN_BUDGET,
    share_prefix: bool = True,
    decode: bool = True,
) -> tuple[Scores, list[str], int]:
    """Scores, and what greedy decoding answers to each prompt (see the module docstring). The
    model must be in eval mode. Returns (scores, outputs, how many examples needed decoding beyond
    their golden answer). `share_prefix=False` runs every row's whole sequence (the same results,
    to float rounding). `decode=False`: the teacher-forced pass only; an example greedy decoding
    would not reproduce gets "" as its output."""
    import torch

    from daemon.models.generation import generate_texts

    device = next(model.parameters()).device
    pad = tok.pad_token_id or 0
    # answer tokens, end token included, as generate counts them
    cap = min(max_new_tokens, probe.longest + 2)
    continues = _cache_continues(model)
    sc = Scores()
    outputs = [""] * len(probe.encoded)
    from_prompt: list[int] = []  # examples generated from scratch
    decoded = 0
    with torch.no_grad(), lora_merged(model):
        for idx in _batches(probe.encoded, batch_size, token_budget):
            encs = [probe.encoded[i] for i in idx]
            width = max(len(e.input_ids) for e in encs)
            ids = torch.tensor(
                [e.input_ids + [pad] * (width - len(e.input_ids)) for e in encs], device=device
            )
            labels = torch.tensor(
                [e.labels + [-100] * (width - len(e.labels)) for e in encs], device=device
            )
            lengths = torch.tensor([len(e.input_ids) for e in encs], device=device)
            # [b, t]
            attn = (torch.arange(width, device=device)[None, :] < lengths[:, None]).long()
            # [b, t]: what t predicts
            targets = torch.nn.functional.pad(labels[:, 1:], (0, 1), value=-100)
            # The cache API that repeats a prefix goes with models whose cache decoding may
            # continue from.
            logits, cache = _forward(
                model,
                ids,
                attn,
                targets,
                _shared_prefix(encs) if share_prefix and continues else 0,
                continues,
            )
            # [b, t]: the argmax predicting token t + 1 (-1: not read)
            top = _score_batch(logits, targets, sc)
            n_before = len(sc.greedy_match) - len(idx)
            plans = []
            for row, i in enumerate(idx):
                if sc.greedy_match[n_before + row]:
                    outputs[i] = probe.golden[i]
                    continue
                decoded += 1
                if not decode:
                    continue
                plan = _plan(
                    probe.encoded[i].input_ids,
                    probe.answer_start[i],
                    top[row],
                    tok.eos_token_id,
                    cap,
                )
                if plan is None or (not plan.done and not continues):
                    from_prompt.append(i)
                elif plan.done:
                    outputs[i] = tok.decode(plan.tokens, skip_special_tokens=True)
                else:
                    plans.append((row, i, plan))
            # no reusable cache
            if plans and not all(hasattr(cache, m) for m in ("reorder_cache", "crop")):
                from_prompt += [i for _, i, _ in plans]
            elif plans:
                t0 = time.perf_counter()
                _continue(model, cache, attn, plans, tok.eos_token_id, cap, device)
                sc.decode_seconds += time.perf_counter() - t0
                for _, i, plan in plans:
                    outputs[i] = tok.decode(plan.tokens, skip_special_tokens=True)
            del logits, cache
    if from_prompt:
        t0 = time.perf_counter()
        texts = generate_texts(
            model,
            tok,
            [probe.prompts[i] for i in from_prompt],
            max_new_tokens=cap,
            batch_size=batch_size,
        )
        for i, t in zip(from_prompt, texts):
            outputs[i] = t["text"]
        sc.decode_seconds += time.perf_counter() - t0
    return sc, outputs, decoded


def _score_batch(logits: Any, targets: Any, sc: Scores) -> Any:
    """Append one batch's scores to `sc` from the logits of its labelled positions (logits [K,
    vocab], in row order; targets [b, t], -100 where nothing is predicted); return the argmax
    tokens [b, t] for greedy continuation, -1 where no logits were computed."""
    import torch

    keep = targets != -100  # [b, t]
    rows = keep.nonzero(as_tuple=True)[0]  # [K]: each labelled position's row
    logp = torch.log_softmax(logits.float(), dim=-1)  # [K, vocab]
    golden = targets[keep]  # [K]
    gold = logp.gather(-1, golden[:, None])[:, 0]  # [K]
    top_logp, top_i = logp.max(-1)  # [K]
    hit = top_i == golden

    def per_row(values: Any) -> Any:  # [K] -> [b]: summed per row
        return torch.zeros(keep.shape[0], dtype=torch.float32, device=values.device).index_add_(
            0, rows, values
        )

    tokens = keep.sum(1)  # [b]
    n = tokens.clamp(min=1)
    sc.loss += (-per_row(gold) / n).tolist()
    sc.golden_prob += (per_row(gold.exp()) / n).tolist()
    sc.greedy_match += ((per_row((~hit).float()) == 0) & (tokens > 0)).tolist()
    sc.token_conf += top_logp.exp().tolist()  # row-major: each row's tokens in order
    sc.token_correct += hit.tolist()
    top = torch.full(keep.shape, -1, dtype=top_i.dtype, device=top_i.device)
    top[keep] = top_i
    return top.cpu()


@dataclass
class _Plan:
    tokens: list[int]
    """The greedy answer so far: the golden prefix, then decoded tokens."""
    position: int
    """Position of the last token of `tokens` in the sequence; the cache holds everything before
    it."""
    done: bool


def _plan(input_ids: list[int], start: int | None, top: Any, eos: int, cap: int) -> _Plan | None:
    """Follow the golden answer while the argmax agrees; None when the pass cannot say (continue
    from the prompt)."""
    if start is None:
        return None
    preds = top[start - 1 :].tolist()  # preds[j]: the argmax for answer token j
    for j, golden in enumerate(input_ids[start:]):
        if j >= cap:
            return _Plan(input_ids[start : start + cap], start + cap - 1, True)
        # past the pass, or a position it computed no logits for
        if j >= len(preds) or preds[j] < 0:
            return None
        if preds[j] != golden:
            tokens = input_ids[start : start + j] + [preds[j]]
            return _Plan(tokens, start + j, preds[j] == eos or len(tokens) >= cap)
        if golden == eos:
            return _Plan(input_ids[start : start + j + 1], start + j, True)
    return None


def _continue(
    model: Any,
    cache: Any,
    attn: Any,
    plans: list[tuple[int, int, _Plan]],
    eos: int,
    cap: int,
    device: Any,
) -> None:
    """Greedy decoding of the unfinished plans from the scoring pass's cache, batched; extends
    plan.tokens."""
    import torch

    rows = torch.tensor([row for row, _, _ in plans], device=device)
    cache.reorder_cache(rows)  # keep only the rows still decoding: [n, heads, width, head_dim]
    pos = torch.tensor([p.position for _, _, p in plans], device=device)  # [n]
    # Columns at and after the last row's position hold golden tokens no row reads any more (each
    # row's context ends before its position): cropped, so that each step's cache update copies and
    # attends to less.
    width = max(p.position for _, _, p in plans)
    if width < attn.shape[1]:
        # a negative count removes that many: [n, heads, width, head_dim]
        cache.crop(width - attn.shape[1])
    # Each row sees its context (positions before its last token), not the golden tokens after it,
    # then what it decodes: a padding mask with a hole, and explicit positions so rotary embeddings
    # stay right.
    mask = (torch.arange(width, device=device)[None, :] < pos[:, None]).long()  # [n, width]
    cur = torch.tensor([p.tokens[-1] for _, _, p in plans], device=device)  # [n]
    batch = [p for _, _, p in plans]  # the plan decoded in each row of the batch
    done = [p.done for p in batch]
    cache_name = cache_argument(model)  # past_key_values, or cache where transformers renamed it
    while not all(done):
        if sum(done) >= len(done) / 4:
            # Finished rows leave the batch (and the cache) once they are a quarter of it, so later
            # steps cost what the rows still decoding cost; fewer stay (writing nothing) rather
            # than reshuffle every step.
            mask, pos, cur = _keep_rows(cache, [not d for d in done], mask, pos, cur)
            batch = [p for p, d in zip(batch, done) if not d]
            done = [False] * len(batch)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        logits = model(
            input_ids=cur[:, None],
            attention_mask=mask,
            position_ids=pos[:, None],
            use_cache=True,
            **{cache_name: cache},
        ).logits[:, -1]  # [n, vocab]
        cur = logits.argmax(-1)
        pos = pos + 1
        for k, token in enumerate(cur.tolist()):
            if not done[k]:
                batch[k].tokens.append(token)
                done[k] = token == eos or len(batch[k].tokens) >= cap


def _keep_rows(cache: Any, keep: list[bool], *tensors: Any) -> list[Any]:
    """Drop the rows not kept from the cache (in place) and from each [n, ...] tensor."""
    import torch

    idx = torch.tensor([i for i, k in enumerate(keep) if k], device=tensors[0].device)
    cache.reorder_cache(idx)
    return [t[idx] for t in tensors]


@contextmanager
def lora_merged(model: Any, budget: int | None = None) -> Iterator[None]:
    """Forward passes in the block see each LoRA layer as one weight W + scale * B @ A (peft's
    delta weight) and skip the adapter's own path. On a small model the adapter's extra matmuls and
    adds cost 60% of a forward pass (measured on builtin:tiny, 100 x 40 tokens); merged, they cost
    nothing.

    The merged weights are new tensors: the base weights are put back untouched afterwards (peft's
    in-place merge/unmerge would round them, and in bf16 visibly). That copy is why only models
    whose targeted weights fit in `budget` (default MERGE_BUDGET_BYTES) are merged; on bigger ones
    the adapter is a small share of each matmul anyway. Layers peft cannot merge this simply (DoRA
    and other variants, quantised or non-Linear bases, adapters already merged) leave the whole
    model unmerged. Greedy answers can differ from the unmerged model's only where two tokens tie
    to within float rounding."""
    import torch

    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:  # peft absent: nothing to merge
        yield
        return
    layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
    plans: list[tuple[Any, ...]] = []
    for layer in layers:
        base = layer.get_base_layer()
        active = [a for a in layer.active_adapters if a in layer.lora_A]
        if (
            not isinstance(base, torch.nn.Linear)
            or not base.weight.is_floating_point()
            or layer.merged
            or getattr(layer, "lora_variant", {}).keys() & set(active)
            or layer.disable_adapters
            or not hasattr(layer, "_disable_adapters")
        ):
            plans = []
            break
        plans.append((layer, base, active))
    budget = MERGE_BUDGET_BYTES if budget is None else budget
    if not plans or sum(b.weight.numel() * b.weight.element_size() for _, b, _ in plans) > budget:
        yield
        return
    originals = []
    try:
        with torch.no_grad():
            for layer, base, active in plans:
                w = base.weight.data
                merged = w.clone()
                for a in active:
                    merged += layer.get_delta_weight(a).to(merged.dtype)
                originals.append((layer, base, w))
                base.weight.data = merged
                layer._disable_adapters = True  # the layer's forward is now base_layer(x) alone
        yield
    finally:
        for layer, base, w in originals:
            base.weight.data = w
            layer._disable_adapters = False


@contextmanager
def evaluating(model: Any, throughput: Any = None, autocast: str | None = None) -> Iterator[None]:
    """Eval mode for the block and training mode after it; its time is reported to the throughput
    collector (so the ETA counts evaluations and tokens/s does not). `autocast` ("bfloat16",
    "float16"): the matmuls in that precision, as training runs them (the run's config.json
    `precision`)."""
    import contextlib

    import torch

    if throughput is not None:
        throughput.begin_eval()
    was_training = model.training
    try:
        model.eval()
        cast = (
            torch.autocast(next(model.parameters()).device.type, dtype=getattr(torch, autocast))
            if autocast
            else contextlib.nullcontext()
        )
        with cast:
            yield
    finally:
        if was_training:
            model.train()
        if throughput is not None:
            throughput.end_eval()
