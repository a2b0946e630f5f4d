"""The output layer run only where a token is predicted that anything reads.

A causal LM's forward pass ends with the output layer over every position: [rows, width, hidden] ->
[rows, width, vocabulary]. Training reads only the positions that predict a labelled token (about a
quarter of them on chat data: the prompt and the padding carry no label), and a scored pass reads
only those too. With SmolLM2's 49k-token vocabulary the output layer is about a fifth of a 135M
model's forward FLOPs, and its logits are the largest activation of a step. So the decoder runs as
usual and the output layer runs on the K kept positions alone: [K, hidden] -> [K, vocabulary].

This holds only where the model's logits are exactly `lm_head(last hidden state)`. `split_head()`
says so for the model families whose transformers forward is that and nothing more (no
soft-capping, no logit scale, no auxiliary router loss); every other model keeps the full forward.
"""

from __future__ import annotations

from typing import Any

PLAIN_HEADS = frozenset(
    {
        "llama",
        "mistral",
        "qwen2",
        "qwen3",
        "phi3",
        "gemma",
        "olmo",
        "olmo2",
        "smollm3",
        "starcoder2",
    }
)
"""Model types whose causal-LM forward computes logits as
`lm_head(decoder(...).last_hidden_state)`."""
SCALED_LOGITS = (
    "final_logit_softcapping",
    "logit_scale",
    "logits_scaling",
    "output_multiplier_scale",
)
"""Config fields that change the logits after the output layer where set (the model then keeps
its own forward)."""


def split_head(model: Any) -> tuple[Any, Any] | None:
    """(decoder, output layer) of a causal LM (peft-wrapped or not) whose logits are the output
    layer applied to the decoder's last hidden state; None for any other model."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(base, "config", None)
    if getattr(config, "model_type", None) not in PLAIN_HEADS:
        return None
    if any(getattr(config, name, None) not in (None, 1, 1.0) for name in SCALED_LOGITS):
        return None
    get_decoder = getattr(base, "get_decoder", None)
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    decoder = get_decoder() if callable(get_decoder) else None
    if decoder is None or head is None or decoder is base:
        return None
    return decoder, head


def next_token_targets(inputs: dict[str, Any]) -> Any:
    """Each position's next-token target [rows, width] (-100 where nothing is trained): the packed
    collator's `shift_labels` as they are, else `labels` moved one to the left."""
    import torch.nn.functional as F

    if inputs.get("shift_labels") is not None:
        return inputs["shift_labels"]
    return F.pad(inputs["labels"][:, 1:], (0, 1), value=-100)


def labelled_logits(parts: tuple[Any, Any], inputs: dict[str, Any], keep: Any) -> tuple[Any, Any]:
    """The decoder over `inputs` (no labels among them), then the output layer at the kept
    positions only. `keep` [rows, width] bool -> (logits [K, vocabulary], the decoder's output:
    its cache and hidden states)."""
    decoder, head = parts
    out = decoder(**inputs)
    hidden = out.last_hidden_state  # [rows, width, hidden]
    return head(hidden[keep]), out  # [K, vocabulary]
