"""Agent and reasoning data: tool definitions, tool calls, tool results and reasoning come through
curation whole, render with the model's template (or the documented fallback), and train only where
the assistant writes."""

from __future__ import annotations

import json

import pytest

from daemon.chat.answers import answer_of_message, openai_message, same_answer
from daemon.chat.formats import normalise
from daemon.chat.messages import messages_of, tools_of
from daemon.chat.render import IGNORE, encode_messages, rendering_of
from daemon.config import CurationConfig, TrainConfig
from daemon.curation.curator import Curator
from daemon.home import Home
from tests.helpers import write_jsonl

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
TIME = {
    "name": "get_time",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}

# Public layouts, written for these tests.
SHAREGPT = {
    "id": "sg",
    "system": "You have tools.",
    "tools": json.dumps([WEATHER["function"], TIME]),
    "conversations": [
        {"from": "human", "value": "Weather in Oslo and the time in Rome?"},
        {
            "from": "function_call",
            "value": json.dumps(
                [
                    {"name": "get_weather", "arguments": {"city": "Oslo"}},
                    {"name": "get_time", "arguments": {"city": "Rome"}},
                ]
            ),
        },
        {"from": "observation", "value": '[{"temp_c": 4}, {"time": "14:05"}]'},
        {"from": "gpt", "value": "Oslo is at 4 °C; in Rome it is 14:05."},
    ],
}
OPENAI = {
    "id": "oa",
    "tools": [WEATHER],
    "messages": [
        {"role": "user", "content": "Weather in Lima?"},
        {
            "role": "assistant",
            "content": None,
            "reasoning_content": "I should look it up.",
            "tool_calls": [
                {
                    "id": "call_7",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Lima"}'},
                }
            ],
        },
        {
            "role": "tool",
            "tool_call_id": "call_7",
            "name": "get_weather",
            "content": '{"temp_c": 19}',
        },
        {"role": "assistant", "content": "19 °C in Lima.", "thinking": "The tool said 19."},
    ],
}
PARTS = {
    "id": "parts",
    "tools": [WEATHER],
    "messages": [
        {"role": "user", "content": "Is it cold in Kyiv?"},
        {
            "role": "assistant",
            "content": [
                {"type": "reasoning", "text": "Check Kyiv first."},
                {
                    "type": "tool_call",
                    "id": "c1",
                    "name": "get_weather",
                    "arguments": {"city": "Kyiv"},
                },
            ],
        },
    ],
}


def _tiny_tok(home):
    from daemon.home import Home
    from daemon.models.loading import load_tokenizer

    return load_tokenizer("builtin:tiny", Home.open(home).models)


def _curate(tmp_path, records, tok=None):
    src = write_jsonl(tmp_path / "agent.jsonl", records)
    out = tmp_path / "ds"
    cfg = CurationConfig(val_fraction=0, test_fraction=0)
    # tiny: one token a byte
    result = Curator(cfg, TrainConfig(max_length=2048), tok).run(src, out)
    rows = [json.loads(x) for x in (out / "train.jsonl").read_text().splitlines()]
    rejected = [json.loads(x) for x in (out / "rejected.jsonl").read_text().splitlines()]
    return result, rows, rejected


def test_every_call_result_and_reasoning_survives_curation_and_rendering(home, tmp_path):
    tok = _tiny_tok(home)
    _, rows, rejected = _curate(tmp_path, [SHAREGPT, OPENAI, PARTS], tok)
    assert rejected == []
    by_id = {r["id"]: r for r in rows}
    sg = by_id["sg"]
    assert [t["function"]["name"] for t in sg["tools"]] == ["get_weather", "get_time"]
    assert sg["messages"][2]["tool_calls"] == [
        {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}},
        {"type": "function", "function": {"name": "get_time", "arguments": {"city": "Rome"}}},
    ]
    assert sg["messages"][3] == {"role": "tool", "content": '[{"temp_c": 4}, {"time": "14:05"}]'}
    oa = by_id["oa"]["messages"]
    assert oa[1] == {
        "role": "assistant",
        "content": "",
        "reasoning": "I should look it up.",
        "tool_calls": [
            {
                "id": "call_7",
                "type": "function",
                "function": {"name": "get_weather", "arguments": {"city": "Lima"}},
            }
        ],
    }
    assert oa[2] == {
        "role": "tool",
        "content": '{"temp_c": 19}',
        "tool_call_id": "call_7",
        "name": "get_weather",
    }
    assert oa[3]["reasoning"] == "The tool said 19."
    assert by_id["parts"]["messages"][1]["reasoning"] == "Check Kyiv first."
    assert "tools" not in {k for r in rows for k in r.get("metadata", {})}

    # builtin:tiny's template knows none of it: the fallback renders every part, and the rendering
    # says so.
    r = rendering_of(tok)
    assert (r.tools, r.tool_calls, r.reasoning_field) == (False, False, None)
    text = tok.decode(
        encode_messages(tok, messages_of(by_id["oa"]), 2048, tools=tools_of(by_id["oa"])).input_ids
    )
    for part in (
        '"name": "get_weather"',
        "<tools>",
        "<think>\nI should look it up.\n</think>",
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Lima"}}\n</tool_call>',
        '<|tool|>{"temp_c": 19}',
        "<think>\nThe tool said 19.\n</think>\n\n19 °C in Lima.",
    ):
        assert part in text
    sg_text = tok.decode(encode_messages(tok, messages_of(sg), 2048, tools=tools_of(sg)).input_ids)
    assert sg_text.count("<tool_call>\n{") == 2 and '"city": "Rome"' in sg_text


