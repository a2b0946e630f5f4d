"""Faults and hostile input: nothing lost, nothing read that should not be, one clear line for
each.

- Hostile inbox entries: whoever can write to the inbox must not make the daemon read anything
  else. A symbolic link, a hard link, a FIFO or a linked settings file is refused unread: its job
  fails with one line of reason, the entry goes to inbox/failed/ beside that reason, and none of
  the content it points at is copied anywhere in the home.
- A read-only home is one line at start, and the dropped file stays where it was.
- One writer per job: a second worker of a job waits for the first to let go of the run folder.
(Kills at each stage of training, export and the bench are in test_e2e_training, test_bench and
test_vllm_engine; a resumed run's metrics.jsonl holding each step once is in test_e2e_training.)
"""

import json
import os
import re
import stat
import time

import pytest

from daemon.errors import InputFileError
from daemon.home import Home
from daemon.jobs import JobQueue
from daemon.jsonl_reader import read_items
from daemon.service.inbox_files import REFUSED
from tests.helpers import DEMO, write_jsonl

SECRET = "TOPSECRET-4711"


def _secret_file(folder) -> os.PathLike:
    """A file outside the home that would be accepted as training data if it were ever read."""
    rows = [
        {"prompt": f"what is the code {i}", "completion": f"{SECRET} number {i} stays private"}
        for i in range(40)
    ]
    return write_jsonl(folder / "secret.jsonl", rows)


def _files_under(root):
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            if stat.S_ISREG(os.lstat(path).st_mode):
                yield path


