"""Running it like a service: per-file settings, notices (webhook and command, retried, never in a
job's way), `daemon --detach`, `logs`, `service install`."""

import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.app import app
from daemon.config import NotifyConfig
from daemon.errors import ConfigError
from daemon.home import Home
from daemon.jobs import JobState
from daemon.service.file_settings import resolve
from daemon.service.notify import Notifier
from daemon.service.watcher import InboxWatcher
from tests.helpers import DEMO, ROOT, TINY_SETTINGS, jobs, wait_for

runner = CliRunner()


class Hook:
    """A webhook on 127.0.0.1: records each JSON body and Idempotency-Key header; `fail_first`
    answers 500 to the first try of each notice, `always_fail` to every try; `hang_first` keeps the
    first request of all waiting for `hang_seconds`; `slow_seconds` delays every answer."""

    def __init__(
        self,
        fail_first: bool = False,
        hang_first: bool = False,
        hang_seconds: float = 30,
        always_fail: bool = False,
        slow_seconds: float = 0.0,
    ):
        self.bodies: list[dict] = []
        self.tries: list[str] = []
        self.keys: list[str | None] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                key = f"{body['job']}:{body['event']}"
                first_of_all = not hook.tries
                first = key not in hook.tries
                hook.tries.append(key)
                if hang_first and first_of_all:
                    time.sleep(hang_seconds)
                    return
                if always_fail or (fail_first and first):
                    self.send_response(500)
                    self.end_headers()
                    return
                time.sleep(slow_seconds)
                hook.bodies.append(body)
                hook.keys.append(self.headers.get("Idempotency-Key"))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def _notice(job: int, event: str) -> dict:
    return {"event": event, "job": job, "file": "x.jsonl"}


def test_notices_are_retried_and_delivered_in_order():
    hook = Hook(fail_first=True)
    try:
        n = Notifier(
            NotifyConfig(webhook=hook.url, retries=2, backoff_seconds=0.05, timeout_seconds=2)
        )
        started = time.monotonic()
        for job, event in ((1, "critical"), (1, "failed"), (2, "done"), (3, "warning")):
            n.send(_notice(job, event))
        assert time.monotonic() - started < 0.1  # sending never waits for a delivery
        n.close()
        assert [(b["job"], b["event"]) for b in hook.bodies] == [
            (1, "critical"),
            (1, "failed"),
            (2, "done"),
        ]
        assert hook.tries == [
            "1:critical",
            "1:critical",
            "1:failed",
            "1:failed",
            "2:done",
            "2:done",
        ]
        assert n.delivered == 3 and n.given_up == 0
    finally:
        hook.close()


OUTBOX_SCRIPT = r"""
import sys, time
from daemon.config import NotifyConfig
from daemon.home import Home
from daemon.service.notify import Notifier
notifier = Notifier(NotifyConfig(webhook=sys.argv[2], timeout_seconds=10), Home.open(sys.argv[1]))
for job in range(1, 7):
    key = f"failed:job-{job}"
    notifier.send({"event": "failed", "job": job, "file": "x.jsonl", "idempotency_key": key})
print("queued", flush=True)
time.sleep(120)
"""


def test_notices_queued_when_the_daemon_is_killed_are_sent_at_its_next_start(tmp_path):
    """The daemon is killed with six notices queued against a webhook that takes a second per
    answer."""
    hook = Hook(slow_seconds=1.0)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", OUTBOX_SCRIPT, str(tmp_path), hook.url],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None and proc.stdout.readline().strip() == "queued"
        wait_for(lambda: len(hook.bodies) >= 2, 30, "two deliveries")
        proc.kill()
        proc.wait(10)
        h = Home(tmp_path)
        assert len(hook.bodies) < 6 and list(h.notify_outbox.glob("*.json"))  # the rest is on disk
        # the next start sends it
        Notifier(NotifyConfig(webhook=hook.url, timeout_seconds=10), h).close()
        jobs_told = [body["job"] for body in hook.bodies]
        assert set(jobs_told) == set(range(1, 7))  # none lost
        assert list(dict.fromkeys(jobs_told)) == list(range(1, 7))  # in order
        assert len(jobs_told) <= 7  # at most the one in flight at the kill is told twice...
        # ...and its key lets a receiver see it
        assert hook.keys == [f"failed:job-{job}" for job in jobs_told]
        assert list(h.notify_outbox.glob("*.json")) == []
    finally:
        hook.close()


