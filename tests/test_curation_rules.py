"""Curation end to end on fixture files: every format recognised, every rejection reason with its
line number, quality thresholds per domain, plugin scorers, near-duplicate clusters kept in one
split."""

from __future__ import annotations

import gc
import json
from collections import defaultdict

import pytest

from daemon.config import CurationConfig, TrainConfig, load_settings
from daemon.curation.curator import Curator
from daemon.curation.neardup import jaccard, shingles
from daemon.errors import ConfigError
from daemon.home import Home
from daemon.models.loading import load_tokenizer

GOOD = "The river carries fresh water from the mountains down to the green valley below."


def _ok(i: int) -> str:
    return f"Answer number {i}: " + GOOD


EVERY_FORMAT = [
    {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Where does it flow?"},
            {"role": "assistant", "content": _ok(1)},
        ],
        "id": "openai-str",
        "domain": "geo",
    },
    {
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": "Parts "}, {"type": "text", "value": "2"}],
            },
            {"role": "assistant", "content": [{"type": "text", "text": _ok(2)}]},
        ],
        "id": "openai-parts",
    },
    {
        "messages": [
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": _ok(3), "loss_weight": 0},
            {"role": "user", "content": "second"},
            {"role": "assistant", "content": _ok(4)},
        ],
        "id": "lw",
    },
    {
        "instruction": "Describe the river",
        "input": "It starts in the mountains.",
        "output": _ok(5),
        "system": "You are a geographer.",
        "history": [["Hi", "Hello there, how can I help you today?"]],
        "id": "alp",
    },
    {
        "conversations": [
            {"from": "human", "value": "Look up the river"},
            {"from": "function_call", "value": '{"name": "lookup", "arguments": {}}'},
            {"from": "observation", "value": "river: carries fresh water to the valley"},
            {"from": "gpt", "value": _ok(6)},
        ],
        "id": "sharegpt",
    },
    {
        "prompt": "Tell me about the river",
        "completion": _ok(7),
        "id": "pc",
        "source": "wiki/rivers",
    },
    {"text": "A plain text record. " + _ok(8), "id": "txt"},
]


