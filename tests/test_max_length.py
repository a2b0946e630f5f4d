"""train.max_length: "auto" keeps 99% of the curated records whole; a longer conversation loses its
oldest turns first (the system turn, the tools and the last answer stay); one that keeps no trained
token is rejected, saying which max_length would keep it."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from cli.app import app
from daemon.chat.messages import Message, ToolCall, messages_of, tools_of
from daemon.chat.render import IGNORE, encode_messages, measure_lengths
from daemon.config import CurationConfig, TrainConfig
from daemon.curation.curator import Curator
from daemon.models.max_length import round_up
from tests.helpers import write_jsonl

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def _tok(home):
    from daemon.home import Home
    from daemon.models.loading import load_tokenizer

    return load_tokenizer("builtin:tiny", Home.open(home).models)  # one token a byte


def _agent(first_prompt: str, last_prompt: str = "And in Oslo?") -> dict:
    return {
        "tools": [WEATHER],
        "messages": [
            {"role": "system", "content": "You answer with the weather tool."},
            {"role": "user", "content": first_prompt},
            {
                "role": "assistant",
                "content": "Early answer about the first city, which it got from memory.",
            },
            {"role": "user", "content": last_prompt},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": {"city": "Oslo"}},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": '{"temp_c": 4}'},
            {"role": "assistant", "content": "FINAL: 4 degrees in Oslo."},
        ],
    }


def _trained(tok, enc) -> str:
    return tok.decode([t for t, label in zip(enc.input_ids, enc.labels) if label != IGNORE])


def test_a_long_conversation_loses_its_oldest_exchange_and_keeps_system_tools_and_last_answer(
    home,
):
    tok = _tok(home)
    messages = [
        Message("system", "You answer with the weather tool."),
        Message("user", "Tell me a long story about Lima. " * 20),
        Message("assistant", "EARLY ANSWER " * 10),
        Message("user", "And in Oslo?"),
        Message("assistant", "", tool_calls=[ToolCall("get_weather", {"city": "Oslo"}, "c1")]),
        Message("tool", '{"temp_c": 4}', tool_call_id="c1"),
        Message("assistant", "FINAL: 4 degrees in Oslo."),
    ]
    whole = encode_messages(tok, messages, 4096, tools=[WEATHER])
    assert not whole.cut and whole.dropped == 0
    limit = len(whole.input_ids) - 100  # the first exchange (~800 tokens) has to go; the rest fits
    enc = encode_messages(tok, messages, limit, tools=[WEATHER])
    text, trained = tok.decode(enc.input_ids), _trained(tok, enc)
    assert len(enc.input_ids) <= limit and enc.dropped == 2 and not enc.cut
    # system and tools
    assert "You answer with the weather tool." in text and '"name": "get_weather"' in text
    assert "long story about Lima" not in text and "EARLY ANSWER" not in trained
    # the call and the answer
    assert "FINAL: 4 degrees in Oslo." in trained and '"city": "Oslo"' in trained
    # the result is read, never trained
    assert '"temp_c": 4' in text and '"temp_c": 4' not in trained
    # Shorter than even the last exchange: that exchange is cut at the right end, its start still
    # trains.
    last = measure_lengths(tok, [(messages, [WEATHER])], "assistant")[0]
    short = encode_messages(tok, messages, last.last_exchange - 10, tools=[WEATHER])
    assert short.cut and short.dropped == 2 and '"city": "Oslo"' in _trained(tok, short)


def test_curation_keeps_a_record_its_last_exchange_fits_and_rejects_one_it_does_not(
    home, tmp_path
):
    tok = _tok(home)
    # a long first prompt: the old right cut lost it all
    records = [
        _agent("Weather in Lima, please. " * 40),
        # both
        _agent("Hello there. " * 40, last_prompt="And in Oslo? " + "Please be precise. " * 40),
        _agent("Hi."),
    ]
    src = write_jsonl(tmp_path / "in.jsonl", records)
    out = tmp_path / "ds"
    Curator(CurationConfig(val_fraction=0, test_fraction=0), TrainConfig(max_length=512), tok).run(
        src, out
    )
    kept = [json.loads(x)["line"] for x in (out / "train.jsonl").read_text().splitlines()]
    (rejected,) = [json.loads(x) for x in (out / "rejected.jsonl").read_text().splitlines()]
    assert kept == [1, 3] and rejected["line"] == 2
    details = rejected["rejection_details"]
    assert details["detail"] == "no_trainable_tokens" and details["max_length"] == 512
    n = measure_lengths(tok, [(messages_of(records[1]), tools_of(records[1]))], "assistant")[0]
    assert details["keeps_at"] == round_up(n.last_exchange) > 512
    # ... and at that length it is kept.
    again = tmp_path / "again"
    Curator(
        CurationConfig(val_fraction=0, test_fraction=0),
        TrainConfig(max_length=details["keeps_at"]),
        tok,
    ).run(src, again)
    assert len((again / "train.jsonl").read_text().splitlines()) == 3
    said = CliRunner().invoke(app, ["rejected", str(out), "--home", str(home)])
    assert said.exit_code == 0, said.output
    assert f"train.max_length = {details['keeps_at']} keeps them all" in " ".join(
        said.output.split()
    )


def test_auto_keeps_99_percent_whole_and_settles_the_outlier_it_cannot_keep(home, tmp_path):
    """200 records of spread lengths and one whose last prompt alone is longer than the chosen
    length: the length is the 99th percentile rounded up to 64, and the outlier is rejected, saying
    which length would keep it."""
    tok = _tok(home)
    records = [
        {
            "id": f"r{i}",
            "prompt": f"Write out item {i}: " + "many words here " * (i % 23),
            "completion": f"Item {i} reads " + "a calm river " * (1 + i % 17),
        }
        for i in range(200)
    ]
    records.append(
        {
            "id": "outlier",
            "prompt": "Summarise: " + "a very long prompt with words " * 40,
            "completion": "Short.",
        }
    )
    src = write_jsonl(tmp_path / "in.jsonl", records)
    out = tmp_path / "ds"
    cur = CurationConfig(
        val_fraction=0.1,
        test_fraction=0,
        near_dup_threshold=0.99,
        min_quality=0.0,
        min_diversity=0.0,
    )
    result = Curator(cur, TrainConfig(), tok).run(src, out)  # max_length = "auto", the default
    stats = json.loads((out / "stats.json").read_text())
    chosen = stats["max_length"]
    rows = [
        json.loads(x)
        for split in ("train", "val")
        for x in (out / f"{split}.jsonl").read_text().splitlines()
    ]
    lengths = sorted(
        n.whole
        for n in measure_lengths(tok, [(messages_of(r), tools_of(r)) for r in rows], "assistant")
    )
    assert chosen["setting"] == "auto" and chosen["measured"] == chosen["of"] == len(rows) + 1
    assert (
        chosen["value"] == round_up(chosen["share_tokens"]) and chosen["value"] < chosen["ceiling"]
    )
    assert sum(n <= chosen["value"] for n in lengths) >= 0.99 * len(lengths)
    assert chosen["context"] == 2048 and chosen["capped_by"] is None
    (outlier,) = [json.loads(x) for x in (out / "rejected.jsonl").read_text().splitlines()]
    assert outlier["id"] == "outlier" and outlier["line"] == 201
    assert outlier["rejection_details"]["detail"] == "no_trainable_tokens"
    assert outlier["rejection_details"]["max_length"] == chosen["value"]
    assert outlier["rejection_details"]["keeps_at"] > chosen["value"]
    assert (
        result.total_accepted == len(rows) == 200
        and stats["rejected"] == 1
        and stats["accounted_for"]
    )
    assert stats["splits"]["train"] + stats["splits"]["val"] == 200