def _labelled_text(tok, enc):
    """The trained tokens, one run after another, each run followed by `|` (builtin:tiny: one token
    per byte, so this is exact character by character)."""
    runs, run = [], []
    for i, lab in zip(enc.input_ids + [None], enc.labels + [IGNORE]):
        if lab != IGNORE:
            run.append(i)
        elif run:
            runs.append(tok.decode(run))
            run = []
    return "".join(f"{r}|" for r in runs)


def test_labels_cover_exactly_the_assistant_reasoning_calls_and_answers(home):
    tok = _tiny_tok(home)
    ex = normalise(OPENAI, 1)
    enc = encode_messages(tok, ex.messages, 2048, tools=ex.tools)
    call = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Lima"}}\n</tool_call>'
    assert _labelled_text(tok, enc) == (
        "<think>\n"
        "I should look it up.\n"
        "</think>\n"
        "\n"
        f"{call}<|end|>|<think>\n"
        "The tool said 19.\n"
        "</think>\n"
        "\n"
        "19 °C in Lima.<|end|>|"
    )
    # Distilling answers from traces: the reasoning block is masked, the call and the answer still
    # train.
    enc = encode_messages(tok, ex.messages, 2048, tools=ex.tools, reasoning_loss=False)
    assert _labelled_text(tok, enc) == f"{call}<|end|>|19 °C in Lima.<|end|>|"
    # loss_on = "all" trains the user turn too, never the tool result, the tool definitions or the
    # added system turn.
    labelled = _labelled_text(tok, encode_messages(tok, ex.messages, 2048, "all", tools=ex.tools))
    assert (
        "Weather in Lima?" in labelled and "temp_c" not in labelled and "<tools>" not in labelled
    )


# A template that renders tools and structured calls itself (Hermes/Qwen 2.5 style, on
# builtin:tiny's markers).
NATIVE_TOOLS = (
    "{%- if tools %}<|system|>Tools:{% for t in tools %} {{ t.function.name }}{% "
    "endfor %}<|end|>{% endif %}{%- for m in messages %}<|{{ m.role }}|>{{ m.content }}"
    '{%- for c in m.tool_calls or [] %}<tool_call>{"name": "{{ c.function.name }}", "arguments": '
    "{{ c.function.arguments | tojson }}}</tool_call>{% endfor %}<|end|>{% "
    "endfor %}{%- if add_generation_prompt %}<|assistant|>{% endif %}"
)

# Qwen3-style: reasoning in `reasoning_content`, kept only for assistant turns after the last user
# message.
DROPS_REASONING = (
    "{%- set ns = namespace(last=-1) %}{% for m in messages %}{% if m.role == 'user' "
    "%}{% set ns.last = loop.index0 %}{% endif %}{% endfor %}{%- for m in messages "
    "%}<|{{ m.role }}|>{%- if m.role == 'assistant' and loop.index0 > ns.last "
    "%}<think>{{ m.reasoning_content or '' }}</think>{% endif %}{{ m.content "
    "}}<|end|>{% endfor %}{%- if add_generation_prompt %}<|assistant|>{% endif %}"
)


