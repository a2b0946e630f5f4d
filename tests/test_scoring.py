"""The fixed evaluation and the evolution snapshots read greedy answers off the teacher-forced pass
(and continue decoding from its cache) instead of generating from the prompt: the answers must be
exactly what generation writes, at every stage of training."""

from __future__ import annotations

import json

from daemon.chat.messages import Message
from tests.helpers import DEMO


def _conversations() -> list[list[Message]]:
    rows = [json.loads(line) for line in DEMO.read_text().splitlines()[:40]]
    convs = []
    for r in rows:
        if "messages" in r:
            convs.append([Message(m["role"], m["content"]) for m in r["messages"]])
        else:
            q = r.get("instruction") or r.get("prompt")
            convs.append(
                [Message("user", q), Message("assistant", r.get("output") or r.get("completion"))]
            )
    # Multi-turn: the answer that counts is the last assistant turn, with earlier turns as context.
    convs.append(
        [
            Message("system", "Answer in capitals."),
            Message("user", "Uppercase: stone"),
            Message("assistant", "STONE"),
            Message("user", "Uppercase: river tiger"),
            Message("assistant", "RIVER TIGER"),
        ]
    )
    convs.append(
        [
            Message("user", "Uppercase: a b"),
            Message("assistant", "A B"),
            Message("user", "again"),
            Message("assistant", "A B A B A B A B A B A B A B A B"),
        ]
    )
    return convs


def test_answers_equal_generation_at_every_stage_of_training(tiny_models, monkeypatch):
    import torch
    from transformers import AutoModelForCausalLM

    from daemon.chat.render import encode_messages
    from daemon.models.generation import generate_texts
    from daemon.models.loading import load_tokenizer, resolve_model_path
    from daemon.training import scoring
    from daemon.training.data import PadCollator
    from daemon.training.scoring import answer, prepare_probe

    shared = []  # the shared prefix of every scoring batch
    find_prefix = scoring._shared_prefix
    monkeypatch.setattr(
        scoring, "_shared_prefix", lambda encs: shared.append(find_prefix(encs)) or shared[-1]
    )

    tok = load_tokenizer("builtin:tiny", tiny_models)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(resolve_model_path("builtin:tiny", tiny_models))
    convs = _conversations()
    probe = prepare_probe(tok, convs, 512, "assistant")
    assert all(a is not None for a in probe.answer_start)
    train = [vars(encode_messages(tok, c, 512)) for c in convs]
    collate = PadCollator(tok.pad_token_id)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    kinds = set()
    for stage in range(6):  # untrained, then more and more right
        model.eval()
        reference = [
            t["text"]
            for t in generate_texts(
                model, tok, probe.prompts, max_new_tokens=min(64, probe.longest + 2), batch_size=16
            )
        ]
        # one scoring batch, and several (the cache of each is its own)
        for batch_size in (128, 7):
            sc, outputs, decoded = answer(model, tok, probe, 64, batch_size)
            assert outputs == reference, f"stage {stage}, batch size {batch_size}"
        # Batches of 7 demo rows share "<|user|>Uppercase: ", processed once; the same scores
        # without sharing. (the batch of all rows, a system prompt among them, shares nothing)
        assert 12 in shared and 0 in shared
        whole, whole_outputs, _ = answer(model, tok, probe, 64, 7, share_prefix=False)
        sc7, outputs7, _ = answer(model, tok, probe, 64, 7)
        assert whole_outputs == outputs7 == reference
        assert whole.greedy_match == sc7.greedy_match
        assert max(abs(a - b) for a, b in zip(whole.loss, sc7.loss)) < 1e-5
        assert max(abs(a - b) for a, b in zip(whole.golden_prob, sc7.golden_prob)) < 1e-5
        # The output layer on the answer positions alone scores as the model's own forward over
        # every position
        with monkeypatch.context() as patched:
            patched.setattr(scoring, "split_head", lambda model: None)
            full, full_outputs, _ = answer(model, tok, probe, 64, 7)
        assert full_outputs == outputs7 and full.greedy_match == sc7.greedy_match
        assert full.token_correct == sc7.token_correct
        for name in ("loss", "golden_prob", "token_conf"):
            assert (
                max(abs(a - b) for a, b in zip(getattr(full, name), getattr(sc7, name))) < 1e-5
            ), name
        assert len(sc.loss) == len(sc.golden_prob) == len(convs)
        assert (sc.decode_seconds > 0) == (decoded > 0)  # decoding is timed apart from the pass
        kinds |= {"reproduced" if ok else "decoded" for ok in sc.greedy_match}
        kinds.add(
            "partly right"
            if any(o and g.startswith(o[:1]) and o != g for o, g in zip(outputs, probe.golden))
            else ""
        )
        model.train()
        for step in range(30):
            batch = collate(
                [
                    {"input_ids": t["input_ids"], "labels": t["labels"]}
                    for t in train[(step * 8) % 40 : (step * 8) % 40 + 8]
                ]
            )
            model(**batch).loss.backward()
            opt.step()
            opt.zero_grad()
    # The stages covered both roads: answers read off the pass, and answers decoded after a wrong
    # token.
    assert {"reproduced", "decoded", "partly right"} <= kinds


