"""Batched greedy (or sampled) generation with a transformers model: evaluation, evolution and the hf bench backend.

Prompts are left-padded so that every row's new tokens start at the same column. Shapes: input [batch, prompt_len],
output [batch, prompt_len + new].
"""

from __future__ import annotations

from typing import Any


def generate_texts(model: Any, tok: Any, prompts: list[str], max_new_tokens: int = 64, batch_size: int = 16,
                   do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0,
                   seed: int | None = None) -> list[dict[str, Any]]:
    """One dict per prompt: text, prompt_tokens, completion_tokens, finish_reason ('stop' or 'length')."""
    import torch

    device = next(model.parameters()).device
    old_side = tok.padding_side
    tok.padding_side = "left"
    out: list[dict[str, Any]] = []
    was_training = model.training
    model.eval()
    try:
        for i in range(0, len(prompts), batch_size):
            chunk = prompts[i:i + batch_size]
            enc = tok(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            kwargs: dict[str, Any] = dict(max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id,
                                          eos_token_id=tok.eos_token_id, do_sample=do_sample)
            if do_sample:
                kwargs.update(temperature=temperature, top_p=top_p)
                if seed is not None:
                    torch.manual_seed(seed + i)
            with torch.no_grad():
                gen = model.generate(**enc, **kwargs)
            new = gen[:, enc["input_ids"].shape[1]:]  # [batch, new_tokens]
            for row_ids, mask in zip(new.tolist(), enc["attention_mask"].tolist()):
                n = len(row_ids)
                if tok.eos_token_id in row_ids:
                    n = row_ids.index(tok.eos_token_id) + 1
                    finish = "stop"
                else:
                    # Rows that finished early are padded with pad_token_id after their EOS.
                    finish = "length"
                body = row_ids[:n]
                out.append({"text": tok.decode(body, skip_special_tokens=True), "prompt_tokens": int(sum(mask)),
                            "completion_tokens": len(body), "finish_reason": finish})
    finally:
        tok.padding_side = old_side
        if was_training:
            model.train()
    return out


def normalise_answer(text: str) -> str:
    """What exact match compares: surrounding whitespace dropped, inner whitespace collapsed."""
    return " ".join(text.split())