def test_a_template_with_tool_support_renders_them_itself(home):
    tok = _tiny_tok(home)
    tok.chat_template = NATIVE_TOOLS
    r = rendering_of(tok)
    assert (r.tools, r.tool_calls, r.tool_role, r.reasoning_field) == (True, True, True, None)
    ex = normalise(PARTS, 1)
    enc = encode_messages(tok, ex.messages, 2048, tools=ex.tools)
    text = tok.decode(enc.input_ids)
    assert text.startswith("<|system|>Tools: get_weather<|end|>") and "# Tools" not in text
    assert _labelled_text(tok, enc) == (
        "<think>\nCheck Kyiv first.\n</think>\n\n"
        '<tool_call>{"name": "get_weather", "arguments": {"city": "Kyiv"}}</tool_call>'
        "<|end|>|"
    )
    assert "template" in r.describe()["tool_calls"] and "fallback" in r.describe()["reasoning"]


def test_a_template_that_drops_earlier_reasoning_still_trains_every_assistant_turn(home):
    tok = _tiny_tok(home)
    tok.chat_template = DROPS_REASONING
    assert rendering_of(tok).reasoning_field == "reasoning_content"
    ex = normalise(
        {
            "messages": [
                {"role": "user", "content": "2+2?"},
                {"role": "assistant", "content": "4", "reasoning": "two twos"},
                {"role": "user", "content": "3+3?"},
                {"role": "assistant", "content": "6", "reasoning": "two threes"},
            ]
        },
        1,
    )
    enc = encode_messages(tok, ex.messages, 2048)
    # The whole conversation, as the template renders it, trains the last turn with its reasoning
    # ...
    assert tok.decode(enc.input_ids).count("two twos") == 0
    assert _labelled_text(tok, enc) == "<think>two threes</think>6<|end|>|"
    # ... and the first turn trains on its own rendering, where its reasoning is shown.
    assert len(enc.extra) == 1 and len(enc.sequences) == 2
    assert _labelled_text(tok, enc.extra[0]) == "<think>two twos</think>4<|end|>|"
    assert tok.decode(enc.extra[0].input_ids).startswith("<|user|>2+2?<|end|><|assistant|>")


def test_new_validation_details_name_their_line(home, tmp_path):
    tok = _tiny_tok(home)
    ask = {"role": "user", "content": "Weather in Oslo?"}

    def call(fn):
        return {"messages": [ask, {"role": "assistant", "tool_calls": [fn]}], "tools": [WEATHER]}

    records = [
        # fine
        call(
            {
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
            }
        ),
        call(
            {"type": "function", "function": {"name": "get_weather", "arguments": "{city: Oslo"}}
        ),
        call({"type": "function", "function": {"arguments": "{}"}}),
        call({"type": "function", "function": {"name": "get_forecast", "arguments": "{}"}}),
        {
            "messages": [
                {"role": "user", "content": "  "},
                {"role": "assistant", "content": "hi there"},
            ]
        },
        {
            "messages": [
                ask,
                {"role": "assistant", "content": [{"type": "reasoning", "text": "hmm, thinking"}]},
            ]
        },
        {"messages": [ask, {"role": "assistant", "content": "x"}], "tools": "[{not json"},
    ]
    result, rows, rejected = _curate(tmp_path, records, tok)
    assert len(rows) == 1 and rows[0]["messages"][1]["tool_calls"][0]["function"]["arguments"] == {
        "city": "Oslo"
    }
    got = {r["line"]: r["rejection_details"]["detail"] for r in rejected}
    assert got == {
        2: "bad_tool_call",
        3: "bad_tool_call",
        4: "unknown_tool",
        5: "empty_prompt",
        6: "empty_output",
        7: "bad_tools",
    }
    assert (
        "get_forecast" in next(r for r in rejected if r["line"] == 4)["rejection_details"]["error"]
    )