def test_links_fifos_and_linked_sidecars_are_refused_unread(home, daemons, tmp_path):
    h = Home(home)
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = _secret_file(outside)
    (outside / "secret.toml").write_text(f'[train]\nmodel = "{SECRET}"\n')
    os.symlink(secret, h.inbox / "linked.jsonl")
    os.symlink(outside / "gone.jsonl", h.inbox / "dangling.jsonl")
    os.link(secret, h.inbox / "hard.jsonl")
    os.mkfifo(h.inbox / "pipe.jsonl")
    (h.inbox / "paired.jsonl").write_bytes(DEMO.read_bytes())
    os.symlink(outside / "secret.toml", h.inbox / "paired.toml")
    # a control character in a name must not split a log line
    (h.inbox / "two\nlines.jsonl").write_bytes(b"")
    # Work folders of curations: one cut off by a kill (its process is gone), one of a curation
    # running now
    import subprocess
    import sys

    gone = int(
        subprocess.run(
            [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
        ).stdout
    )
    abandoned, running = (
        h.datasets / f".big_20260101_000000.{gone}.tmp",
        h.datasets / f".other.{os.getpid()}.tmp",
    )
    for folder in (abandoned, running):
        folder.mkdir(parents=True)
        (folder / "train.jsonl.tmp").write_bytes(b"")

    started = time.monotonic()
    d = daemons(home, "--once")
    assert d.wait(120) == 0, d.output()
    assert time.monotonic() - started < 90  # the FIFO was not waited on

    with JobQueue(h.jobs_db) as queue:
        jobs = {job.file_name: job for job in queue.newest()}
    assert set(jobs) == {
        "linked.jsonl",
        "dangling.jsonl",
        "hard.jsonl",
        "pipe.jsonl",
        "paired.jsonl",
        "two\nlines.jsonl",
    }
    assert "is empty" in jobs.pop("two\nlines.jsonl").error
    log_lines = h.daemon_log.read_text().splitlines()
    assert log_lines and all(
        re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ", line) for line in log_lines
    ), log_lines
    assert any("two\\x0alines.jsonl" in line for line in log_lines)
    kinds = {
        "linked.jsonl": "is a symbolic link",
        "dangling.jsonl": "is a symbolic link",
        "hard.jsonl": "is a hard link",
        "pipe.jsonl": "is a named pipe (FIFO)",
        "paired.jsonl": "paired.toml is a symbolic link",
    }
    for name, kind in kinds.items():
        job = jobs[name]
        assert job.state.value == "failed" and job.message == REFUSED, (name, job)
        assert kind in job.error and "\n" not in job.error, (name, job.error)
        reason = (h.inbox_failed / f"{name}.error.txt").read_text()
        assert kind in reason and "not read" in reason
        assert os.path.lexists(h.inbox_failed / name)  # the entry itself is kept, as dropped
    assert stat.S_ISFIFO(os.lstat(h.inbox_failed / "pipe.jsonl").st_mode)
    assert os.path.islink(h.inbox_failed / "paired.toml")
    # No dataset folder for files never read, nor for the empty one; the abandoned work folder is
    # gone
    assert list(h.inbox_processing.iterdir()) == [] and list(h.datasets.iterdir()) == [running]
    # Nothing the links point at reached the home: no dataset, rejection, log line or queue row
    # holds it
    for path in _files_under(h.root):
        if not path.startswith(str(h.inbox_failed)):
            with open(path, "rb") as fh:
                assert SECRET.encode() not in fh.read(), path
    assert "TOPSECRET" not in json.dumps([job.to_dict() for job in jobs.values()])
    assert secret.read_text().count(SECRET) == 40  # untouched


def test_the_reader_opens_no_link_and_no_fifo(tmp_path):
    secret = _secret_file(tmp_path)
    link = tmp_path / "link.jsonl"
    os.symlink(secret, link)
    with pytest.raises(InputFileError, match="is a symbolic link"):
        list(read_items(link))
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    started = time.monotonic()
    with pytest.raises(InputFileError, match="not a regular file"):
        list(read_items(fifo))
    assert time.monotonic() - started < 5
    assert len(list(read_items(secret))) == 40


def test_a_link_you_name_yourself_is_followed_by_the_command(home, tmp_path):
    """`trainctl curate LINK` resolves the path you typed; only inbox entries are refused."""
    from typer.testing import CliRunner

    from cli.app import app

    link = tmp_path / "mine.jsonl"
    os.symlink(DEMO, link)
    result = CliRunner().invoke(app, ["curate", str(link), "--home", str(home)])
    assert result.exit_code == 0, result.output
    assert "accepted" in result.output


def _freeze(paths) -> bool:
    """Make folders unwritable even for root (`chattr +i`), or by mode when not root; False if
    neither can."""
    import shutil
    import subprocess

    if os.geteuid() != 0:
        for path in paths:
            path.chmod(0o555)
        return True
    if shutil.which("chattr") is None:
        return False
    return subprocess.run(["chattr", "+i", *map(str, paths)], capture_output=True).returncode == 0


def _thaw(paths) -> None:
    import subprocess

    if os.geteuid() != 0:
        for path in paths:
            path.chmod(0o755)
    else:
        subprocess.run(["chattr", "-i", *map(str, paths)], capture_output=True)


def test_a_read_only_home_is_one_line_and_loses_nothing(home):
    import subprocess
    import sys

    from tests.helpers import ROOT

    h = Home(home)
    (h.inbox / "a.jsonl").write_bytes(DEMO.read_bytes())
    h.logs.mkdir(parents=True, exist_ok=True)
    frozen = [h.status_dir, h.data, h.logs]
    if not _freeze(frozen):
        pytest.skip("this machine can make no folder read-only for root (no chattr)")
    try:
        for args in (["daemon", "--once"], ["train", str(DEMO)]):
            done = subprocess.run(
                [sys.executable, "-m", "cli", *args, "--home", str(home)],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=120,
            )
            said = done.stderr.strip()
            assert done.returncode == 1, (args, done.stdout, said)
            assert (
                said.startswith(f"Error: cannot write to {h.status_dir}") and "--home" in said
            ), said
            assert len(said.splitlines()) == 1 and "Traceback" not in done.stdout + said, said
    finally:
        _thaw(frozen)
    # the dropped file is where it was
    assert (h.inbox / "a.jsonl").read_bytes() == DEMO.read_bytes()


def test_a_second_worker_of_a_job_waits_for_the_first(home, daemons):
    """As after a kill -9 of the daemon alone with a restart at once: the old worker still holds
    the job."""
    import fcntl

    from tests.helpers import jobs, wait_for

    h = Home(home)
    h.run_dir(1).mkdir(parents=True)
    holder = open(h.run_dir(1) / "worker.lock", "a+")
    fcntl.flock(holder, fcntl.LOCK_EX)
    holder.write("424242\n")
    holder.flush()
    try:
        (h.inbox / "a.jsonl").write_bytes(DEMO.read_bytes())
        d = daemons(home, "--once", "--max-steps", "5")
        said = "job 1: waiting for its previous worker (pid 424242) to finish saving"
        wait_for(
            lambda: h.job_log(1).exists() and said in h.job_log(1).read_text(),
            120,
            "the waiting line",
        )
        time.sleep(1.0)
        # nothing curated, nothing written while the other holds the job
        assert not any(h.datasets.iterdir())
        assert jobs(home)[0].state.value in ("queued", "interrupted")
    finally:
        holder.close()
    assert d.wait(240) == 0, d.output()
    (job,) = jobs(home)
    assert job.state.value == "done", job
    assert (h.run_dir(1) / "worker.lock").read_text().strip() != "424242"  # the new worker's pid


def test_wide_unicode_input_is_named_as_such(tmp_path):
    for encoding, name in (("utf-16", "UTF-16"), ("utf-32", "UTF-32")):
        path = tmp_path / f"{encoding}.jsonl"
        # with its byte-order mark
        path.write_text('{"prompt": "q", "completion": "a"}\n', encoding=encoding)
        with pytest.raises(InputFileError, match=f"is {name} text .* re-save it as UTF-8"):
            list(read_items(path))


def test_queue_says_when_a_job_s_worker_is_gone(tmp_path, wide_console):
    import subprocess
    import sys

    from typer.testing import CliRunner

    from cli.app import app
    from daemon.jobs import JobState

    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    h = Home.open(tmp_path)
    with JobQueue(h.jobs_db) as queue:
        job = queue.enqueue("a.jsonl", h.inbox_processing / "a.jsonl", "sha")
        queue.transition(job.id, JobState.CURATING, worker_pid=int(gone.stdout))
    shown = CliRunner().invoke(app, ["queue", "--home", str(tmp_path)])
    assert shown.exit_code == 0 and "stopped (daemon not running)" in shown.output, shown.output


def test_blank_lines_are_counted_and_said(tmp_path):
    """`wc -l` and stats.json agree: blank lines are lines read, said apart from the records."""
    from daemon.config import CurationConfig, TrainConfig
    from daemon.curation.curator import Curator

    lines = DEMO.read_text().splitlines()[:30]
    src = tmp_path / "gaps.jsonl"
    src.write_text("\n".join(lines[:10]) + "\n\n" + "\n".join(lines[10:]) + "\n   \n")
    result = Curator(CurationConfig(), TrainConfig(), workers=1).run(src, tmp_path / "ds")
    stats = json.loads((tmp_path / "ds" / "stats.json").read_text())
    assert (stats["lines_read"], stats["blank_lines"], stats["records"]) == (32, 2, 30)
    assert stats["accounted_for"] and result.records == stats["accepted"] + stats["rejected"]


@pytest.mark.slow
def test_kill_9_while_curating_leaves_no_half_dataset_and_the_job_finishes(
    home, daemons, tmp_path
):
    """A power cut in the middle of curating a large file: the pool workers go with it, the work
    folder is removed at the next start, the file is curated again into one whole dataset and the
    job finishes."""
    import itertools
    import signal

    from tests.helpers import WORDS, jobs, wait_for

    h = Home(home)
    rows = [
        {
            "prompt": f"Uppercase: {a} {b} {c} {i}",
            "completion": f"{a.upper()} {b.upper()} {c.upper()} {i}",
        }
        for i, (a, b, c) in zip(range(60_000), itertools.cycle(itertools.permutations(WORDS, 3)))
    ]
    big = write_jsonl(tmp_path / "big.jsonl", rows)
    os.rename(big, h.inbox / "big.jsonl")
    d = daemons(home, "--max-steps", "3")
    wait_for(lambda: list(h.datasets.glob(".*.tmp")), 120, "curation to start")
    (job,) = jobs(home)
    worker = job.worker_pid
    wait_for(lambda: _children(worker), 60, "the curation's pool")
    pool = _children(worker)
    d.kill(signal.SIGKILL)
    d.wait(10)
    os.kill(worker, signal.SIGKILL)
    wait_for(
        lambda: not any(_alive(pid) for pid in [worker, *pool]),
        30,
        "the worker and its pool to die",
    )
    assert list(h.datasets.glob(".*.tmp"))  # cut off mid-way: the work folder is left...
    again = daemons(home, "--once", "--max-steps", "3")
    assert again.wait(600) == 0, again.output()
    (job,) = jobs(home)
    assert job.state.value == "done", job
    # ...and removed at the start
    assert [p.name for p in h.datasets.iterdir() if p.name.startswith(".")] == []
    assert len(list(h.datasets.iterdir())) == 1
    assert (
        json.loads((h.datasets.iterdir().__next__() / "stats.json").read_text())["lines_read"]
        == 60_000
    )
    log = h.job_log(1).read_text()
    assert "Traceback" not in log and "BrokenPipeError" not in log, log[-2000:]


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(child) for child in fh.read().split()]
    except OSError:
        return []


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
def test_a_daemon_restarted_at_once_after_kill_9_resumes_without_a_second_writer(home, daemons):
    """kill -9 of the daemon alone, a new daemon at once: the old worker saves and goes, then the
    new one resumes from that very checkpoint; every step is trained and logged once."""
    import signal

    from tests.helpers import drop_demo, jobs, status, wait_for

    h = Home(home)
    # no periodic checkpoint before the kill
    d = daemons(home, "--epochs", "20", "--save-steps", "500")
    drop_demo(home)
    wait_for(lambda: status(home).get("current_step", 0) >= 30, 120, "training progress")
    d.kill(signal.SIGKILL)
    again = daemons(home)  # at once: the old worker is still saving
    try:
        wait_for(lambda: jobs(home)[0].state.value == "done", 600, "the job to finish")
    finally:
        again.kill(signal.SIGTERM)
        again.wait(60)
    (job,) = jobs(home)
    assert job.attempts == 2 and "resumed from checkpoint-" in job.message, job
    resumed = int(job.message.split("resumed from checkpoint-")[1].split()[0].rstrip(",;"))
    assert resumed >= 30  # the old worker's stop checkpoint, not the start
    steps = [
        json.loads(row)["current_step"]
        for row in (h.run_dir(1) / "metrics.jsonl").read_text().splitlines()
    ]
    assert steps == list(range(1, 841))
    assert "Traceback" not in h.job_log(1).read_text()


