"""Batched generation with a transformers model: evaluation, evolution snapshots and the hf bench
backend.

Prompts are left-padded so that every row's new tokens start at the same column. Shapes: input
[batch, prompt_len], output [batch, prompt_len + new]. Sampling is done per row by a logits
processor with one generator per row, so a request samples the same tokens whichever batch it lands
in (a resumed bench run repeats itself).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class RowSampling:
    """How one row is decoded."""

    max_new_tokens: int
    temperature: float = 0.0
    """0 = greedy."""
    top_p: float = 1.0
    seed: int = 0


def _row_sampler(rows: list[RowSampling], device: Any) -> Any:
    """A LogitsProcessor that samples each sampled row with its own generator and leaves only the
    drawn token finite, so that generate's greedy pick takes it. Greedy rows (temperature 0) pass
    through untouched."""
    import torch
    from transformers import LogitsProcessor

    class PerRowSampler(LogitsProcessor):
        def __init__(self) -> None:
            self.gens = {
                i: torch.Generator(device=device).manual_seed(r.seed)
                for i, r in enumerate(rows)
                if r.temperature > 0
            }

        def __call__(self, input_ids: Any, scores: Any) -> Any:  # scores: [batch, vocab]
            for i, gen in self.gens.items():
                r = rows[i]
                probs = torch.softmax(scores[i].float() / r.temperature, dim=-1)  # [vocab]
                if r.top_p < 1.0:
                    sorted_p, order = probs.sort(descending=True)
                    # Keep the smallest prefix whose mass reaches top_p (always at least the top
                    # token).
                    drop = sorted_p.cumsum(-1) - sorted_p >= r.top_p
                    sorted_p[drop] = 0.0
                    probs = torch.zeros_like(probs).scatter(0, order, sorted_p)
                token = torch.multinomial(probs, 1, generator=gen)
                row = torch.full_like(scores[i], float("-inf"))
                row[token] = 0.0
                scores[i] = row
            return scores

    return PerRowSampler()


def generate_batch(
    model: Any, tok: Any, prompt_ids: list[list[int]], rows: list[RowSampling]
) -> list[dict[str, Any]]:
    """Generate one batch: per row its own max_new_tokens, temperature, top_p and seed. Returns one
    dict per row: text, token_ids, prompt_tokens, completion_tokens, finish_reason ('stop' or
    'length')."""
    import torch
    from transformers import LogitsProcessorList

    device = next(model.parameters()).device
    pad = tok.pad_token_id
    longest = max(len(p) for p in prompt_ids)
    ids = torch.full((len(prompt_ids), longest), pad, dtype=torch.long)
    mask = torch.zeros((len(prompt_ids), longest), dtype=torch.long)
    for i, p in enumerate(prompt_ids):  # left padding
        ids[i, longest - len(p) :] = torch.tensor(p, dtype=torch.long)
        mask[i, longest - len(p) :] = 1
    kwargs: dict[str, Any] = dict(
        max_new_tokens=max(r.max_new_tokens for r in rows),
        pad_token_id=pad,
        eos_token_id=tok.eos_token_id,
        do_sample=False,
    )
    if any(r.temperature > 0 for r in rows):
        kwargs["logits_processor"] = LogitsProcessorList([_row_sampler(rows, device)])
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            gen = model.generate(
                input_ids=ids.to(device), attention_mask=mask.to(device), **kwargs
            )
    finally:
        if was_training:
            model.train()
    out = []
    for i, row_ids in enumerate(gen[:, longest:].tolist()):  # [batch, new_tokens]
        cap = rows[i].max_new_tokens
        if tok.eos_token_id in row_ids[:cap]:
            body, finish = row_ids[: row_ids.index(tok.eos_token_id) + 1], "stop"
        else:
            # A row that is not finished within its own cap; rows that ended early are padded after
            # their EOS.
            body, finish = row_ids[:cap], "length"
        out.append(
            {
                "text": tok.decode(body, skip_special_tokens=True),
                "token_ids": body,
                "prompt_tokens": len(prompt_ids[i]),
                "completion_tokens": len(body),
                "finish_reason": finish,
            }
        )
    return out


def generate_texts(
    model: Any, tok: Any, prompts: list[str], max_new_tokens: int = 64, batch_size: int = 16
) -> list[dict[str, Any]]:
    """Greedy answers to rendered prompt strings, `batch_size` at a time (see generate_batch for
    the dicts)."""
    out: list[dict[str, Any]] = []
    for i in range(0, len(prompts), batch_size):
        chunk = prompts[i : i + batch_size]
        ids = tok(chunk, add_special_tokens=False)["input_ids"]
        out += generate_batch(model, tok, ids, [RowSampling(max_new_tokens)] * len(chunk))
    return out
