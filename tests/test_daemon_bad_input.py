"""Unreadable files land in inbox/failed/ with an explanation, and the daemon carries on."""

import json

from daemon.jobs import JobQueue
from tests.conftest import write_jsonl


def test_unreadable_files_go_to_failed_with_a_reason(home, daemons):
    inbox = home / "inbox"
    (inbox / "empty.jsonl").write_bytes(b"")
    (inbox / "binary.jsonl").write_bytes(b"\x00\x89PNG\x00\x00" * 50)
    (inbox / "latin1.jsonl").write_bytes('{"text": "caf\u00e9"}\n'.encode("latin-1") * 50)
    write_jsonl(inbox / "novalid.jsonl", ["{oops", {"foo": "bar"}])
    d = daemons(home, "--once")
    assert d.wait(240) == 0, d.output()
    failed = home / "inbox" / "failed"
    reasons = {p.name: p.read_text() for p in failed.glob("*.error.txt")}
    assert set(reasons) == {f"{n}.jsonl.error.txt" for n in ("empty", "binary", "latin1", "novalid")}
    assert "is empty" in reasons["empty.jsonl.error.txt"]
    assert "binary" in reasons["binary.jsonl.error.txt"]
    assert "not UTF-8" in reasons["latin1.jsonl.error.txt"]
    assert "no valid record" in reasons["novalid.jsonl.error.txt"]
    assert "trainctl rejected" in reasons["novalid.jsonl.error.txt"]
    for n in ("empty", "binary", "latin1", "novalid"):
        assert (failed / f"{n}.jsonl").exists()  # the file itself is kept, never lost
    with JobQueue(home / "data" / "jobs.db") as q:
        assert {j.state.value for j in q.list()} == {"failed"} and len(q.list()) == 4
    assert list((home / "inbox" / "processing").iterdir()) == []
    assert json.loads((home / "status" / "daemon.json").read_text())["state"] == "stopped"