@pytest.mark.slow
def test_kill_9_during_export_leaves_no_half_folder_and_the_next_export_works(home):
    import signal
    import subprocess
    import sys

    from typer.testing import CliRunner

    from cli.app import app
    from tests.helpers import ROOT

    h = Home(home)
    trained = CliRunner().invoke(
        app, ["train", str(DEMO), "--home", str(home), "--max-steps", "4"]
    )
    assert trained.exit_code == 0, trained.output
    merged = h.data / "exports" / "job-1-merged"
    work = merged.with_name(f".{merged.name}.tmp")
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", "export", "1", "--merge", "--home", str(home)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while not work.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)  # mid-write (or just after, on a fast machine)
    proc.wait(30)
    # old or new, never half: a folder there is a whole export
    assert not merged.exists() or (merged / "trainctl_export.json").exists()
    if merged.exists():
        import shutil

        shutil.rmtree(merged)
    done = subprocess.run(
        [sys.executable, "-m", "cli", "export", "1", "--merge", "--home", str(home)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (merged / "trainctl_export.json").exists() and (merged / "config.json").exists()
    assert [p.name for p in merged.parent.iterdir() if p.name.startswith(".")] == []


@pytest.mark.slow
def test_kill_9_in_the_middle_of_a_checkpoint_save_resumes_from_the_one_before(
    home, daemons, monkeypatch
):
    """A checkpoint cut off mid-save (files written, no completeness marker) is never resumed
    from."""
    from typer.testing import CliRunner

    from cli.app import app
    from daemon.runs.checkpoints import COMPLETE_MARKER
    from tests.helpers import complete_checkpoints, drop_demo, jobs

    h = Home(home)
    monkeypatch.setenv("TRAINCTL_FAULT", "kill_in_save_at_step=80")
    drop_demo(home)  # before the daemon: `--once` ends when it finds nothing to do
    first = daemons(home, "--once", "--max-steps", "120", "--save-steps", "40")
    assert first.wait(300) == 0, first.output()
    (job,) = jobs(home)
    assert job.state.value == "failed" and "SIGKILL" in job.error, job
    cut = h.run_dir(1) / "checkpoints" / "checkpoint-80"
    assert cut.is_dir() and not (cut / COMPLETE_MARKER).exists()
    # The periodic one at 40, or a best one saved later (the rotation keeps two, the cut one among
    # them): the newest complete checkpoint is the one to resume from.
    kept = complete_checkpoints(home, 1)
    assert kept and kept[-1] < 80, kept
    monkeypatch.delenv("TRAINCTL_FAULT")
    retried = CliRunner().invoke(app, ["retry", "1", "--home", str(home)])
    assert retried.exit_code == 0, retried.output
    again = daemons(home, "--once")
    assert again.wait(300) == 0, again.output()
    (job,) = jobs(home)
    assert job.state.value == "done" and f"resumed from checkpoint-{kept[-1]}" in job.message, job
    steps = [
        json.loads(row)["current_step"]
        for row in (h.run_dir(1) / "metrics.jsonl").read_text().splitlines()
    ]
    assert steps == list(range(1, 121))
