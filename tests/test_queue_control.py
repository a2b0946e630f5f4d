"""Queue control: cancel, pause, resume, priority, retry, checkpoint — each a guarded transition,
with the daemon running (a real training job) and with it down."""

import json
import os
import signal
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.app import app
from daemon.home import Home
from daemon.jobs import JobQueue, JobState
from tests.helpers import DEMO, complete_checkpoints, drop_demo, jobs, status, wait_for

runner = CliRunner()


def cli(home: Path, *args: str):
    return runner.invoke(app, [*args, "--home", str(home)], env={"COLUMNS": "250"})


def _queued(home: Path, name: str, priority: int = 0):
    """A job as the daemon queues one: its file in inbox/processing/."""
    h = Home.open(home)
    f = h.inbox_processing / f"20260101000000-{name}"
    f.write_bytes(DEMO.read_bytes())
    with JobQueue(h.jobs_db) as q:
        return q.enqueue(name, f, name, priority=priority)


def test_higher_priority_starts_first_then_interrupted_then_arrival(tmp_path):
    q = JobQueue(tmp_path / "jobs.db")
    a = q.enqueue("a.jsonl", tmp_path / "a", "1")
    b = q.enqueue("b.jsonl", tmp_path / "b", "2")
    c = q.enqueue("c.jsonl", tmp_path / "c", "3", priority=5)
    assert q.next_runnable().id == c.id
    q.transition(c.id, JobState.CANCELLED)
    assert q.next_runnable().id == a.id  # equal priority: by arrival
    q.update(b.id, priority=1)
    assert q.next_runnable().id == b.id
    q.transition(a.id, JobState.CURATING)
    q.transition(a.id, JobState.INTERRUPTED)
    assert q.next_runnable().id == b.id  # priority before "interrupted first"


def test_an_older_queue_gets_the_new_columns(tmp_path):
    db = tmp_path / "jobs.db"
    con = sqlite3.connect(db)
    con.execute(
        "CREATE TABLE jobs (id INTEGER PRIMARY KEY AUTOINCREMENT, file_name TEXT NOT NULL, "
        "file_path TEXT NOT NULL, sha256 TEXT NOT NULL, state TEXT NOT NULL, created_at REAL "
        "NOT NULL, started_at REAL, finished_at REAL, updated_at REAL NOT NULL, dataset_dir "
        "TEXT, run_dir TEXT, adapter_dir TEXT, error TEXT, message TEXT, worker_pid INTEGER, "
        "attempts INTEGER NOT NULL DEFAULT 0, forced INTEGER NOT NULL DEFAULT 0, overrides TEXT)"
    )
    con.execute(
        "INSERT INTO jobs (file_name, file_path, sha256, state, created_at, "
        "updated_at) VALUES ('old.jsonl', '/x', 's', 'queued', 1, 1)"
    )
    con.commit()
    con.close()
    with JobQueue(db) as q:
        (job,) = q.newest()
        assert job.priority == 0 and job.request is None and job.settings_file is None


