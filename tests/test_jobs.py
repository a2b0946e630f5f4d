import subprocess
import sys

import pytest

from daemon.errors import JobError
from daemon.jobs import JobQueue, JobState


def test_state_machine_allows_the_happy_path_and_refuses_jumps(tmp_path):
    q = JobQueue(tmp_path / "jobs.db")
    j = q.enqueue("a.jsonl", tmp_path / "a.jsonl", "sha")
    assert j.state == JobState.QUEUED
    with pytest.raises(JobError, match="cannot go from queued to done"):
        q.transition(j.id, JobState.DONE)
    q.transition(j.id, JobState.CURATING)
    q.transition(j.id, JobState.TRAINING)
    j = q.transition(j.id, JobState.DONE)
    assert j.finished_at is not None
    with pytest.raises(JobError, match="cannot go from done to training"):
        q.transition(j.id, JobState.TRAINING)


def test_interrupted_jobs_run_before_queued_ones(tmp_path):
    q = JobQueue(tmp_path / "jobs.db")
    a = q.enqueue("a.jsonl", tmp_path / "a", "1")
    b = q.enqueue("b.jsonl", tmp_path / "b", "2")
    assert q.next_runnable().id == a.id
    q.transition(b.id, JobState.CURATING)
    q.transition(b.id, JobState.INTERRUPTED)
    assert q.next_runnable().id == b.id


def test_orphaned_jobs_become_interrupted(tmp_path):
    q = JobQueue(tmp_path / "jobs.db")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    j = q.enqueue("a.jsonl", tmp_path / "a", "1")
    q.transition(j.id, JobState.CURATING, worker_pid=dead.pid)
    q.transition(j.id, JobState.TRAINING)
    assert [x.id for x in q.recover_orphans()] == [j.id]
    assert q.get(j.id).state == JobState.INTERRUPTED


def test_same_content_is_found_but_failed_jobs_do_not_count(tmp_path):
    q = JobQueue(tmp_path / "jobs.db")
    j = q.enqueue("a.jsonl", tmp_path / "a", "abc")
    q.transition(j.id, JobState.FAILED, error="x")
    assert q.find_same_content("abc") is None
    k = q.enqueue("b.jsonl", tmp_path / "b", "abc")
    assert q.find_same_content("abc", exclude_id=None).id == k.id
    # The same data with other settings is another experiment, not a duplicate
    m = q.enqueue("c.jsonl", tmp_path / "c", "abc", overrides={"train": {"epochs": 2}})
    assert q.find_same_content("abc", overrides={"train": {"epochs": 2}}).id == m.id
    assert q.find_same_content("abc", overrides={"train": {"epochs": 3}}) is None


MAKE_QUEUES = """
import sys
from pathlib import Path
from daemon.jobs import JobQueue
for i in range(int(sys.argv[2])):
    JobQueue(Path(sys.argv[1]) / str(i) / "jobs.db").close()
"""


def test_a_queue_being_made_is_never_seen_without_its_table(tmp_path):
    """`trainctl queue` or `status` run in the instant the daemon makes its queue see an empty
    queue, never "no such table: jobs": each new queue is read the moment its file appears."""
    n = 40
    maker = subprocess.Popen([sys.executable, "-c", MAKE_QUEUES, str(tmp_path), str(n)])
    seen, errors = 0, []
    while seen < n and (maker.poll() is None or (tmp_path / str(seen) / "jobs.db").exists()):
        db = tmp_path / str(seen) / "jobs.db"
        if not db.exists():
            continue
        try:
            with JobQueue(db, readonly=True) as q:
                assert q.newest() == []
        except Exception as exc:  # noqa: BLE001 - every failure is what this test looks for
            errors.append(f"{type(exc).__name__}: {exc}")
        seen += 1
    assert maker.wait(60) == 0
    assert seen == n and errors == [], (seen, errors[:3])