def test_tools_are_part_of_the_duplicate_keys_and_calls_are_not_prose(home, tmp_path):
    call = {"function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}
    convo = [
        {"role": "user", "content": "Weather in Oslo please, I am going out soon"},
        {"role": "assistant", "tool_calls": [call]},
    ]
    other = {
        "type": "function",
        "function": {**WEATHER["function"], "description": "Forecast for a city."},
    }
    records = [
        {"messages": convo, "tools": [WEATHER]},
        {"messages": convo, "tools": [other]},
        {"messages": convo, "tools": [WEATHER]},
    ]
    _, rows, rejected = _curate(tmp_path, records, _tiny_tok(home))
    assert [r["line"] for r in rows] == [1, 2]  # differing tools: different examples
    assert [(r["line"], r["rejection_reason"]) for r in rejected] == [(3, "duplicate")]
    # A tool-call-only answer has no prose: the prose components have no say (it is not incoherent
    # JSON).
    assert rows[0]["quality_score"] == 1.0


def test_exact_match_compares_calls_by_name_and_parsed_arguments():
    golden = '<tool_call>\n{"name": "f", "arguments": {"a": 1, "b": [1, 2]}}\n</tool_call>'
    assert same_answer('<tool_call>{"name":"f","arguments":{"b":[1,2],"a":1}}</tool_call>', golden)
    assert same_answer(
        '<think>other words</think><tool_call>{"name": "f", '
        '"arguments": "{\\"a\\": 1, \\"b\\": [1, 2]}"}</tool_call>',
        golden,
    )
    assert not same_answer(
        '<tool_call>{"name": "f", "arguments": {"a": 2, "b": [1, 2]}}</tool_call>', golden
    )
    assert not same_answer(
        '<tool_call>{"name": "g", "arguments": {"a": 1, "b": [1, 2]}}</tool_call>', golden
    )
    assert same_answer("  The  answer.", "The answer.") and not same_answer(
        "The answer", "An answer"
    )
    # The bench writes calls in the OpenAI output shape and reads them back the same.
    msg = openai_message(
        '<think>hmm</think>Let me check.\n<tool_call>{"name": "f", "arguments": {"a": 1}}'
        "</tool_call>",
        "call_x",
    )
    assert msg["content"] == "Let me check." and msg["reasoning_content"] == "hmm"
    assert msg["tool_calls"] == [
        {"id": "call_x_0", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
    ]
    assert same_answer(
        answer_of_message(msg),
        'Let me check.<tool_call>{"name": "f", "arguments": {"a": 1}}</tool_call>',
    )
    assert openai_message("plain text") == {"role": "assistant", "content": "plain text"}


def test_bench_prompts_carry_tools_to_the_template(home, tmp_path):
    from daemon.bench.prompts import iter_prompts
    from daemon.bench.runner import prompt_ids

    tok = _tiny_tok(home)
    batch = {
        "custom_id": "q1",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {
            "messages": [{"role": "user", "content": "Weather in Oslo?"}],
            "tools": [WEATHER],
        },
    }
    f = write_jsonl(tmp_path / "prompts.jsonl", [batch, OPENAI])
    first, second = list(iter_prompts(f))
    assert first.tools == [WEATHER] and first.error is None
    text = tok.decode(prompt_ids(tok, first.messages, first.tools))
    assert '"name": "get_weather"' in text and text.endswith("<|assistant|>")
    # A record's golden answer is the reference, its reasoning and calls included; the earlier call
    # is in the prompt.
    assert second.reference.startswith("<think>\nThe tool said 19.\n</think>")
    assert "<tool_call>" in tok.decode(prompt_ids(tok, second.messages, second.tools))


def test_flags_show_calls_readably(home):
    from typer.testing import CliRunner

    from cli.app import app
    from daemon.home import Home
    from daemon.runs.flag_store import FlagStore

    ex = normalise(PARTS, 1)
    golden = ex.answer_message.as_text()
    FlagStore(Home.open(home).flagged_file).add(
        [
            {
                "reason": "mismatch",
                "prompt": "Is it cold in Kyiv?",
                "golden": golden,
                "matches": False,
                "output": '<tool_call>{"name": "get_weather", "arguments": {"city": '
                '"Kiev"}}</tool_call>',
                "answer": ex.answer_message.to_row(),
                "tools": ex.tools,
                "messages": [ex.messages[0].to_row()],
            }
        ]
    )
    import cli.app

    wide = cli.app.console.width
    cli.app.console.width = 400  # no folding inside the table's cells
    try:
        shown = CliRunner().invoke(app, ["flags", "--home", str(home)])
    finally:
        cli.app.console.width = wide
    assert shown.exit_code == 0, shown.output
    assert (
        "thinking: Check Kyiv first." in shown.output
        and '→ get_weather({"city": "Kyiv"})' in shown.output
    )
    assert '→ get_weather({"city": "Kiev"})' in shown.output


@pytest.mark.parametrize("path", ["examples/agent_tools.jsonl", "examples/agent_reasoning.jsonl"])
def test_sample_agent_files_curate(home, tmp_path, path):
    from tests.helpers import ROOT

    records = [json.loads(x) for x in (ROOT / path).read_text().splitlines()]
    result, rows, rejected = _curate(tmp_path, records, _tiny_tok(home))
    reasons = {
        r["line"]: r["rejection_details"].get("detail", r["rejection_reason"]) for r in rejected
    }
    if "tools" in path:  # the four broken on purpose, and one true duplicate
        assert reasons == {
            181: "duplicate",
            297: "bad_tool_call",
            298: "bad_tool_call",
            299: "unknown_tool",
            300: "empty_prompt",
        }
        assert (
            all(r["tools"] for r in rows)
            and sum(bool(r["messages"][-1].get("tool_calls")) for r in rows) > 90
        )
    else:
        assert (
            reasons == {}
            and sum(bool(m.get("reasoning")) for r in rows for m in r["messages"]) == 50
        )


@pytest.mark.slow
def test_a_tool_use_file_trains_end_to_end_on_the_real_model(real_home, tmp_path):
    """100 ShareGPT tool-use records on builtin:smollm2-135m: the calls reach the prompt and the
    labels through the fallback rendering (reported), and evolution, flags and the bench show
    them."""
    from typer.testing import CliRunner

    from cli.app import app
    from tests.helpers import ROOT

    runner = CliRunner()
    home = real_home
    Home(home).settings_file.write_text(
        "[train]\n"
        "evolution_examples = 16\n"
        "fixed_eval_examples = 16\n"
        "final_eval_examples = 16\n"
        "eval_steps = 6\n"
    )
    src = tmp_path / "tools.jsonl"
    src.write_text(
        "".join((ROOT / "examples" / "agent_tools.jsonl").read_text().splitlines(True)[:100])
    )
    r = runner.invoke(app, ["train", str(src), "--home", str(home), "--epochs", "1"])
    assert r.exit_code == 0, r.output
    run = Home(home).run_dir(1)
    rendering = json.loads((run / "config.json").read_text())["rendering"]
    assert (
        rendering["tool_calls"] == "fallback: <tool_call> blocks"
        and rendering["rows_with"]["tool_calls"] > 80
    )
    status = json.loads(Home(home).training_status.read_text())
    assert status["rendering"].startswith(rendering["summary"]) and status["state"] == "done"
    trained = rendering["by_layout"]["sharegpt"]
    assert (
        trained["records"] == trained["with_tools"]
        and trained["calls_trained"] >= trained["with_calls"] > 80
    )
    assert f"{trained['calls_trained']} calls" in status["rendering"]
    assert status["test_exact_match"] > status["base_test_exact_match"]

    # Evolution: a call as the golden answer, and the model writing it by the last snapshot.
    snaps = sorted(Home(home).evolution_root.glob("*/step_*.json"))
    last = json.loads(snaps[-1].read_text())
    calls = [e for e in last["examples"] if "<tool_call>" in e["expected_output"]]
    assert calls and any(e["exact_match"] for e in calls)
    shown = runner.invoke(
        app, ["evolution", "--home", str(home), "--example", calls[0]["example_id"]]
    )
    assert shown.exit_code == 0 and "→ get_" in shown.output
    # Flags keep the golden turn as a row and the record's tools: exported, the example comes back
    # whole.
    flags = json.loads(Home(home).flagged_file.read_text())["flags"]
    assert flags and all(f["answer"]["role"] == "assistant" and f["tools"] for f in flags)
    out = runner.invoke(app, ["flags", "export", "fixes.jsonl", "--home", str(home)])
    assert out.exit_code == 0, out.output
    back = [
        normalise(json.loads(x), i)
        for i, x in enumerate((home / "fixes.jsonl").read_text().splitlines(), 1)
    ]
    assert all(ex.tools and ex.tools[0]["function"]["name"] == "get_weather" for ex in back)

    # The bench: OpenAI batch lines with body.tools; the tuned model's calls come back in the
    # OpenAI shape.
    tools = json.loads(
        json.loads((ROOT / "examples" / "agent_tools.jsonl").read_text().splitlines()[0])["tools"]
    )
    prompts = tmp_path / "ask.jsonl"
    write_jsonl(
        prompts,
        [
            {
                "custom_id": f"t{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "messages": [
                        {"role": "system", "content": "You are a helpful assistant with tools."},
                        {"role": "user", "content": f"What time is it in {city}?"},
                    ],
                    "tools": [{"type": "function", "function": t} for t in tools],
                },
            }
            for i, city in enumerate(["Oslo", "Lima", "Tokyo"])
        ],
    )
    b = runner.invoke(
        app,
        [
            "bench",
            "run",
            "--prompts",
            str(prompts),
            "--adapter",
            str(run / "adapter"),
            "--name",
            "ask",
            "--home",
            str(home),
            "--max-tokens",
            "48",
        ],
    )
    assert b.exit_code == 0, b.output
    rows = [
        json.loads(x)
        for x in (Home(home).bench_root / "ask" / "results.jsonl").read_text().splitlines()
    ]
    choices = [row["response"]["body"]["choices"][0] for row in rows]
    made = [
        (c["finish_reason"], c["message"]["tool_calls"][0]["function"])
        for c in choices
        if c["message"].get("tool_calls")
    ]
    assert len(made) >= 2, choices
    assert all(
        reason == "tool_calls" and fn["name"] == "get_time" and json.loads(fn["arguments"])["city"]
        for reason, fn in made
    )