def test_a_notice_every_retry_failed_is_kept_and_counted_by_status(tmp_path, wide_console):
    hook = Hook(always_fail=True)
    try:
        h = Home.open(tmp_path)
        notifier = Notifier(NotifyConfig(webhook=hook.url, retries=1, backoff_seconds=0.01), h)
        notifier.send({**_notice(5, "failed"), "idempotency_key": "failed:job-5"})
        notifier.close()
    finally:
        hook.close()
    (kept,) = h.notify_failed.glob("*.json")
    assert json.loads(kept.read_text())["refused_by"] == ["webhook"] and not any(
        h.notify_outbox.iterdir()
    )
    doc = json.loads(CliRunner().invoke(app, ["status", "--json", "--home", str(tmp_path)]).output)
    assert doc["notices_undelivered"] == 1
    shown = CliRunner().invoke(app, ["status", "--home", str(tmp_path)]).output
    assert "1 not delivered" in shown and "data/notify/failed/" in shown


def test_a_command_hook_gets_the_json_and_a_failing_one_gives_up(tmp_path):
    out = tmp_path / "notices.jsonl"
    n = Notifier(NotifyConfig(command=f"cat >> {out}; echo >> {out}", events=["done"]))
    n.send(_notice(4, "done"))
    n.close()
    assert [json.loads(x)["job"] for x in out.read_text().splitlines() if x] == [4]
    bad = Notifier(
        NotifyConfig(command="exit 3", retries=1, backoff_seconds=0.01, events=["done"])
    )
    bad.send(_notice(4, "done"))
    bad.close()
    assert bad.given_up == 1 and bad.delivered == 0


def test_file_settings_layers_and_every_problem_at_once(tmp_path):
    settings = Home(tmp_path).settings_file
    settings.write_text(
        TINY_SETTINGS + '[files."a.jsonl"]\npriority = 2\n[files."a.jsonl".train]\nlr = 0.01\n'
        "epochs = 4\n"
    )
    side = tmp_path / "a.toml"
    side.write_text("priority = 5\n[train]\nepochs = 2\n[curation]\nmin_quality = 0.2\n")
    fs = resolve(settings, "a.jsonl", side, {"train": {"epochs": 9, "batch_size": 4}})
    assert fs.overrides == {
        "train": {"epochs": 2, "batch_size": 4, "lr": 0.01},
        "curation": {"min_quality": 0.2},
    }
    assert fs.priority == 5 and fs.sources == ['[files."a.jsonl"]', "a.toml"]
    assert resolve(settings, "b.jsonl", None).overrides == {}
    side.write_text(
        'priority = "high"\n[train]\nepochs = "three"\nlr = -1.0\n[daemon]\nslots = 4\n'
    )
    with pytest.raises(ConfigError) as e:
        resolve(settings, "a.jsonl", side)
    msg = str(e.value)
    assert "priority" in msg and "train.epochs" in msg and "[daemon] cannot be set per file" in msg
    side.write_text("[train\n")
    with pytest.raises(ConfigError, match="a.toml is not valid TOML"):
        resolve(settings, "a.jsonl", side)
    # A range problem of the sidecar is named by the sidecar as dropped, not by trainctl.toml or
    # its copy
    copy = tmp_path / "20261205101010-a.toml"
    copy.write_text("[train]\nepochs = -1\n")
    with pytest.raises(ConfigError) as e:
        resolve(settings, "a.jsonl", copy)
    said = str(e.value)
    assert "a.toml: train.epochs must be > 0" in said and "20261205101010" not in said
    assert str(settings) not in str(e.value)
    settings.write_text('[files."a.jsonl".bench]\nbatch_size = 2\n')
    from daemon.config import load_settings

    with pytest.raises(
        ConfigError, match=r'\[files."a.jsonl"\]: \[bench\] cannot be set per file'
    ):
        load_settings(settings)


