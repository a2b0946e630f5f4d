"""Flag storage (cap, prune, concurrent readers, resolve, export) and the `trainctl flags` views."""

from __future__ import annotations

import json
import multiprocessing
import threading

import pytest
from typer.testing import CliRunner

from cli.app import app
from daemon.errors import TrainctlError
from daemon.home import Home
from daemon.runs.flag_store import FlagStore, flags_from_eval

# CliRunner has no terminal: a wide console keeps Rich from folding table cells mid-phrase
pytestmark = pytest.mark.usefixtures("wide_console")

runner = CliRunner()


def _results(n: int, wrong: set[int], loss: float = 1.0):
    return [{"prompt": f"q{i}", "golden": f"A{i}", "output": f"A{i}" if i not in wrong else "nope",
             "loss": loss + i, "matches": i not in wrong, "messages": [{"role": "user", "content": f"q{i}"}]}
            for i in range(n)]


def test_eval_results_become_flags_and_the_cap_keeps_the_newest(tmp_path):
    store = FlagStore(tmp_path / "f.json", cap=5)
    flags = flags_from_eval(10, _results(4, wrong={1, 2}), "ds", loss_threshold=3.5)
    assert sorted((f["reason"], f["prompt"]) for f in flags) == [
        ("high_loss", "q3"), ("mismatch", "q1"), ("mismatch", "q2")]
    store.add(flags)
    store.add(flags_from_eval(20, _results(4, wrong={0, 1, 2, 3}), "ds", loss_threshold=100))
    rows = store.load()
    assert len(rows) == 5 and [r["id"] for r in rows] == [3, 4, 5, 6, 7]  # the oldest two pruned
    assert store.query(sort="recent")[0]["id"] == 7 and store.query(sort="oldest")[0]["id"] == 3
    assert [r["loss"] for r in store.query(sort="highest_loss")][:2] == [4.0, 4.0]
    assert store.stats()["by_reason"] == {"mismatch": 4, "high_loss": 1}
    assert store.trend() == [(10, {"high_loss": 1}), (20, {"mismatch": 4})]
    with pytest.raises(TrainctlError, match="unknown sort"):
        store.query(sort="best")


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
    procs = [multiprocessing.get_context("fork").Process(target=_writer, args=(path, 40)) for _ in range(3)]
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
    store.add(flags_from_eval(5, _results(3, wrong={0, 2}), "demo_x", loss_threshold=2.5))
    home = ["--home", str(tmp_path)]
    r = runner.invoke(app, ["flags", *home])
    assert r.exit_code == 0, r.output
    assert "3 open" in r.output and "mismatch 2" in r.output and "high_loss 1" in r.output and "nope" in r.output
    r = runner.invoke(app, ["flags", "--reason", "high_loss", "--json", *home])
    data = json.loads(r.output)
    assert [f["prompt"] for f in data["flags"]] == ["q2"] and data["stats"]["open"] == 3
    r = runner.invoke(app, ["flags", "add", "--prompt", "2+2?", "--golden", "4", "--output", "5", *home])
    assert r.exit_code == 0 and "flag 4 added" in r.output
    assert runner.invoke(app, ["flags", "resolve", "1", "--notes", "label fixed", *home]).exit_code == 0
    r = runner.invoke(app, ["flags", "--stats", "--json", *home])
    assert json.loads(r.output)["resolved"] == 1 and json.loads(r.output)["open"] == 3
    r = runner.invoke(app, ["flags", "trend", *home])
    assert r.exit_code == 0 and "5" in r.output
    r = runner.invoke(app, ["flags", "export", "--to-inbox", *home])
    assert r.exit_code == 0, r.output
    (f,) = Home(tmp_path).inbox.glob("*.jsonl")
    recs = [json.loads(x) for x in f.read_text().splitlines()]
    assert len(recs) == 3 and recs[0]["messages"][-1] == {"role": "assistant", "content": "A2"}
    r = runner.invoke(app, ["flags", "export", "fixes.jsonl", *home])  # relative to the home folder
    assert r.exit_code == 0 and len((tmp_path / "fixes.jsonl").read_text().splitlines()) == 3
    # Mistakes: one red line, exit 1.
    for args, says in ((["flags", "resolve", "99"], "no flag with id 99"), (["flags", "--sort", "x"], "unknown sort"),
                       (["flags", "export"], "give OUT or --to-inbox"),
                       (["flags", "export", "../escape.jsonl"], "outside the home folder")):
        r = runner.invoke(app, [*args, *home])
        assert r.exit_code == 1 and says in r.output and "Traceback" not in r.output, r.output
