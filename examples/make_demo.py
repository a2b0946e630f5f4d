"""Regenerate the sample files under examples/.

- `demo_reverse.jsonl`, the sample `make demo` drops into inbox/: reverse the word order of a short
  list of words ("Reverse the word order: apple river stone" -> "stone river apple"). The
  pretrained default model, builtin:smollm2-135m, does not do this before training (0% exact match
  on the held-out split) and learns it from these few hundred records in one epoch.
- `demo_uppercase.jsonl`: upper-case two words from a fixed vocabulary — a rule the random-init
  builtin:tiny learns in about a minute; the fast tests train on it.

Records come in three formats (Alpaca, OpenAI messages, prompt/completion) and three lines of each
file are deliberately bad (invalid JSON, an empty answer, an unknown format), so the demo shows
rejections too.
"""

import itertools
import json
import random
from pathlib import Path

WORDS = [
    "apple",
    "river",
    "stone",
    "cloud",
    "tiger",
    "maple",
    "orbit",
    "piano",
    "lemon",
    "candle",
    "forest",
    "silver",
    "rocket",
    "garden",
    "window",
    "planet",
    "bridge",
    "coffee",
    "dragon",
    "mirror",
]
MORE_WORDS = [
    "honey",
    "castle",
    "pencil",
    "violin",
    "basket",
    "comet",
    "desert",
    "falcon",
    "ginger",
    "harbor",
    "island",
    "jacket",
    "kettle",
    "ladder",
    "meadow",
    "needle",
    "oyster",
    "pepper",
    "quartz",
    "saddle",
]


def _record(i: int, prompt: str, answer: str) -> str:
    kind = i % 3
    if kind == 0:
        rec = {"instruction": prompt, "input": "", "output": answer, "domain": "demo"}
    elif kind == 1:
        rec = {
            "messages": [
                {"role": "user", "content": prompt},
                {"role": "assistant", "content": answer},
            ],
            "domain": "demo",
        }
    else:
        rec = {"prompt": prompt, "completion": answer, "domain": "demo"}
    rec["id"] = f"demo-{i:04d}"
    return json.dumps(rec)


def _with_bad_lines(lines: list[str], examples: list[tuple[str, str]]) -> list[str]:
    (p1, a1), (p2, _), (p3, a3) = examples
    lines.insert(40, json.dumps({"instruction": p1, "output": a1})[:-1])  # invalid JSON
    lines.insert(80, json.dumps({"instruction": p2, "output": "", "id": "demo-empty"}))
    lines.insert(120, json.dumps({"question": p3, "answer": a3, "id": "demo-odd"}))
    return lines


def uppercase() -> list[str]:
    rng = random.Random(7)
    pairs = list(itertools.permutations(WORDS, 2))
    rng.shuffle(pairs)
    lines = [
        _record(i, f"Uppercase: {a} {b}", f"{a.upper()} {b.upper()}")
        for i, (a, b) in enumerate(pairs[:360])
    ]
    return _with_bad_lines(
        lines,
        [
            ("Uppercase: apple river", "APPLE RIVER"),
            ("Uppercase: stone cloud", ""),
            ("Uppercase: tiger maple", "TIGER MAPLE"),
        ],
    )


def reverse(n: int = 400) -> list[str]:
    rng = random.Random(11)
    vocab = WORDS + MORE_WORDS
    seen: set[tuple[str, ...]] = set()
    lines = []
    while len(lines) < n:
        words = tuple(rng.sample(vocab, rng.choice([3, 4])))
        if words in seen:
            continue
        seen.add(words)
        lines.append(
            _record(
                len(lines), "Reverse the word order: " + " ".join(words), " ".join(reversed(words))
            )
        )
    return _with_bad_lines(
        lines,
        [
            ("Reverse the word order: apple river stone", "stone river apple"),
            ("Reverse the word order: cloud tiger", ""),
            ("Reverse the word order: maple orbit piano", "piano orbit maple"),
        ],
    )


def main() -> None:
    for name, lines in (("demo_reverse.jsonl", reverse()), ("demo_uppercase.jsonl", uppercase())):
        out = Path(__file__).with_name(name)
        out.write_text("\n".join(lines) + "\n")
        print(f"wrote {len(lines)} lines to {out}")


if __name__ == "__main__":
    main()
