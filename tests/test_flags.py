"""Flag storage (cap, prune, concurrent readers, resolve, export) and the `trainctl flags`
views."""

from __future__ import annotations

import json
import multiprocessing
import threading

import pytest
from typer.testing import CliRunner

from cli.app import app
from daemon.errors import TrainctlError
from daemon.home import Home
from daemon.runs.flag_store import FlagStore

# CliRunner has no terminal: a wide console keeps Rich from folding table cells mid-phrase
pytestmark = pytest.mark.usefixtures("wide_console")

runner = CliRunner()


def _results(n: int, wrong: set[int], loss: float = 1.0):
    return [
        {
            "prompt": f"q{i}",
            "golden": f"A{i}",
            "output": f"A{i}" if i not in wrong else "nope",
            "loss": loss + i,
            "matches": i not in wrong,
            "messages": [{"role": "user", "content": f"q{i}"}],
            "id": f"r{i}",
        }
        for i in range(n)
    ]


def test_one_flag_per_job_and_example_tracks_the_current_model(tmp_path):
    store = FlagStore(tmp_path / "f.json")
    done = store.evaluation(1, 10, _results(4, wrong={1, 2}), "ds", loss_threshold=3.5)
    assert done == {"added": 3, "updated": 0, "resolved": 0, "open": 3}
    assert sorted((f["reason"], f["prompt"]) for f in store.load()) == [
        ("high_loss", "q3"),
        ("mismatch", "q1"),
        ("mismatch", "q2"),
    ]
    # The next evaluation: q1 right again (resolved), q2 still wrong (updated, not repeated), q0
    # newly wrong
    done = store.evaluation(1, 20, _results(4, wrong={0, 2}), "ds", loss_threshold=100)
    assert done == {"added": 1, "updated": 1, "resolved": 2, "open": 2}  # q3's high loss went too
    flags = {f["prompt"]: f for f in store.load()}
    assert (
        len(flags) == 4
        and flags["q2"]["step"] == 20
        and [h["step"] for h in flags["q2"]["history"]] == [10, 20]
    )
    assert (
        flags["q1"]["resolved"]
        and flags["q1"]["resolved_by"] == "auto"
        and "right again at step 20" in flags["q1"]["change"]
    )
    # A scored-only evaluation decides too; wrong again reopens an automatically resolved flag
    done = store.evaluation(
        1,
        30,
        [{**r, "output": ""} for r in _results(4, wrong={1, 2})],
        "ds",
        100,
        scored_only=True,
    )
    assert done["open"] == 2 and not store.load()[0]["resolved"]
    q1 = next(f for f in store.load() if f["prompt"] == "q1")
    assert not q1["resolved"] and q1["scored_only"] and "wrong again at step 30" in q1["change"]
    # A flag resolved by hand stays resolved; another job's flags are its own
    store.resolve(q1["id"], "label checked")
    store.evaluation(1, 40, _results(4, wrong={1}), "ds", 100)
    assert next(f for f in store.load() if f["prompt"] == "q1")["resolved_by"] == "user"
    assert store.evaluation(2, 10, _results(4, wrong={1}), "ds", 100)["open"] == 1
    assert store.stats(job=1)["open"] == 0 and store.stats(job=2)["open"] == 1
    # The trend is per job and step: wrong examples, and those right again
    assert [
        (t["job"], t["step"], t.get("mismatch", 0), t.get("resolved", 0)) for t in store.trend()
    ] == [(1, 10, 2, 0), (1, 20, 2, 2), (1, 30, 2, 1), (1, 40, 0, 1), (2, 10, 1, 0)]
    assert [t["job"] for t in store.trend(job=2)] == [2]
    with pytest.raises(TrainctlError, match="unknown sort"):
        store.query(sort="best")


def test_the_cap_keeps_the_newest(tmp_path):
    store = FlagStore(tmp_path / "f.json", cap=5)
    store.add(
        [
            {"reason": "manual", "prompt": f"p{i}", "golden": "g", "loss": float(i)}
            for i in range(7)
        ]
    )
    rows = store.load()
    assert len(rows) == 5 and [r["id"] for r in rows] == [3, 4, 5, 6, 7]  # the oldest two pruned
    assert store.query(sort="recent")[0]["id"] == 7 and store.query(sort="oldest")[0]["id"] == 3
    assert [r["loss"] for r in store.query(sort="highest_loss")][:2] == [6.0, 5.0]


def _writer(path, n):
    store = FlagStore(path)
    for i in range(n):
        store.add([{"reason": "manual", "prompt": f"p{i}", "golden": "g"}])