def test_a_sidecar_that_comes_after_its_data_file_is_applied_or_reported(tmp_path):
    """Applied to a job still waiting; a job already running or ended gets it in inbox/failed/ with
    why."""
    from daemon.config import load_settings
    from daemon.jobs import JobQueue
    from daemon.service.loop import Daemon

    h = Home.open(tmp_path)
    h.settings_file.write_text(TINY_SETTINGS)
    daemon = Daemon(h, load_settings(h.settings_file))
    daemon.settings.daemon.stable_seconds = 0
    try:
        with JobQueue(h.jobs_db) as queue:
            waiting = queue.enqueue("a.jsonl", h.inbox_processing / "1-a.jsonl", "sha-a")
            started = queue.enqueue("b.jsonl", h.inbox_processing / "1-b.jsonl", "sha-b")
            queue.transition(started.id, JobState.CURATING, worker_pid=os.getpid())
            ended = queue.enqueue("d.jsonl", h.inbox_processing / "1-d.jsonl", "sha-d")
            queue.transition(ended.id, JobState.SKIPPED, message="same content as job 1")
        (h.inbox / "a.toml").write_text("priority = 3\n[train]\nepochs = 2\n")
        (h.inbox / "b.toml").write_text("[train]\nepochs = 2\n")
        (h.inbox / "c.toml").write_text("[train]\nepochs = 2\n")  # no data file yet: it waits
        (h.inbox / "d.toml").write_text("[train]\nepochs = 2\n")
        daemon._late_sidecars()
        with JobQueue(h.jobs_db) as queue:
            applied, kept = queue.get(waiting.id), queue.get(started.id)
        assert applied.overrides_dict == {"train": {"epochs": 2}} and applied.priority == 3
        assert (
            applied.settings_file == str(h.inbox_processing / "1-a.toml")
            and not (h.inbox / "a.toml").exists()
        )
        assert "came after a.jsonl" in applied.message
        assert kept.overrides_dict == {} and not (h.inbox / "b.toml").exists()
        why = (h.inbox_failed / "b.toml.error.txt").read_text()
        assert "b.toml arrived after b.jsonl was taken as job 2" in why and "not applied" in why
        assert (h.inbox_failed / "b.toml").exists() and (h.inbox / "c.toml").exists()
        with JobQueue(h.jobs_db) as queue:
            # a running job's worker says what it has to say
            assert queue.get(started.id).message is None
            assert queue.get(ended.id).message == (
                "same content as job 1; d.toml came too late and was not applied (inbox/failed/)"
            )
    finally:
        daemon.notifier.close()
        daemon.queue.close()


def test_pieces_of_one_slowly_written_file_are_flagged(tmp_path):
    """A writer that reopens the file for each line: each piece looks finished, so each is a job;
    say so."""
    from daemon.config import load_settings
    from daemon.service.loop import Daemon

    h = Home.open(tmp_path)
    h.settings_file.write_text(TINY_SETTINGS)
    daemon = Daemon(h, load_settings(h.settings_file))
    try:
        for piece in range(2):
            path = h.inbox_processing / f"{piece}-log.jsonl"
            path.write_text(f'{{"prompt": "q{piece}", "completion": "a{piece}"}}\n')
            job = daemon._enqueue(path, "log.jsonl")
        assert "pieces of one file" in (job.message or daemon.queue.get(job.id).message)
        assert daemon.queue.get(job.id - 1).message is None
    finally:
        daemon.notifier.close()
        daemon.queue.close()


def test_a_sidecar_dropped_just_after_its_data_file_is_taken_with_it(tmp_path):
    w = InboxWatcher(tmp_path, stable_seconds=0.6)
    data = tmp_path / "a.jsonl"
    data.write_text('{"text": "x"}\n')
    w.note(data)

    def poll_until_ready(limit: float) -> tuple[list[Path], float]:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            got = w.ready()
            if got:
                return got, time.monotonic()
            time.sleep(0.05)  # the daemon polls every daemon.poll_seconds (0.25 s)
        return [], time.monotonic()

    assert poll_until_ready(0.4)[0] == []
    # within the window: the clock restarts
    (tmp_path / "a.toml").write_text("[train]\nepochs = 1\n")
    side_at = time.monotonic()
    got, at = poll_until_ready(3)
    assert got == [data] and at - side_at >= 0.55  # stable for the window counted from the sidecar
    lone = tmp_path / "b.toml"
    lone.write_text("[train]\nepochs = 1\n")
    w.note(lone)
    assert poll_until_ready(1)[0] == []  # a sidecar alone is never a job