def test_commands_refuse_what_the_state_machine_does_not_allow(tmp_path):
    home = Home.open(tmp_path / "home").root
    queued = _queued(home, "a.jsonl")
    r = cli(home, "pause", str(queued.id))
    assert r.exit_code == 1 and "is queued and has not started — nothing to pause" in r.output
    r = cli(home, "resume", str(queued.id))
    assert r.exit_code == 1 and "not paused" in r.output
    r = cli(home, "retry", str(queued.id))
    assert r.exit_code == 1 and "retry runs a failed or cancelled job again" in r.output
    r = cli(home, "checkpoint")
    assert r.exit_code == 1 and "no job is training" in r.output
    r = cli(home, "cancel", "99")
    assert r.exit_code == 1 and "no job 99" in r.output
    assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1
    # Daemon down: a queued job is cancelled at once, its file filed with the reason
    r = cli(home, "cancel", str(queued.id))
    assert r.exit_code == 0, r.output
    with JobQueue(Home(home).jobs_db) as q:
        job = q.get(queued.id)
    assert (
        job.state == JobState.CANCELLED
        and Path(job.file_path) == Home(home).inbox_failed / "a.jsonl"
    )
    assert "cancelled" in (Home(home).inbox_failed / "a.jsonl.error.txt").read_text()
    for cmd, why in (
        ("cancel", "nothing to cancel"),
        ("pause", "nothing to pause"),
        ("priority", "priority orders jobs that are still to run"),
        ("resume", "only a paused job can be resumed"),
    ):
        r = cli(home, cmd, str(job.id), *(["3"] if cmd == "priority" else []))
        assert r.exit_code == 1 and f"job {job.id} is cancelled" in r.output and why in r.output, (
            cmd,
            r.output,
        )
    # A bad value for a retry is refused before the job is touched
    r = cli(home, "retry", str(job.id), "--lr", "-1")
    assert r.exit_code == 1 and "train.lr" in r.output
    # Retry: back in processing/, queued again with its settings changed by the flags
    r = cli(home, "retry", str(job.id), "--epochs", "2")
    assert r.exit_code == 0, r.output
    with JobQueue(Home(home).jobs_db) as q:
        job = q.get(job.id)
    assert (
        job.state == JobState.QUEUED
        and job.error is None
        and job.overrides_dict == {"train": {"epochs": 2.0}}
    )
    assert (
        Path(job.file_path).parent == Home(home).inbox_processing and Path(job.file_path).exists()
    )
    assert not (Home(home).inbox_failed / "a.jsonl.error.txt").exists()
    r = cli(home, "priority", str(job.id), "7")
    assert r.exit_code == 0 and "priority 7" in r.output
    r = cli(home, "queue")
    assert "priority=7 epochs=2" in r.output and "epochs=2.0" not in r.output  # as typed, not 2.0


@pytest.mark.slow
def test_checkpoint_pause_and_resume_across_a_daemon_restart_train_no_step_twice(home, daemons):
    d = daemons(home, "--epochs", "20", "--save-steps", "500")
    drop_demo(home)
    wait_for(lambda: status(home).get("current_step", 0) >= 20, 120, "training progress")
    # checkpoint: saved now, and it keeps training
    r = cli(home, "checkpoint", "--timeout", "60")
    assert r.exit_code == 0, r.output
    saved = complete_checkpoints(home, 1)
    assert len(saved) == 1 and f"saved checkpoint-{saved[0]}" in r.output and saved[0] >= 20
    assert not (Home(home).run_dir(1) / "checkpoint.request").exists()
    wait_for(lambda: status(home).get("current_step", 0) > saved[0] + 5, 60, "training to go on")
    assert jobs(home)[0].state == JobState.TRAINING
    # pause: a checkpoint at the current step, the job held, the daemon idle
    r = cli(home, "pause", "1", "--timeout", "120")
    assert r.exit_code == 0, r.output
    (job,) = jobs(home)
    assert job.state == JobState.PAUSED and job.worker_pid is None
    paused_at = complete_checkpoints(home, 1)[-1]
    assert paused_at > saved[0]
    wait_for(
        lambda: json.loads(Home(home).daemon_status.read_text())["state"] == "idle",
        10,
        "the daemon to hold no job",
    )
    assert jobs(home)[0].state == JobState.PAUSED  # not restarted by the running daemon
    assert cli(home, "stop", "--timeout", "60").exit_code == 0
    assert d.wait(30) == 0
    # resume while the daemon is down; the next daemon continues from the pause's checkpoint
    r = cli(home, "resume", "1")
    assert r.exit_code == 0 and "back in line" in r.output, r.output
    d2 = daemons(home, "--once")
    assert d2.wait(300) == 0, d2.output()
    (job,) = jobs(home)
    assert job.state == JobState.DONE and f"resumed from checkpoint-{paused_at}" in job.message, (
        job
    )
    run = Home(home).run_dir(1)
    result = json.loads((run / "result.json").read_text())
    assert result["steps"] == 840
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    # One row per optimizer step (each run's end-of-training summary, with `train_loss`, adds a row
    # of its own)
    steps = [r["current_step"] for r in rows if "train_loss" not in r]
    # no step trained (or reported) twice
    assert len(steps) == len(set(steps)) == 840 and max(steps) == 840
    log = (Home(home).logs / "job-00001.log").read_text()
    assert log.count("==== ") == 2  # the job's two runs, in its own log