def test_lora_model_answers_merged_as_it_generates_unmerged(tiny_models, monkeypatch):
    """Scoring merges LoRA into copies of the base weights (a faster pass): answers must still be
    what the unmerged adapter generates, losses the same to float rounding, and the base weights
    untouched after."""
    import torch
    from peft import LoraConfig, get_peft_model
    from peft.tuners.lora import LoraLayer
    from transformers import AutoModelForCausalLM

    from daemon.chat.render import encode_messages
    from daemon.models.generation import generate_texts
    from daemon.models.loading import load_tokenizer, resolve_model_path
    from daemon.training import scoring
    from daemon.training.data import PadCollator

    tok = load_tokenizer("builtin:tiny", tiny_models)
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(resolve_model_path("builtin:tiny", tiny_models))
    model = get_peft_model(
        base,
        LoraConfig(
            r=16,
            lora_alpha=32,
            target_modules="all-linear",
            modules_to_save=["lm_head"],
            task_type="CAUSAL_LM",
        ),
    )
    convs = _conversations()
    probe = scoring.prepare_probe(tok, convs, 512, "assistant")
    train = [vars(encode_messages(tok, c, 512)) for c in convs]
    collate = PadCollator(tok.pad_token_id)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    lora_layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
    seen = set()
    for stage in range(4):
        model.eval()
        reference = [
            t["text"]
            for t in generate_texts(
                model, tok, probe.prompts, max_new_tokens=min(64, probe.longest + 2), batch_size=16
            )
        ]
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        with scoring.lora_merged(model):
            # merged: the adapter's own path is off
            assert all(m.disable_adapters for m in lora_layers)
        sc, outputs, _ = scoring.answer(model, tok, probe, 64, 128)
        assert outputs == reference, f"stage {stage}"
        # put back bit for bit
        assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
        assert not any(m.disable_adapters for m in lora_layers)
        # too big to merge: the adapter's own path
        monkeypatch.setattr(scoring, "MERGE_BUDGET_BYTES", 0)
        sc_unmerged, outputs_unmerged, _ = scoring.answer(model, tok, probe, 64, 128)
        monkeypatch.undo()
        assert outputs_unmerged == outputs
        assert max(abs(a - b) for a, b in zip(sc.loss, sc_unmerged.loss)) < 1e-4
        seen |= {"reproduced" if ok else "decoded" for ok in sc.greedy_match}
        model.train()
        # the first 8 examples only, so that some are learned word for word early
        for _ in range(15):
            batch = collate(
                [{"input_ids": t["input_ids"], "labels": t["labels"]} for t in train[:8]]
            )
            model(**batch).loss.backward()
            opt.step()
            opt.zero_grad()
    assert seen == {"reproduced", "decoded"}


def test_a_model_without_a_reusable_cache_is_answered_whole_and_generated(
    tiny_models, monkeypatch
):
    """A model whose forward hands back no transformers Cache (remote code with its own cache, say)
    can neither share a batch's prefix nor continue decoding from the pass: it gets whole passes
    and generation from the prompt, with the same answers and scores."""
    import torch
    from transformers import AutoModelForCausalLM

    from daemon.models.generation import generate_texts
    from daemon.models.loading import load_tokenizer, resolve_model_path
    from daemon.training import scoring

    tok = load_tokenizer("builtin:tiny", tiny_models)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(
        resolve_model_path("builtin:tiny", tiny_models)
    ).eval()
    probe = scoring.prepare_probe(tok, _conversations()[:12], 512, "assistant")
    reference = [
        t["text"]
        for t in generate_texts(model, tok, probe.prompts, max_new_tokens=probe.longest + 2)
    ]
    sc, outputs, decoded = scoring.answer(model, tok, probe, 64, 128)

    # passes that start without a cache get none back (generate's keep theirs)
    def no_cache_back(forward):
        def call(*args, **kwargs):
            out = forward(*args, **kwargs)
            if kwargs.get("past_key_values") is None:
                out.past_key_values = None
            return out

        return call

    # the scoring pass calls the decoder alone (the output layer runs on the answer positions only)
    for module in (model, model.get_decoder()):
        monkeypatch.setattr(module, "forward", no_cache_back(module.forward))
    from_prompt = []

    def spy(model_, tok_, prompts, **kw):
        from_prompt.extend(prompts)
        return generate_texts(model_, tok_, prompts, **kw)

    # answer() imports it when it runs
    monkeypatch.setattr("daemon.models.generation.generate_texts", spy)
    sc2, outputs2, decoded2 = scoring.answer(model, tok, probe, 64, 128)
    # untrained: every answer decoded, here from its prompt
    assert decoded == decoded2 == len(from_prompt) == 12
    assert outputs == outputs2 == reference
    assert max(abs(a - b) for a, b in zip(sc.loss, sc2.loss)) < 1e-5