@pytest.mark.slow
def test_sidecar_and_plain_file_train_with_their_own_settings_in_one_daemon_run(
    home, daemons, tiny_models
):
    """x.toml sets model (the tiny model's folder) and epochs for x.jsonl; y.jsonl trains with the
    daemon's flags; a bad sidecar fails its job with every problem named, both files in
    inbox/failed/; `queue` shows the settings."""
    (model_dir,) = [p for p in tiny_models.iterdir() if p.is_dir()]
    inbox = Home(home).inbox
    rows = DEMO.read_text().splitlines()
    (inbox / "x.toml").write_text(f'priority = 1\n[train]\nmodel = "{model_dir}"\nepochs = 1\n')
    (inbox / "x.jsonl").write_text("\n".join(rows[:40]) + "\n")
    (inbox / "y.jsonl").write_text("\n".join(rows[40:80]) + "\n")
    (inbox / "z.toml").write_text('[train]\nepochs = "two"\n[bench]\nbatch_size = 1\n')
    (inbox / "z.jsonl").write_text("\n".join(rows[80:120]) + "\n")
    d = daemons(home, "--epochs", "2", "--once")
    assert d.wait(300) == 0, d.output()
    by_name = {j.file_name: j for j in jobs(home)}
    x, y, z = by_name["x.jsonl"], by_name["y.jsonl"], by_name["z.jsonl"]
    assert x.state == y.state == JobState.DONE, (x, y)
    cfg = {
        n: json.loads((Home(home).run_dir(j.id) / "config.json").read_text())["train"]
        for n, j in (("x", x), ("y", y))
    }
    assert cfg["x"]["model"] == str(model_dir) and cfg["x"]["epochs"] == 1
    assert cfg["y"]["model"] == "builtin:tiny" and cfg["y"]["epochs"] == 2
    assert (Home(home).inbox_done / "x.toml").exists() and x.settings_file.endswith("done/x.toml")
    assert z.state == JobState.FAILED and z.message == "bad settings"
    assert "train.epochs" in z.error and "[bench] cannot be set per file" in z.error
    assert (Home(home).inbox_failed / "z.toml").exists()
    assert "train.epochs" in (Home(home).inbox_failed / "z.jsonl.error.txt").read_text()
    r = runner.invoke(app, ["queue", "--home", str(home)], env={"COLUMNS": "300"})
    assert (
        f"priority=1 model={model_dir} epochs=1" in r.output.replace("\n", "")
        or "(x.toml)" in r.output
    )


@pytest.mark.slow
def test_daemon_notices_a_critical_alert_a_failure_and_a_success_in_order(home, daemons, tmp_path):
    hook = Hook(fail_first=True)
    out = tmp_path / "notices.jsonl"
    Home(home).settings_file.write_text(
        TINY_SETTINGS
        + f'[notify]\nwebhook = "{hook.url}"\ncommand = "cat >> {out}; echo >> {out}"\n'
        "retries = 2\nbackoff_seconds = 0.1\n"
    )
    os.environ["TRAINCTL_FAULT"] = "nan_at_step=30@bad"
    try:
        d = daemons(home, "--epochs", "2", "--save-steps", "10", "--once")
    finally:
        del os.environ["TRAINCTL_FAULT"]
    (Home(home).inbox / "bad.jsonl").write_bytes(DEMO.read_bytes())
    time.sleep(0.05)
    (Home(home).inbox / "good.jsonl").write_bytes(
        DEMO.read_bytes() + b'{"text": "one more record"}\n'
    )
    try:
        assert d.wait(300) == 0, d.output()
        seen = [(b["file"], b["event"]) for b in hook.bodies]
        assert seen == [
            ("bad.jsonl", "critical"),
            ("bad.jsonl", "failed"),
            ("good.jsonl", "done"),
        ], seen
        critical, failed, done = hook.bodies
        assert critical["alert"]["id"] == "nan_loss" and "nan_loss" in failed["error"]
        assert (
            done["state"] == "done"
            and done["adapter"].endswith("adapter")
            and done["figures"]["steps"] > 0
        )
        assert "test_exact_match" in done["figures"]
        by_command = [json.loads(x) for x in out.read_text().splitlines() if x]
        # the command got the same notices
        assert [(b["file"], b["event"]) for b in by_command] == seen
        assert "notice job" in (Home(home).logs / "daemon.log").read_text()
    finally:
        hook.close()


