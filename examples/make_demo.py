"""Regenerate examples/demo_uppercase.jsonl: the sample `make demo` drops into inbox/.

Task: upper-case two words from a fixed vocabulary — a rule the built-in tiny model learns in about a minute on
two CPU cores. Records come in three formats (Alpaca, OpenAI messages, prompt/completion) and three lines are
deliberately bad (invalid JSON, an empty answer, an unknown format), so the demo shows rejections too.
"""

import itertools
import json
import random
from pathlib import Path

WORDS = ["apple", "river", "stone", "cloud", "tiger", "maple", "orbit", "piano", "lemon", "candle",
         "forest", "silver", "rocket", "garden", "window", "planet", "bridge", "coffee", "dragon", "mirror"]


def main() -> None:
    rng = random.Random(7)
    pairs = list(itertools.permutations(WORDS, 2))
    rng.shuffle(pairs)
    lines = []
    for i, (a, b) in enumerate(pairs[:360]):
        prompt, answer = f"Uppercase: {a} {b}", f"{a.upper()} {b.upper()}"
        kind = i % 3
        if kind == 0:
            rec = {"instruction": prompt, "input": "", "output": answer, "domain": "demo"}
        elif kind == 1:
            rec = {"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}],
                   "domain": "demo"}
        else:
            rec = {"prompt": prompt, "completion": answer, "domain": "demo"}
        rec["id"] = f"demo-{i:04d}"
        lines.append(json.dumps(rec))
    lines.insert(40, '{"instruction": "Uppercase: apple river", "output": "APPLE RIVER"')  # invalid JSON
    lines.insert(80, json.dumps({"instruction": "Uppercase: stone cloud", "output": "", "id": "demo-empty"}))
    lines.insert(120, json.dumps({"question": "Uppercase: tiger maple", "answer": "TIGER MAPLE", "id": "demo-odd"}))
    out = Path(__file__).with_name("demo_uppercase.jsonl")
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {len(lines)} lines to {out}")


if __name__ == "__main__":
    main()
