"""The stable-file rule: a file is queued within about a second of its copy finishing, never
before."""

import subprocess
import sys
import time

import pytest

from daemon.home import Home
from daemon.service.watcher import InboxWatcher, is_candidate, open_for_writing
from tests.helpers import wait_for

SLOW_WRITER = """
import pathlib, sys, time
with open(sys.argv[1], "w") as fh:
    for i in range(3):
        fh.write('{"prompt": "p%d", "completion": "c"}\\n' % i)
        fh.flush()
        time.sleep(1.5)   # pauses 3x stable_seconds: size and mtime stand still meanwhile
pathlib.Path(sys.argv[2]).touch()   # the moment of closing, as the test sees it
time.sleep(0.5)
"""


@pytest.fixture
def watch(tmp_path):
    """start(stable_seconds) -> a running InboxWatcher on tmp_path/inbox, stopped after the
    test."""
    started = []

    def start(stable_seconds: float) -> InboxWatcher:
        inbox = Home(tmp_path).inbox
        inbox.mkdir()
        w = InboxWatcher(inbox, stable_seconds=stable_seconds)
        w.start()
        started.append(w)
        return w

    yield start
    for w in started:
        w.stop()


def test_slow_copy_held_open_is_not_picked_up_until_closed(watch, tmp_path):
    w = watch(0.5)
    inbox = w.inbox
    target = inbox / "slow.jsonl"
    closed = tmp_path / "closed.marker"
    writer = subprocess.Popen([sys.executable, "-c", SLOW_WRITER, str(target), str(closed)])
    ready: list = []
    while not ready and writer.poll() is None:
        ready = w.ready()
        time.sleep(0.1)
    if not ready:
        ready = wait_for(w.ready, 5, "the finished file")
    picked_at = time.time()
    # A pick-up is early when the writer still holds the file: it closes the file and touches the
    # marker right after, so a pick-up during one of its 1.5 s pauses would leave the marker absent
    # for about a second.
    assert wait_for(closed.exists, 0.5, "writer closed the file"), (
        "picked up while the writer still held it open"
    )
    assert ready == [target]
    took = picked_at - closed.stat().st_mtime
    assert took < 1.5, f"queued {took:.2f}s after the copy finished"
    writer.wait()
    assert target.read_text().count("\n") == 3


def test_rename_into_inbox_is_picked_up_and_temp_names_ignored(watch, tmp_path):
    w = watch(0.3)
    inbox = w.inbox
    (inbox / "x.jsonl.part").write_text('{"text": "a"}\n')
    (inbox / ".hidden.jsonl").write_text('{"text": "a"}\n')
    staged = tmp_path / "staged.jsonl"
    staged.write_text('{"text": "a"}\n')
    t0 = time.monotonic()
    staged.rename(inbox / "done_copy.jsonl")
    assert wait_for(w.ready, 5, "renamed file") == [inbox / "done_copy.jsonl"]
    assert time.monotonic() - t0 < 1.5
    time.sleep(0.5)
    assert w.ready() == []


def test_candidate_names():
    from pathlib import Path

    assert is_candidate(Path("a.jsonl")) and is_candidate(Path("b.JSON"))
    assert not is_candidate(Path("a.txt")) and not is_candidate(Path("a.jsonl.tmp"))


def test_open_for_writing_sees_a_writer(tmp_path):
    p = tmp_path / "f.jsonl"
    with open(p, "w") as fh:
        fh.write("x")
        fh.flush()
        proc = subprocess.Popen(
            [sys.executable, "-c", f"import time; f=open({str(p)!r}, 'a'); time.sleep(30)"]
        )
        try:
            assert wait_for(lambda: open_for_writing(p), 10, "writer to be seen")
        finally:
            proc.kill()
            proc.wait()
    assert not open_for_writing(p)