@pytest.mark.slow
def test_a_hook_that_hangs_does_not_delay_the_next_job(home, daemons):
    hook = Hook(hang_first=True, hang_seconds=30)
    Home(home).settings_file.write_text(
        TINY_SETTINGS + f'[notify]\nwebhook = "{hook.url}"\ntimeout_seconds = 8\n'
        "retries = 1\nbackoff_seconds = 0.1\n"
    )
    rows = DEMO.read_text().splitlines()
    d = daemons(home, "--max-steps", "3", "--once")
    (Home(home).inbox / "a.jsonl").write_text("\n".join(rows[:40]) + "\n")
    time.sleep(0.05)
    (Home(home).inbox / "b.jsonl").write_text("\n".join(rows[40:80]) + "\n")
    try:
        assert d.wait(300) == 0, d.output()
        a, b = sorted(jobs(home), key=lambda j: j.id)
        assert a.state == b.state == JobState.DONE
        # b's worker started (it sets started_at once it has imported and loaded its settings) well
        # within the 8 s the hung delivery of a's notice took, let alone the 30 s hang
        assert b.started_at - a.finished_at < 5.0, (a.finished_at, b.started_at)
        # the hung try was retried
        assert [x["file"] for x in hook.bodies] == ["a.jsonl", "b.jsonl"]
    finally:
        hook.close()


def _cli(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        **kw,
    )


@pytest.mark.slow
def test_detached_daemon_logs_and_stop(home):
    r = _cli(
        "daemon", "--detach", "--home", str(home), "--epochs", "1", "--set", "train.max_steps=5"
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "daemon started" in r.stdout
    doc = json.loads(Home(home).daemon_status.read_text())
    try:
        r2 = _cli("daemon", "--detach", "--home", str(home))
        assert (
            r2.returncode == 1 and "already running" in r2.stderr and "Traceback" not in r2.stderr
        )
        (Home(home).inbox / "a.jsonl").write_bytes(DEMO.read_bytes())
        wait_for(
            lambda: jobs(home) and jobs(home)[0].state != JobState.QUEUED, 60, "the job to start"
        )
        follow = _cli("logs", "-f", "1", "--home", str(home))  # returns when the job ends
        assert follow.returncode == 0, follow.stderr
        assert "job 1: done" in follow.stdout and "step 5/5" in follow.stdout
        assert jobs(home)[0].state == JobState.DONE
        wait_for(
            lambda: "job 1: done" in _cli("logs", "--home", str(home), "-n", "100").stdout,
            30,
            "the daemon to log the job's end",
        )
        assert "queued a.jsonl as job 1" in _cli("logs", "--home", str(home), "-n", "100").stdout
    finally:
        stop = _cli("stop", "--home", str(home), "--timeout", "60")
    assert stop.returncode == 0, stop.stderr
    assert json.loads(Home(home).daemon_status.read_text())["state"] == "stopped"
    assert "daemon --detach" in (Home(home).logs / "daemon.log").read_text() and doc["pid"] > 0
    r = _cli("logs", "7", "--home", str(home))
    assert r.returncode == 1 and "no job 7" in r.stderr


def test_service_install_writes_a_user_unit_that_restarts_the_daemon(home, tmp_path):
    env = {"XDG_CONFIG_HOME": str(tmp_path / "config")}
    r = runner.invoke(app, ["service", "install", "--print", "--home", str(home)])
    assert r.exit_code == 0, r.output
    assert f"ExecStart={sys.executable} -m cli daemon --home {home}" in r.output
    assert "Restart=on-failure" in r.output and "KillMode=mixed" in r.output
    r = runner.invoke(app, ["service", "install", "--home", str(home)], env=env)
    assert r.exit_code == 0, r.output
    unit = tmp_path / "config" / "systemd" / "user" / "trainctl-home.service"
    assert unit.read_text().startswith("[Unit]") and "systemctl --user daemon-reload" in r.output
    unit.write_text("[Unit]\nsomething else\n")
    r = runner.invoke(app, ["service", "install", "--home", str(home)], env=env)
    assert r.exit_code == 1 and "--force" in r.output
    assert Path(unit).read_text() == "[Unit]\nsomething else\n"