def test_concurrent_writers_lose_nothing_and_readers_always_see_a_whole_file(tmp_path):
    path = tmp_path / "f.json"
    seen, bad = [], []
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            try:
                seen.append(len(FlagStore(path).load()))
            except json.JSONDecodeError as exc:  # a half-written file would show up here
                bad.append(exc)

    t = threading.Thread(target=reader)
    t.start()
    procs = [
        multiprocessing.get_context("fork").Process(target=_writer, args=(path, 40))
        for _ in range(3)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    stop.set()
    t.join()
    rows = FlagStore(path).load()
    assert bad == [] and len(seen) > 0
    assert len(rows) == 120 and len({r["id"] for r in rows}) == 120


def test_flags_cli_views_resolve_and_export(tmp_path):
    store = FlagStore(Home(tmp_path).flagged_file)
    store.evaluation(1, 5, _results(3, wrong={0, 2}), "demo_x", loss_threshold=2.5)
    # the same example, job 2
    store.evaluation(2, 5, _results(3, wrong={0}), "demo_x", loss_threshold=2.5)
    home = ["--home", str(tmp_path)]
    r = runner.invoke(app, ["flags", *home])
    assert r.exit_code == 0, r.output
    assert (
        "4 open" in r.output
        and "mismatch 3" in r.output
        and "high_loss 1" in r.output
        and "nope" in r.output
    )
    r = runner.invoke(app, ["flags", "--job", "1", "--json", *home])
    assert json.loads(r.output)["stats"]["open"] == 2 and {
        f["job"] for f in json.loads(r.output)["flags"]
    } == {1}
    r = runner.invoke(app, ["flags", "--reason", "high_loss", "--json", *home])
    data = json.loads(r.output)
    assert [f["prompt"] for f in data["flags"]] == ["q2"] and data["stats"]["open"] == 4
    r = runner.invoke(app, ["flags", "--search", "NOPE", "--json", *home])
    assert sorted((f["job"], f["prompt"]) for f in json.loads(r.output)["flags"]) == [
        (1, "q0"),
        (1, "q2"),
        (2, "q0"),
    ]
    long = "a long question that goes on " * 4
    r = runner.invoke(
        app, ["flags", "add", "--prompt", long, "--golden", "4", "--output", "5", *home]
    )
    assert r.exit_code == 0 and "flag 5 added" in r.output
    cut = runner.invoke(app, ["flags", "--reason", "manual", *home]).output
    assert (
        "…" in cut and "--full shows it whole" in cut and long.strip() not in " ".join(cut.split())
    )
    whole = runner.invoke(app, ["flags", "--reason", "manual", "--full", *home]).output
    assert "a long question that goes on a long question" in " ".join(whole.split())
    assert (
        runner.invoke(app, ["flags", "resolve", "1", "--notes", "label fixed", *home]).exit_code
        == 0
    )
    r = runner.invoke(app, ["flags", "--stats", "--json", *home])
    assert json.loads(r.output)["resolved"] == 1 and json.loads(r.output)["open"] == 4
    assert runner.invoke(app, ["flags", "reopen", "1", *home]).exit_code == 0
    assert (
        json.loads(runner.invoke(app, ["flags", "--stats", "--json", *home]).output)["open"] == 5
    )
    assert runner.invoke(app, ["flags", "resolve", "1", *home]).exit_code == 0
    r = runner.invoke(app, ["flags", "trend", "--json", *home])
    assert [(t["job"], t["step"], t.get("mismatch", 0)) for t in json.loads(r.output)] == [
        (1, 5, 2),
        (2, 5, 1),
    ]
    r = runner.invoke(app, ["flags", "trend", "--job", "2", *home])
    assert r.exit_code == 0 and "per job" in r.output
    # Export writes each example once, though q2 is flagged in both jobs
    r = runner.invoke(app, ["flags", "export", "--to-inbox", *home])
    assert r.exit_code == 0, r.output
    (f,) = Home(tmp_path).inbox.glob("*.jsonl")
    recs = [json.loads(x) for x in f.read_text().splitlines()]
    assert sorted(rec["messages"][-1]["content"] for rec in recs) == ["4", "A0", "A2"]
    # relative to the home folder
    r = runner.invoke(app, ["flags", "export", "fixes.jsonl", *home])
    assert r.exit_code == 0 and len((tmp_path / "fixes.jsonl").read_text().splitlines()) == 3
    # Mistakes: one red line, exit 1.
    for args, says in (
        (["flags", "resolve", "99"], "no flag with id 99"),
        (["flags", "--sort", "x"], "unknown sort"),
        (["flags", "export"], "give OUT or --to-inbox"),
        (["flags", "export", "../escape.jsonl"], "outside the home folder"),
    ):
        r = runner.invoke(app, [*args, *home])
        assert r.exit_code == 1 and says in r.output and "Traceback" not in r.output, r.output
