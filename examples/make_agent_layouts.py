"""Write one sample per published agent layout (deterministic; run from the repo root:
`python examples/make_agent_layouts.py`). Written from each project's documented layout, with this
repository's own weather/time tasks (examples/make_agent_samples.py); no record is copied.

- `agent_llamafactory_v1.jsonl` (LLaMA-Factory's v1 data layout): 240 multi-turn records whose
  content is a list of `{"type": "text" | "reasoning" | "tool_call", "value": ...}` parts, a call's
  value a JSON string `{"name", "arguments"}`; `tool` turns hold the results; `tools` lists OpenAI
  function definitions. Every fourth record makes two calls in one turn (one value holding a
  list). The last two are broken on purpose: a call whose value is not JSON, a call to an
  undefined function.
- `agent_hermes.jsonl` (NousResearch function calling): 30 ShareGPT records, the tools inside the
  system turn's `<tools> … </tools>`, the calls in `<tool_call>` blocks (every third written as a
  Python dict with single quotes, as that layout does), the results in `<tool_response>`. The last
  is broken: a call to an undefined function.
- `agent_xlam.jsonl` (Salesforce xLAM / APIGen): 30 records of `query`, `tools` and `answers` (JSON
  strings), answered by one or two calls. The last is broken: an answer that is not a list.
- `agent_think.jsonl`: 20 prompt/completion records whose answer opens with `<think>…</think>`
  (DeepSeek-R1-style distillations).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from make_agent_samples import ASK_TIME, ASK_WEATHER, CITIES, SKIES, TOOLS

HERE = Path(__file__).resolve().parent
OPENAI_TOOLS = [{"type": "function", "function": t} for t in TOOLS]


def _call(name: str, city: str) -> dict:
    return {"name": name, "arguments": {"city": city}}


def _part(kind: str, value: object) -> dict:
    return {"type": kind, "value": value if isinstance(value, str) else json.dumps(value)}


def llamafactory_record(rng: random.Random, i: int) -> dict:
    city, other = rng.sample(CITIES, 2)
    temp, sky = rng.randint(-10, 35), rng.choice(SKIES)
    system = {
        "role": "system",
        "content": [_part("text", "You are a helpful assistant with tools.")],
    }
    if i % 4 == 3:  # two calls in one turn, as one value holding a list
        t2 = rng.randint(-10, 35)
        turns = [
            {
                "role": "user",
                "content": [_part("text", f"Compare the weather in {city} and {other}.")],
            },
            {
                "role": "assistant",
                "content": [
                    _part(
                        "reasoning",
                        f"Two cities: one get_weather call for {city}, one for {other}.",
                    ),
                    _part("tool_call", [_call("get_weather", city), _call("get_weather", other)]),
                ],
            },
            {
                "role": "tool",
                "content": [_part("text", json.dumps([{"temp_c": temp}, {"temp_c": t2}]))],
            },
            {
                "role": "assistant",
                "content": [_part("text", f"{city} is at {temp} °C and {other} at {t2} °C.")],
            },
        ]
    else:  # weather, then the time, each call in its own part; the second question in a new turn
        hour = f"{rng.randint(0, 23):02d}:{rng.choice(['00', '15', '30', '45'])}"
        turns = [
            {"role": "user", "content": [_part("text", rng.choice(ASK_WEATHER).format(c=city))]},
            {
                "role": "assistant",
                "content": [
                    _part("reasoning", f"The user asks about {city}; get_weather gives it."),
                    _part("tool_call", _call("get_weather", city)),
                ],
            },
            {"role": "tool", "content": [_part("text", json.dumps({"temp_c": temp, "sky": sky}))]},
            {
                "role": "assistant",
                "content": [_part("text", f"It is {temp} °C and {sky} in {city}.")],
            },
            {"role": "user", "content": [_part("text", rng.choice(ASK_TIME).format(c=other))]},
            {"role": "assistant", "content": [_part("tool_call", _call("get_time", other))]},
        ]
        if i % 4 == 1:  # and the answer to the second call
            turns += [
                {"role": "tool", "content": [_part("text", json.dumps({"time": hour}))]},
                {"role": "assistant", "content": [_part("text", f"It is {hour} in {other}.")]},
            ]
    return {"id": f"lf-{i:03d}", "tools": OPENAI_TOOLS, "messages": [system, *turns]}


def llamafactory_broken() -> list[dict]:
    ask = {"role": "user", "content": [_part("text", "What's the weather in Oslo?")]}
    return [
        {
            "id": "lf-broken-json",
            "tools": OPENAI_TOOLS,
            "messages": [
                ask,
                {
                    "role": "assistant",
                    "content": [{"type": "tool_call", "value": '{"name": "get_weather", '}],
                },
            ],
        },
        {
            "id": "lf-broken-unknown",
            "tools": OPENAI_TOOLS,
            "messages": [
                ask,
                {
                    "role": "assistant",
                    "content": [_part("tool_call", _call("get_forecast", "Oslo"))],
                },
            ],
        },
    ]


def hermes_record(rng: random.Random, i: int, name: str = "") -> dict:
    city = rng.choice(CITIES)
    temp, sky = rng.randint(-10, 35), rng.choice(SKIES)
    tools = "\n".join(json.dumps(t) for t in OPENAI_TOOLS)
    call = _call(name or "get_weather", city)
    written = str(call) if i % 3 == 2 else json.dumps(call)  # a Python dict: single quotes
    system = (
        "You are a function calling AI model. You are provided with "
        "function signatures within <tools></tools> XML tags.\n"
        "<tools>\n"
        f"{tools}\n"
        "</tools>\n"
        "For each function call return a json object within <tool_call></tool_call> XML tags."
    )
    return {
        "id": f"hermes-{i:02d}",
        "conversations": [
            {"from": "system", "value": system},
            {"from": "human", "value": rng.choice(ASK_WEATHER).format(c=city)},
            {"from": "gpt", "value": f"<tool_call>\n{written}\n</tool_call>"},
            {
                "from": "tool",
                "value": f"<tool_response>\n{json.dumps({'temp_c': temp, 'sky': sky})}\n"
                "</tool_response>",
            },
            {"from": "gpt", "value": f"It is {temp} °C and {sky} in {city}."},
        ],
    }


def xlam_record(rng: random.Random, i: int) -> dict:
    city, other = CITIES[i], CITIES[-1 - i]  # each city asked once: no duplicate records
    if i % 2:
        query, answers = (
            f"Weather in {city} and the time in {other}?",
            [_call("get_weather", city), _call("get_time", other)],
        )
    else:
        query, answers = rng.choice(ASK_TIME).format(c=city), [_call("get_time", city)]
    return {"id": i, "query": query, "tools": json.dumps(TOOLS), "answers": json.dumps(answers)}


def think_record(rng: random.Random, i: int) -> dict:
    a, b = rng.randint(10, 99), rng.randint(10, 99)
    return {
        "id": f"think-{i:02d}",
        "prompt": f"What is {a} + {b}?",
        "completion": f"<think>\n{a} plus {b}: the tens make {a // 10 * 10 + b // 10 * 10}, "
        f"the units {a % 10 + b % 10}, so {a + b}.\n</think>\n\n{a + b}",
    }


def _write(name: str, rows: list[dict]) -> None:
    (HERE / name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def main() -> None:
    rng = random.Random(11)
    _write(
        "agent_llamafactory_v1.jsonl",
        [llamafactory_record(rng, i) for i in range(240)] + llamafactory_broken(),
    )
    _write(
        "agent_hermes.jsonl",
        [hermes_record(rng, i) for i in range(30)] + [hermes_record(rng, 30, "get_forecast")],
    )
    xlam = [xlam_record(rng, i) for i in range(30)]
    xlam.append(
        {
            "id": 30,
            "query": "Weather in Oslo?",
            "tools": json.dumps(TOOLS),
            "answers": json.dumps(_call("get_weather", "Oslo")),
        }
    )
    _write("agent_xlam.jsonl", xlam)
    _write("agent_think.jsonl", [think_record(rng, i) for i in range(20)])


if __name__ == "__main__":
    main()