def _write(path, rows) -> None:
    with open(path, "wb") as fh:
        for r in rows:
            fh.write((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n")


def _curate(tmp_path, rows, cfg=None, train=None, tok=None, name="in.jsonl", **kw):
    src = tmp_path / name
    _write(src, rows)
    out = tmp_path / f"ds_{name}"
    res = Curator(cfg or CurationConfig(), train or TrainConfig(), tokenizer=tok, **kw).run(
        src, out
    )
    rejected = [json.loads(x) for x in (out / "rejected.jsonl").read_text().splitlines()]
    splits = {
        s: [json.loads(x) for x in (out / f"{s}.jsonl").read_text().splitlines()]
        for s in ("train", "val", "test")
    }
    return res, out, rejected, splits


def test_every_format_is_recognised_and_normalised(tmp_path):
    res, out, rejected, splits = _curate(
        tmp_path, EVERY_FORMAT, CurationConfig(val_fraction=0, test_fraction=0)
    )
    assert rejected == [] and res.total_accepted == len(EVERY_FORMAT)
    rows = {r["id"]: r for r in splits["train"]}
    roles = {k: [m["role"] for m in r["messages"]] for k, r in rows.items()}
    assert roles == {
        "openai-str": ["system", "user", "assistant"],
        "openai-parts": ["user", "assistant"],
        "lw": ["user", "assistant", "user", "assistant"],
        "alp": ["system", "user", "assistant", "user", "assistant"],
        "sharegpt": ["user", "assistant", "tool", "assistant"],
        "pc": ["user", "assistant"],
        "txt": ["assistant"],
    }
    assert rows["openai-parts"]["messages"][0]["content"] == "Parts 2"
    assert rows["lw"]["messages"][1]["train"] is False
    assert (
        rows["alp"]["messages"][3]["content"]
        == "Describe the river\n\nIt starts in the mountains."
    )
    assert rows["pc"]["source"] == "wiki/rivers" and rows["openai-str"]["domain"] == "geo"
    assert all(0 <= r["quality_score"] <= 1 for r in rows.values())
    # The same records as a JSON array give the same result.
    arr = tmp_path / "arr.json"
    arr.write_text(json.dumps(EVERY_FORMAT))
    res2 = Curator(CurationConfig(val_fraction=0, test_fraction=0), TrainConfig()).run(
        arr, tmp_path / "ds2"
    )
    assert res2.total_accepted == len(EVERY_FORMAT) and res2.rejected == 0


def test_every_rejection_reason_with_its_line(tmp_path, tiny_models):
    tok = load_tokenizer("builtin:tiny", tiny_models)
    long_prompt = "word " * 200
    rows = [
        # 1 accepted
        {"prompt": "Tell me about the river", "completion": _ok(1), "id": "orig"},
        # 2 invalid_json
        b'{"prompt": "broken", "completion": ',
        # 3 unknown_format
        {"question": "q", "answer": "a"},
        # 4 empty_output
        {"prompt": "Say it", "completion": "   "},
        # 5 no_assistant_turn
        {"messages": [{"role": "user", "content": "only a question"}]},
        {
            "messages": [
                {"role": "user", "content": "a"},
                {"role": "system", "content": "late"},
                # 6 bad_role_order
                {"role": "assistant", "content": _ok(2)},
            ]
        },
        # 7 not_utf8
        b'{"prompt": "caf\xe9", "completion": "x"}',
        # 8 unfilled_placeholder
        {"prompt": "Dear {{name}}, reply", "completion": _ok(3)},
        # 9 no_trainable_tokens
        {"prompt": long_prompt, "completion": _ok(4)},
        # 10 low_quality
        {"prompt": "Give me noise", "completion": "%$#@ ^&*! ~~~ ||| <<>> ;;; ### @@@ $$$ %%%"},
        # 11 low_diversity
        {"prompt": "Say yes", "completion": " ".join(["yes"] * 30)},
        # 12 duplicate
        {"prompt": "Tell me about the river", "completion": _ok(1), "id": "copy"},
        # 13 near_duplicate
        {"prompt": "Tell me about the river", "completion": _ok(1) + " Indeed.", "id": "nd"},
        # 14 accepted
        {"text": _ok(5)},
    ]
    train = TrainConfig(max_length=256)
    res, out, rejected, _ = _curate(tmp_path, rows, CurationConfig(), train, tok=tok)
    got = {
        (r["line"], r["rejection_reason"], r["rejection_details"].get("detail")) for r in rejected
    }
    assert got == {
        (2, "invalid_json", None),
        (3, "unknown_format", None),
        (4, "validation_failed", "empty_output"),
        (5, "validation_failed", "no_assistant_turn"),
        (6, "validation_failed", "bad_role_order"),
        (7, "validation_failed", "not_utf8"),
        (8, "validation_failed", "unfilled_placeholder"),
        (9, "validation_failed", "no_trainable_tokens"),
        (10, "low_quality", None),
        (11, "low_diversity", None),
        (12, "duplicate", None),
        (13, "near_duplicate", None),
    }
    by_line = {r["line"]: r for r in rejected}
    assert by_line[12]["rejection_details"]["duplicate_of_line"] == 1
    assert by_line[13]["rejection_details"]["duplicate_of"] == "orig"
    assert by_line[13]["rejection_details"]["similarity"] >= 0.8
    lq = by_line[10]
    assert lq["quality_score"] < lq["rejection_details"]["threshold"] == 0.5
    assert {"diversity", "coherence", "repetition", "length_fitness"} <= set(
        lq["rejection_details"]
    )
    assert lq["completion"].startswith("%$#@")  # the record keeps its own fields
    assert by_line[11]["rejection_details"]["diversity"] < 0.2
    stats = json.loads((out / "stats.json").read_text())
    assert stats == {
        **stats,
        "lines_read": 14,
        "accepted": 2,
        "rejected": 12,
        "accounted_for": True,
    }
    summary = json.loads((out / "rejection_summary.json").read_text())
    assert summary["total_rejected"] == 12
    assert summary["by_reason"] == {
        "validation_failed": 6,
        "invalid_json": 1,
        "unknown_format": 1,
        "low_quality": 1,
        "low_diversity": 1,
        "duplicate": 1,
        "near_duplicate": 1,
    }
    assert (
        summary["min_quality_score"]
        <= summary["avg_quality_score"]
        <= summary["max_quality_score"]
    )
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["source_file"] == "in.jsonl" and len(meta["source_sha256"]) == 64
    # too_long only when asked to reject long records.
    long_rows = [
        {"prompt": "Short question", "completion": GOOD * 6},
        {"prompt": "q", "completion": _ok(9)},
    ]
    _, _, rejected, _ = _curate(
        tmp_path,
        long_rows,
        CurationConfig(on_too_long="reject"),
        train,
        tok=tok,
        name="long.jsonl",
    )
    assert [(r["line"], r["rejection_details"]["detail"]) for r in rejected] == [(1, "too_long")]
    assert rejected[0]["rejection_details"]["tokens"] > 256


def test_domain_thresholds_and_weights(tmp_path):
    rows = [
        {"prompt": f"p {d}", "completion": "ok ok fine fine good", "domain": d, "id": d}
        for d in ("strict", "lax")
    ]
    cfg = CurationConfig(domain_min_quality={"strict": 0.99, "lax": 0.1}, min_diversity=0.0)
    res, _, rejected, _ = _curate(tmp_path, rows, cfg)
    assert [
        (r["id"], r["rejection_reason"], r["rejection_details"]["threshold"]) for r in rejected
    ] == [("strict", "low_quality", 0.99)]
    # Weight 0 takes a component out of the score.
    one = [{"prompt": "p", "completion": "x" * 9000}, {"prompt": "q", "completion": GOOD}]
    _, _, rej_default, _ = _curate(tmp_path, one, CurationConfig(min_quality=0.9), name="a.jsonl")
    _, _, rej_weighted, _ = _curate(
        tmp_path,
        one,
        CurationConfig(min_quality=0.9, quality_weights={"length_fitness": 0, "coherence": 0}),
        name="b.jsonl",
    )
    assert [r["rejection_reason"] for r in rej_default] == ["low_quality"] and rej_weighted == []


def test_settings_file_with_domains_and_plugin_scorer(tmp_path):
    (tmp_path / "kg_check.py").write_text(
        "def consistency(record):\n"
        "    text = record['messages'][-1]['content'].lower()\n"
        "    return 0.0 if 'made of cheese' in text else 1.0\n"
    )
    Home(tmp_path).settings_file.write_text(
        '[curation]\nscorers = ["kg_check:consistency"]\nquality_weights = {consistency = 10.0}\n'
        "[curation.domain_min_quality]\nastro = 0.6\n"
    )
    s = load_settings(Home(tmp_path).settings_file)
    assert s.curation.domain_min_quality == {"astro": 0.6}
    rows = [
        {
            "prompt": "What is the moon?",
            "completion": "The moon is made of cheese and nothing else.",
            "domain": "astro",
        },
        {
            "prompt": "What is the moon?",
            "completion": "The moon is a rocky natural satellite of the earth.",
            "domain": "astro",
        },
    ]
    _, _, rejected, splits = _curate(tmp_path, rows, s.curation, search_dir=tmp_path)
    assert [(r["line"], r["rejection_reason"]) for r in rejected] == [(1, "low_quality")]
    assert rejected[0]["rejection_details"]["consistency"] == 0.0
    assert rejected[0]["rejection_details"]["threshold"] == 0.6


def test_bad_scorer_and_settings_are_reported(tmp_path):
    with pytest.raises(ConfigError, match="cannot import 'no_such_module'"):
        Curator(CurationConfig(scorers=["no_such_module:f"]), TrainConfig(), search_dir=tmp_path)
    Home(tmp_path).settings_file.write_text(
        '[curation]\nscorers = ["nocolon"]\nnear_duplicates = "merge"\nmin_quality = 2\n'
    )
    with pytest.raises(ConfigError) as e:
        load_settings(Home(tmp_path).settings_file)
    msg = str(e.value)
    assert (
        "3 problem(s)" in msg
        and "module:function" in msg
        and "near_duplicates" in msg
        and "min_quality" in msg
    )


def _variant(base: list[str], k: int, i: int) -> str:
    words = list(base)
    words[k % len(words)] = f"changed{i}"
    return " ".join(words)


def test_near_duplicate_clusters_never_straddle_splits(tmp_path):
    import random

    rng = random.Random(3)
    vocab = [f"tok{i}" for i in range(4000)]
    rows, cluster_of = [], {}
    for c in range(150):
        base = rng.sample(vocab, 40)
        for v in range(4):  # one original and three near copies (one word changed: Jaccard ~0.87)
            rid = f"c{c}v{v}"
            text = " ".join(base) if v == 0 else _variant(base, 5 + 9 * v, v)
            rows.append({"prompt": f"cluster question {c}", "completion": text, "id": rid})
            cluster_of[rid] = c
    rng.shuffle(rows)
    cfg = CurationConfig(
        near_duplicates="keep", val_fraction=0.2, test_fraction=0.2, min_diversity=0
    )
    res, _, rejected, splits = _curate(tmp_path, rows, cfg)
    assert rejected == [] and res.total_accepted == 600
    split_of_cluster = defaultdict(set)
    for name, recs in splits.items():
        for r in recs:
            split_of_cluster[cluster_of[r["id"]]].add(name)
    assert all(len(s) == 1 for s in split_of_cluster.values()), (
        "a near-duplicate cluster straddles splits"
    )
    assert {n for s in split_of_cluster.values() for n in s} == {"train", "val", "test"}
    # Rejecting instead: each rejected copy names a record of its own cluster, and no two accepted
    # records are near duplicates of each other (copies that differ from each other in two words,
    # Jaccard ~0.76, both stay).
    res, _, rejected, splits = _curate(
        tmp_path, rows, CurationConfig(min_diversity=0), name="rej.jsonl"
    )
    assert res.total_accepted + len(rejected) == 600 and len(rejected) >= 150
    assert all(r["rejection_reason"] == "near_duplicate" for r in rejected)
    assert all(
        cluster_of[r["rejection_details"]["duplicate_of"]] == cluster_of[r["id"]] for r in rejected
    )
    kept = defaultdict(list)
    for recs in splits.values():
        for r in recs:
            kept[cluster_of[r["id"]]].append(
                shingles(
                    r["messages"][0]["content"].lower().split()
                    + r["messages"][1]["content"].lower().split()
                )
            )
    for group in kept.values():
        assert all(jaccard(a, b) < 0.8 for i, a in enumerate(group) for b in group[i + 1 :])


def test_curation_in_worker_processes_matches_in_process(tmp_path):
    rows = [
        {"prompt": f"question {i % 700}", "completion": _ok(i % 900), "id": i} for i in range(5000)
    ]
    a = _curate(tmp_path, rows, name="one.jsonl", workers=1)
    b = _curate(tmp_path, rows, name="two.jsonl", workers=2)
    assert a[0].accepted == b[0].accepted and a[2] == b[2] and a[3] == b[3]
    # 3 chunks: the pool ran
    assert a[0].total_accepted + a[0].rejected == 5000 and a[0].total_accepted > 0
    assert gc.isenabled()  # paused for each chunk only, on again afterwards