LAYOUTS = {  # sample file -> (layout, {line: why rejected})
    "examples/agent_llamafactory_v1.jsonl": (
        "llamafactory_v1",
        {241: "bad_tool_call", 242: "unknown_tool"},
    ),
    "examples/agent_hermes.jsonl": ("hermes", {31: "unknown_tool"}),
    "examples/agent_xlam.jsonl": ("xlam", {31: "bad_tool_call"}),
    "examples/agent_think.jsonl": ("prompt_completion", {}),
}


@pytest.mark.parametrize("path", sorted(LAYOUTS))
def test_each_published_layout_curates_and_its_calls_and_reasoning_reach_the_tokens(
    home, tmp_path, path
):
    from daemon.chat.render import encode_messages
    from tests.helpers import ROOT

    layout, broken = LAYOUTS[path]
    records = [json.loads(x) for x in (ROOT / path).read_text().splitlines()]
    assert {normalise(r, i).fmt for i, r in enumerate(records, 1) if i not in broken} == {layout}
    tok = _tiny_tok(home)
    result, rows, rejected = _curate(tmp_path, records, tok)
    reasons = {
        r["line"]: r["rejection_details"].get("detail", r["rejection_reason"]) for r in rejected
    }
    assert reasons == broken, [(r["line"], r["rejection_details"]) for r in rejected]
    assert len(rows) == len(records) - len(broken)
    calls = [c for r in rows for m in r["messages"] for c in m.get("tool_calls", [])]
    thoughts = [m["reasoning"] for r in rows for m in r["messages"] if m.get("reasoning")]
    # inline <think> became the reasoning field, not the answer's text
    if layout == "prompt_completion":
        assert len(thoughts) == len(rows) and all(
            "<think>" not in r["messages"][-1]["content"] for r in rows
        )
    else:
        assert all(r["tools"] for r in rows) and len(calls) >= len(rows)
        assert all(isinstance(c["function"]["arguments"], dict) for c in calls)
    if layout == "llamafactory_v1":
        assert len(thoughts) >= len(rows) and any(
            len(m.get("tool_calls", [])) == 2 for r in rows for m in r["messages"]
        )
    if layout == "hermes":  # the blocks became structure: no tag is left in the text
        text = " ".join(m["content"] for r in rows for m in r["messages"] if m["role"] != "system")
        assert not any(tag in text for tag in ("<tools>", "<tool_call>", "<tool_response>"))
        # single quotes read
        assert rows[2]["messages"][2]["tool_calls"][0]["function"]["arguments"]["city"]
        assert all(
            "function signatures" in r["messages"][0]["content"]
            and '"name": "get_weather"'
            not in
            # the instruction stays; the definitions are `tools`
            r["messages"][0]["content"]
            for r in rows
        )
    # In the rendered training text: the calls and the reasoning, and the labels on them
    row = rows[0]
    enc = encode_messages(tok, messages_of(row), 4096, tools=tools_of(row))
    text, trained = tok.decode(enc.input_ids), _labelled_text(tok, enc)
    for m in row["messages"]:
        for c in m.get("tool_calls", []):
            written = json.dumps(
                {"name": c["function"]["name"], "arguments": c["function"]["arguments"]},
                ensure_ascii=False,
            )
            assert written in text and written in trained
        if m.get("reasoning"):
            assert m["reasoning"] in text and m["reasoning"] in trained
