"""Unreadable files land in inbox/failed/ with an explanation, and the daemon carries on."""

import json

from daemon.home import Home
from daemon.jobs import JobQueue
from tests.helpers import write_jsonl


def test_unreadable_files_go_to_failed_with_a_reason(home, daemons):
    inbox = Home(home).inbox
    (inbox / "empty.jsonl").write_bytes(b"")
    (inbox / "binary.jsonl").write_bytes(b"\x00\x89PNG\x00\x00" * 50)
    (inbox / "latin1.jsonl").write_bytes('{"text": "caf\u00e9"}\n'.encode("latin-1") * 50)
    write_jsonl(inbox / "novalid.jsonl", ["{oops", {"foo": "bar"}])
    d = daemons(home, "--once")
    assert d.wait(240) == 0, d.output()
    failed = Home(home).inbox_failed
    reasons = {p.name: p.read_text() for p in failed.glob("*.error.txt")}
    assert set(reasons) == {
        f"{n}.jsonl.error.txt" for n in ("empty", "binary", "latin1", "novalid")
    }
    assert "is empty" in reasons["empty.jsonl.error.txt"]
    # each reason names the file as dropped, not its timestamped copy in inbox/processing/
    assert all(
        f"Why: {name.removesuffix('.error.txt')} " in text for name, text in reasons.items()
    ), reasons
    assert "binary" in reasons["binary.jsonl.error.txt"]
    assert "not UTF-8" in reasons["latin1.jsonl.error.txt"]
    assert "no valid record" in reasons["novalid.jsonl.error.txt"]
    assert "trainctl rejected" in reasons["novalid.jsonl.error.txt"]
    for n in ("empty", "binary", "latin1", "novalid"):
        assert (failed / f"{n}.jsonl").exists()  # the file itself is kept, never lost
    with JobQueue(Home(home).jobs_db) as q:
        assert {j.state.value for j in q.newest()} == {"failed"} and len(q.newest()) == 4
    assert list(Home(home).inbox_processing.iterdir()) == []
    assert json.loads(Home(home).daemon_status.read_text())["state"] == "stopped"


def test_one_daemon_per_home_even_when_its_old_pid_now_belongs_to_another_process(home, daemons):
    """A second daemon is refused while the first lives; after a kill -9, a daemon.json whose pid
    is now some other live process (as after a reboot) neither blocks a new daemon nor makes
    `trainctl stop` signal that process."""
    import os
    import signal
    import subprocess
    import sys

    from tests.helpers import ROOT, wait_for

    first = daemons(home)
    wait_for(lambda: Home(home).daemon_status.exists(), 60, "the first daemon")
    second = daemons(home, "--once")
    assert second.wait(60) == 1 and "a daemon is already running" in second.output()
    first.kill(signal.SIGKILL)
    first.wait(10)
    # Some unrelated live process now has the pid daemon.json names
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        doc = json.loads(Home(home).daemon_status.read_text())
        doc.update(pid=stranger.pid, state="idle")
        Home(home).daemon_status.write_text(json.dumps(doc))
        stop = subprocess.run(
            [sys.executable, "-m", "cli", "stop", "--home", str(home), "--no-wait"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            env=dict(os.environ),
        )
        assert (
            stop.returncode == 1
            and "no daemon is running" in stop.stderr
            and stranger.poll() is None
        )
        status = subprocess.run(
            [sys.executable, "-m", "cli", "status", "--home", str(home), "--json"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        assert json.loads(status.stdout)["daemon"]["status"] == "dead"
        third = daemons(home, "--once")
        assert third.wait(60) == 0, third.output()
    finally:
        stranger.kill()
