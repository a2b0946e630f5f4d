"""Write the agent sample files (deterministic; run from the repo root: `python
examples/make_agent_samples.py`).

- `agent_tools.jsonl`: 300 ShareGPT tool-use records in the LLaMA-Factory/Glaive layout — a `tools`
  JSON string, `function_call` turns (one call, or a list of two), `observation` turns, a final
  `gpt` answer — about a third of them ending at the call itself (a tool-call-only answer). The
  last four are broken on purpose, one way each: arguments that are not JSON, a call with no name,
  a call to a function the record does not define, no prompt.
- `agent_reasoning.jsonl`: 50 OpenAI-style records whose assistant content is a list of parts: a
  `reasoning` part, then a `text` answer, or (every fifth) a `tool_call` part instead.

The tasks are rules a small model learns from a few hundred examples: call the right function with
the city from the question; answer with the figures the tool returned; add two numbers.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
CITIES = [
    "Oslo",
    "Rome",
    "Lima",
    "Cairo",
    "Tokyo",
    "Paris",
    "Quito",
    "Dakar",
    "Hanoi",
    "Perth",
    "Berlin",
    "Madrid",
    "Vienna",
    "Prague",
    "Dublin",
    "Lisbon",
    "Athens",
    "Warsaw",
    "Seoul",
    "Manila",
    "Nairobi",
    "Bogota",
    "Havana",
    "Denver",
    "Boston",
    "Austin",
    "Halifax",
    "Reykjavik",
    "Tunis",
    "Accra",
    "Kyiv",
    "Riga",
    "Sofia",
    "Bern",
    "Zagreb",
    "Tallinn",
    "Vilnius",
    "Minsk",
    "Baku",
    "Tbilisi",
]
SKIES = ["sunny", "cloudy", "rainy", "windy", "foggy", "snowy"]
TOOLS = [
    {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
    {
        "name": "get_time",
        "description": "Local time in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
]
ASK_WEATHER = [
    "What's the weather in {c}?",
    "How is the weather in {c} right now?",
    "Weather report for {c}, please.",
    "Is it nice out in {c} today?",
]
ASK_TIME = ["What time is it in {c}?", "Tell me the local time in {c}.", "Current time in {c}?"]


def _call(name: str, city: str) -> dict:
    return {"name": name, "arguments": {"city": city}}


def tools_record(rng: random.Random, i: int, time_asks: list[tuple[str, str]]) -> dict:
    city, other = rng.sample(CITIES, 2)
    kind = i % 3
    conv = []
    if kind == 0:  # weather: call, observation, answer
        temp, sky = rng.randint(-10, 35), rng.choice(SKIES)
        conv = [
            {"from": "human", "value": rng.choice(ASK_WEATHER).format(c=city)},
            {"from": "function_call", "value": json.dumps(_call("get_weather", city))},
            {"from": "observation", "value": json.dumps({"temp_c": temp, "sky": sky})},
            {"from": "gpt", "value": f"It is {temp} °C and {sky} in {city}."},
        ]
    elif kind == 1:  # time: the answer is the call itself
        ask, city = time_asks[i // 3]  # each (question, city) once: no exact duplicates
        conv = [
            {"from": "human", "value": ask.format(c=city)},
            {"from": "function_call", "value": json.dumps(_call("get_time", city))},
        ]
    else:  # two cities: two calls in one turn, one observation with both results
        t1, t2 = rng.randint(-10, 35), rng.randint(-10, 35)
        conv = [
            {"from": "human", "value": f"Compare the weather in {city} and {other}."},
            {
                "from": "function_call",
                "value": json.dumps([_call("get_weather", city), _call("get_weather", other)]),
            },
            {"from": "observation", "value": json.dumps([{"temp_c": t1}, {"temp_c": t2}])},
            {"from": "gpt", "value": f"{city} is at {t1} °C and {other} at {t2} °C."},
        ]
    return {
        "id": f"tools-{i:03d}",
        "system": "You are a helpful assistant with tools.",
        "tools": json.dumps(TOOLS),
        "conversations": conv,
    }


def broken_records() -> list[dict]:
    base = {"system": "You are a helpful assistant with tools.", "tools": json.dumps(TOOLS)}
    ask = {"from": "human", "value": "What's the weather in Oslo?"}
    return [
        {
            **base,
            "id": "broken-args",
            "conversations": [
                ask,
                {
                    "from": "function_call",
                    "value": '{"name": "get_weather", "arguments": "{city: Oslo"}',
                },
            ],
        },
        {
            **base,
            "id": "broken-noname",
            "conversations": [
                ask,
                {"from": "function_call", "value": '{"arguments": {"city": "Oslo"}}'},
            ],
        },
        {
            **base,
            "id": "broken-unknown",
            "conversations": [
                ask,
                {"from": "function_call", "value": json.dumps(_call("get_forecast", "Oslo"))},
            ],
        },
        {
            "id": "broken-noprompt",
            "tools": json.dumps(TOOLS),
            "conversations": [
                {"from": "human", "value": " "},
                {"from": "function_call", "value": json.dumps(_call("get_time", "Oslo"))},
            ],
        },
    ]


def reasoning_record(rng: random.Random, i: int) -> dict:
    a, b = rng.randint(10, 99), rng.randint(10, 99)
    user = {"role": "user", "content": f"What is {a} + {b}?"}
    if i % 5 == 4:  # reasoning, then a call and nothing else
        city = CITIES[i // 5]
        return {
            "id": f"reason-{i:02d}",
            "tools": [{"type": "function", "function": TOOLS[1]}],
            "messages": [
                {"role": "user", "content": f"What time is it in {city}?"},
                {
                    "role": "assistant",
                    "content": [
                        {
                            "type": "reasoning",
                            "text": f"The user wants the local time in {city}; get_time gives it.",
                        },
                        {
                            "type": "tool_call",
                            "id": f"call_{i}",
                            "name": "get_time",
                            "arguments": json.dumps({"city": city}),
                        },
                    ],
                },
            ],
        }
    return {
        "id": f"reason-{i:02d}",
        "messages": [
            user,
            {
                "role": "assistant",
                "content": [
                    {
                        "type": "reasoning",
                        "text": f"{a} plus {b}: the tens make {a // 10 * 10 + b // 10 * 10}, "
                        f"the units {a % 10 + b % 10}, so {a + b}.",
                    },
                    {"type": "text", "text": f"{a + b}"},
                ],
            },
        ],
    }


def main() -> None:
    rng = random.Random(7)
    time_asks = [(a, c) for a in ASK_TIME for c in CITIES]
    rng.shuffle(time_asks)
    rows = [tools_record(rng, i, time_asks) for i in range(296)] + broken_records()
    (HERE / "agent_tools.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    )
    rows = [reasoning_record(rng, i) for i in range(50)]
    (HERE / "agent_reasoning.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    )


if __name__ == "__main__":
    main()
