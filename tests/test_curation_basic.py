"""Every line is accounted for once; bad lines are rejected records with their line numbers."""

import json

import pytest

from daemon.chat.formats import normalise
from daemon.config import CurationConfig, TrainConfig
from daemon.curation.curator import Curator
from daemon.errors import InputFileError
from daemon.models.loading import load_tokenizer
from tests.helpers import DEMO, write_jsonl


def test_demo_file_is_fully_accounted_for(tmp_path, tiny_models):
    tok = load_tokenizer("builtin:tiny", tiny_models)
    res = Curator(CurationConfig(), TrainConfig(), tokenizer=tok).run(DEMO, tmp_path / "ds")
    assert res.lines_read == 363
    assert res.total_accepted + res.rejected == 363
    rejected = [
        json.loads(x) for x in (tmp_path / "ds" / "rejected.jsonl").read_text().splitlines()
    ]
    assert {(r["line"], r["rejection_reason"]) for r in rejected} == {
        (41, "invalid_json"),
        (81, "validation_failed"),
        (121, "unknown_format"),
    }
    empty = next(r for r in rejected if r["line"] == 81)
    assert empty["rejection_details"]["detail"] == "empty_output" and empty["id"] == "demo-empty"
    stats = json.loads((tmp_path / "ds" / "stats.json").read_text())
    assert stats["accounted_for"] is True and stats["accepted"] == 360
    assert sum(stats["splits"].values()) == 360
    train = (tmp_path / "ds" / "train.jsonl").read_text().splitlines()
    assert len(train) == res.accepted["train"] > 300
    assert json.loads(train[0])["messages"][-1]["role"] == "assistant"


def test_split_is_deterministic(tmp_path, tiny_models):
    tok = load_tokenizer("builtin:tiny", tiny_models)
    a = Curator(CurationConfig(), TrainConfig(), tok).run(DEMO, tmp_path / "a")
    b = Curator(CurationConfig(), TrainConfig(), tok).run(DEMO, tmp_path / "b")
    assert a.accepted == b.accepted
    assert (tmp_path / "a" / "val.jsonl").read_text() == (tmp_path / "b" / "val.jsonl").read_text()


@pytest.mark.parametrize(
    "content, why",
    [
        (b"", "is empty"),
        (b"\x00\x01\x02binary\x00", "binary"),
        ("caf\u00e9 {}".encode("latin-1") * 40, "not UTF-8"),
    ],
)
def test_unreadable_files_raise_with_a_reason(tmp_path, content, why):
    f = tmp_path / "bad.jsonl"
    f.write_bytes(content)
    with pytest.raises(InputFileError, match=why):
        Curator(CurationConfig(), TrainConfig()).run(f, tmp_path / "ds")


def test_file_with_no_valid_record_fails_and_points_at_rejected(tmp_path):
    f = write_jsonl(
        tmp_path / "none.jsonl", ["{not json", {"foo": 1}, {"prompt": "x", "completion": ""}]
    )
    with pytest.raises(InputFileError, match="no valid record .*trainctl rejected"):
        Curator(CurationConfig(), TrainConfig()).run(f, tmp_path / "ds")
    assert len((tmp_path / "ds" / "rejected.jsonl").read_text().splitlines()) == 3


def test_formats_are_normalised_to_messages():
    alp = normalise(
        {
            "instruction": "Do",
            "input": "this",
            "output": "ok",
            "system": "S",
            "history": [["hi", "hello"]],
            "domain": "d",
        },
        1,
    )
    assert [m.role for m in alp.messages] == ["system", "user", "assistant", "user", "assistant"]
    assert alp.messages[3].content == "Do\n\nthis" and alp.meta == {"domain": "d"}
    sg = normalise(
        {
            "conversations": [
                {"from": "human", "value": "q"},
                {"from": "function_call", "value": '{"name": "f", "arguments": {}}'},
                {"from": "observation", "value": "42"},
                {"from": "gpt", "value": "a"},
            ]
        },
        2,
    )
    assert [m.role for m in sg.messages] == ["user", "assistant", "tool", "assistant"]
    assert sg.messages[1].tool_calls[0].name == "f"
    oa = normalise(
        {
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "hi"}]},
                {"role": "assistant", "content": "x", "loss_weight": 0},
            ]
        },
        3,
    )
    assert oa.messages[0].content == "hi" and oa.messages[1].train is False
    assert normalise({"prompt": "p", "completion": "c"}, 4).fmt == "prompt_completion"
    assert normalise({"text": "t"}, 5).messages[0].role == "assistant"
    assert normalise({"foo": 1}, 6) is None


def test_curation_tokenizer_is_the_training_tokenizer_without_torch(tmp_path, tiny_models):
    """`trainctl curate` loads builtin:tiny's tokenizer the light way (no torch import, ~3 s less
    start-up); it must count and render exactly as the tokenizer training uses, or too_long
    verdicts would disagree."""
    import subprocess
    import sys

    code = (
        "import sys; from pathlib import Path; from daemon.models.loading import "
        f"load_tokenizer; t = load_tokenizer('builtin:tiny', Path({str(tiny_models)!r}), "
        "light=True); print(type(t).__name__, 'torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out[1] == "False", "the light tokenizer imported torch"
    light = load_tokenizer("builtin:tiny", tiny_models, light=True)
    full = load_tokenizer("builtin:tiny", tiny_models)
    convs = [
        [
            {"role": "user", "content": "Uppercase: ünïcode ✓ 😀"},
            {"role": "assistant", "content": "ÜNÏCODE"},
        ],
        [
            {"role": "system", "content": "s"},
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": "a"},
            {"role": "tool", "content": '{"x": 1}'},
        ],
    ]
    for conv in convs:
        for gen in (False, True):
            text = full.apply_chat_template(conv, tokenize=False, add_generation_prompt=gen)
            assert (
                light.apply_chat_template(conv, tokenize=False, add_generation_prompt=gen) == text
            )
            ids = full(text, add_special_tokens=False)["input_ids"]
            assert light(text, add_special_tokens=False)["input_ids"] == ids
    assert (light.pad_token_id, light.eos_token_id) == (full.pad_token_id, full.eos_token_id)
