"""Teacher-forced scoring of golden answers: one forward pass per batch, no generation.

A `Probe` is a fixed set of examples prepared once (encodings, prompts, golden answers) for answering again and
again. Per example: the mean cross-entropy of its golden answer tokens, the mean probability the model gives them
(dataset cartography's confidence), and whether greedy decoding would reproduce the answer token for token (every
answer position's argmax is the golden token, end token included: then greedy generation writes exactly the golden
answer, so generating it is needed only for the examples where this is false). Per token: top-1 confidence and
whether top-1 is golden (for ECE). Used by the fixed evaluation and the evolution snapshots.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Scores:
    loss: list[float] = field(default_factory=list)
    golden_prob: list[float] = field(default_factory=list)
    greedy_match: list[bool] = field(default_factory=list)
    token_conf: list[float] = field(default_factory=list)
    token_correct: list[bool] = field(default_factory=list)


def score_golden(model: Any, pad_id: int, encoded: list[Any], batch_size: int = 32) -> Scores:
    """`encoded`: objects with `input_ids` and `labels` (-100 outside the answer), as data.encode_messages makes.
    The model must already be in eval mode."""
    import torch

    device = next(model.parameters()).device
    out = Scores()
    with torch.no_grad():
        for i in range(0, len(encoded), batch_size):
            encs = encoded[i:i + batch_size]
            width = max(len(e.input_ids) for e in encs)
            ids = torch.tensor([e.input_ids + [pad_id] * (width - len(e.input_ids)) for e in encs], device=device)
            labels = torch.tensor([e.labels + [-100] * (width - len(e.labels)) for e in encs], device=device)
            lengths = torch.tensor([len(e.input_ids) for e in encs], device=device)
            attn = (torch.arange(width, device=device)[None, :] < lengths[:, None]).long()  # [b, t]
            logits = model(input_ids=ids, attention_mask=attn).logits[:, :-1].float()  # [b, t-1, vocab]
            target = labels[:, 1:]  # [b, t-1]: the token each position predicts
            mask = target != -100
            logp = torch.log_softmax(logits, dim=-1)
            gold = logp.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)  # [b, t-1]
            top_logp, top_i = logp.max(-1)  # [b, t-1]
            hit = top_i == target
            for row in range(len(encs)):
                m = mask[row]
                n = max(1, int(m.sum()))
                out.loss.append(float(-gold[row][m].sum() / n))
                out.golden_prob.append(float(gold[row][m].exp().sum() / n))
                out.greedy_match.append(bool(hit[row][m].all()) and bool(m.any()))
                out.token_conf += top_logp[row][m].exp().tolist()
                out.token_correct += hit[row][m].tolist()
    return out


@dataclass
class Probe:
    """A fixed set of examples answered again and again (fixed evaluation, evolution snapshots), prepared once."""

    encoded: list[Any]
    """Teacher-forced encodings (labels only on the answer)."""
    prompts: list[str]
    """Rendered prompts with the generation prompt appended."""
    questions: list[str]
    """The last user turn of each example, as people read it."""
    golden: list[str]
    longest: int
    """The longest golden answer, in tokens (generation never needs more than this + 2)."""


def prepare_probe(tok: Any, messages: list[list[Any]], max_length: int, loss_on: str) -> Probe:
    from daemon.training.data import encode_messages, prompt_text, question_and_answer

    qa = [question_and_answer(m) for m in messages]
    golden = [a for _, a in qa]
    return Probe(encoded=[encode_messages(tok, m, max_length, loss_on) for m in messages],
                 prompts=[prompt_text(tok, m) for m in messages], questions=[q for q, _ in qa], golden=golden,
                 longest=max(len(tok(g, add_special_tokens=False)["input_ids"]) for g in golden))


def answer(model: Any, tok: Any, probe: Probe, max_new_tokens: int, batch_size: int) -> tuple[Scores, list[str], int]:
    """Scores, and what greedy decoding answers to each prompt: the golden answer where the scoring shows greedy
    decoding reproduces it, a batched greedy generation for the others. Returns (scores, outputs, generated)."""
    from daemon.generation import generate_texts

    sc = score_golden(model, tok.pad_token_id or 0, probe.encoded, batch_size)
    outputs = [g if ok else "" for g, ok in zip(probe.golden, sc.greedy_match)]
    todo = [i for i, ok in enumerate(sc.greedy_match) if not ok]
    if todo:
        texts = generate_texts(model, tok, [probe.prompts[i] for i in todo],
                               max_new_tokens=min(max_new_tokens, probe.longest + 2), batch_size=batch_size)
        for i, t in zip(todo, texts):
            outputs[i] = t["text"]
    return sc, outputs, len(todo)


@contextmanager
def evaluating(model: Any, throughput: Any = None) -> Iterator[None]:
    """Eval mode for the block and training mode after it; its time is reported to the throughput collector (so
    the ETA counts evaluations and tokens/s does not)."""
    if throughput is not None:
        throughput.begin_eval()
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        if was_training:
            model.train()
        if throughput is not None:
            throughput.end_eval()