@pytest.mark.slow
def test_cancel_during_training_keeps_checkpoints_and_retry_continues_from_them(home, daemons):
    d = daemons(home, "--epochs", "20", "--save-steps", "500")
    drop_demo(home)
    wait_for(lambda: status(home).get("current_step", 0) >= 30, 120, "training progress")
    r = cli(home, "cancel", "1", "--timeout", "120")
    assert r.exit_code == 0, r.output
    (job,) = jobs(home)
    assert job.state == JobState.CANCELLED and job.error == "cancelled"
    kept = complete_checkpoints(home, 1)
    assert kept and kept[-1] >= 30
    # the daemon files it away once the worker has exited
    wait_for(
        lambda: (Home(home).inbox_failed / "demo.jsonl.error.txt").exists(),
        10,
        "the file in inbox/failed/",
    )
    assert "cancelled" in (Home(home).inbox_failed / "demo.jsonl.error.txt").read_text()
    r = cli(home, "retry", "1")
    assert r.exit_code == 0 and "continues from its newest complete checkpoint" in r.output, (
        r.output
    )
    wait_for(lambda: jobs(home)[0].state == JobState.DONE, 300, "the retried job to finish")
    (job,) = jobs(home)
    assert f"resumed from checkpoint-{kept[-1]}" in job.message
    run = Home(home).run_dir(1)
    assert json.loads((run / "result.json").read_text())["steps"] == 840
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r["current_step"] for r in rows if "train_loss" not in r]
    assert len(steps) == len(set(steps)) == 840  # nothing lost, no step trained twice
    wait_for(
        lambda: (Home(home).inbox_done / "demo.jsonl").exists(), 10, "the file in inbox/done/"
    )
    assert not list(Home(home).inbox_failed.iterdir())
    d.kill(signal.SIGTERM)
    assert d.wait(30) == 0


@pytest.mark.slow
def test_cancel_of_a_foreground_train_stops_it(home, tmp_path):
    """No daemon: `trainctl train` in one process, `trainctl cancel` from another."""
    import subprocess
    import sys

    from tests.helpers import ROOT

    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cli",
            "train",
            str(DEMO),
            "--home",
            str(home),
            "--epochs",
            "20",
            "--save-steps",
            "500",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for(lambda: status(home).get("current_step", 0) >= 10, 120, "training progress")
        r = cli(home, "cancel", "1", "--timeout", "120")
        assert r.exit_code == 0, r.output
        out, _ = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
    assert "job 1 cancelled" in out, out
    (job,) = jobs(home)
    assert job.state == JobState.CANCELLED and complete_checkpoints(home, 1)
    assert DEMO.exists()  # the user's own file is never moved


def test_a_stopped_worker_is_settled_once_whoever_notices_first(tmp_path):
    """The worker, the daemon and the command may all see a paused job's worker end: the first
    settles it, the others change nothing (a second settle must not turn PAUSED into INTERRUPTED,
    which would resume it)."""
    q = JobQueue(tmp_path / "jobs.db")
    j = q.enqueue("a.jsonl", tmp_path / "a", "1")
    q.transition(j.id, JobState.CURATING)
    q.transition(j.id, JobState.TRAINING)
    q.update(j.id, request="pause")
    assert q.stopped(j.id, "stopped").state == JobState.PAUSED
    again = q.stopped(j.id, "stopped")
    assert again.state == JobState.PAUSED and again.request is None
    # Pausing a job that was cut off (INTERRUPTED, no worker) holds it at once
    k = q.enqueue("b.jsonl", tmp_path / "b", "2")
    q.transition(k.id, JobState.CURATING)
    q.transition(k.id, JobState.INTERRUPTED)
    home = Home.open(tmp_path / "home")
    home.jobs_db.parent.mkdir(parents=True, exist_ok=True)
    import shutil

    q.close()
    shutil.copy(tmp_path / "jobs.db", home.jobs_db)
    from daemon.service import queue_control

    assert queue_control.pause(home, k.id).state == JobState.PAUSED
    with JobQueue(home.jobs_db) as q2:
        assert q2.next_runnable() is None  # neither paused job runs
