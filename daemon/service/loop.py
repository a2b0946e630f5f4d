"""The daemon: watch the inbox, queue stable files (with their own settings), run jobs in child
processes, record outcomes, send notices.

Devices are a resource of the queue (daemon/devices.py): as many jobs run at once as free GPU sets
(or CPU slots) allow, highest priority first, each child seeing only its own GPUs and holding its
own rendezvous port. The loop is single-threaded (watchdog's observer thread only notes paths; the
notifier's thread only delivers). Signals set a flag; every running job's child gets SIGTERM, saves
a checkpoint and exits as INTERRUPTED; the next start resumes them. Each child's output goes to
data/logs/job-N.log; the daemon's own lines to stdout and data/logs/daemon.log.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from daemon.atomic import read_json, write_json_atomic, write_text_atomic
from daemon.config import Settings
from daemon.curation.curator import remove_abandoned
from daemon.devices import Devices, Placement
from daemon.errors import ConfigError, HomeError, TrainctlError
from daemon.hashing import file_sha256
from daemon.home import Home
from daemon.jobs import ACTIVE, TERMINAL, Job, JobQueue, JobState
from daemon.service import file_settings, instance_lock
from daemon.service.inbox_files import REFUSED, file_away, processing_name, refusal, sidecar_of
from daemon.service.notify import AlertWatch, Notifier, job_notice
from daemon.service.watcher import SUFFIXES, InboxWatcher
from daemon.service.worker import PLACEMENT_ENV, job_settings

log = logging.getLogger("trainctl.daemon")

SPLIT_WRITER_SECONDS = 30.0
"""Files of one name taken this close together are flagged as likely pieces of one slow writer's
file."""
LATE_SIDECAR_SECONDS = 600.0
"""A settings file dropped at most this long after its data file was taken belongs to that file's
job."""


class Daemon:
    def __init__(self, home: Home, settings: Settings, job_overrides: dict | None = None):
        self.home = home
        self.settings = settings
        self.queue = JobQueue(home.jobs_db)
        self.watcher = InboxWatcher(home.inbox, settings.daemon.stable_seconds)
        self.devices = Devices(settings.daemon)
        self.children: dict[int, subprocess.Popen] = {}
        """Running jobs: job id -> its worker process (the leader of the job's process group)."""
        self.stopping = False
        self._home_problem: str | None = None  # the unwritable folder last reported
        self.started_at = time.time()
        self._last_beat = 0.0
        self.job_overrides = job_overrides or {}
        """Setting overrides (daemon flags) stored with every job this run queues."""
        self.notifier = Notifier(settings.notify, home)
        self.alerts = AlertWatch()

    # -- lifecycle
    # -------------------------------------------------------------------------------------------
    def run(self, once: bool = False) -> int:
        # One daemon per home: a lock the kernel releases when this process dies, however it dies
        self._lock = instance_lock.hold(self.home.status_dir)
        if self._lock is None:
            pid = (read_json(self.home.daemon_status) or {}).get("pid")
            raise TrainctlError(
                f"a daemon is already running for {self.home.root}"
                + (f" (pid {pid})" if pid else "")
                + " — run `trainctl stop` first"
            )
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        self._heartbeat("starting", force=True)
        for job in self.queue.recover_orphans():
            log.info("job %s (%s) was cut off; it will resume", job.id, job.file_name)
        for folder in remove_abandoned(self.home.datasets):
            log.info("removed %s, the work folder of a curation cut off by a kill", folder.name)
        self._adopt_processing_files()
        self.watcher.start()
        log.info("watching %s (stop with Ctrl-C or `trainctl stop`)", self.home.inbox)
        try:
            while True:
                self._heartbeat("working" if self.children else "idle")
                self._enqueue_ready_files()
                self._late_sidecars()
                for job_id in list(self.children):
                    self._notify_alerts(job_id)
                    self._check_child(job_id)
                if self.stopping:
                    if not self.children:
                        break
                else:
                    started = self._start_what_fits()
                    if (
                        once
                        and not started
                        and not self.children
                        and self.watcher.pending == 0
                        and self.queue.next_runnable() is None
                    ):
                        break
                time.sleep(self.settings.daemon.poll_seconds)
        finally:
            self.watcher.stop()
            self.notifier.close()
            self._heartbeat("stopped", force=True)
            self.queue.close()
            self._lock.close()
        return 0

    def _on_signal(self, signum, frame) -> None:
        if not self.stopping:
            log.info(
                "stop requested (%s): the current job will "
                "checkpoint and resume on the next start",
                signal.Signals(signum).name,
            )
        self.stopping = True
        for child in self.children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    def _heartbeat(self, state: str, force: bool = False) -> None:
        now = time.time()
        if not force and now - self._last_beat < self.settings.daemon.heartbeat_seconds:
            return
        self._last_beat = now
        doc = {
            "pid": os.getpid(),
            "state": "stopping" if self.stopping and state != "stopped" else state,
            "started_at": self.started_at,
            "heartbeat_at": now,
            "current_job": min(self.children, default=None),
            "running_jobs": {
                str(j): self.devices.held[j].describe()
                for j in sorted(self.children)
                if j in self.devices.held
            },
            "heartbeat_seconds": self.settings.daemon.heartbeat_seconds,
            "home": str(self.home.root),
        }
        try:
            write_json_atomic(self.home.daemon_status, doc)
        # a disk gone read-only: said once by _start_what_fits, not a crash here
        except OSError as exc:
            log.debug("heartbeat not written: %s", exc)

    # -- inbox -> queue
    # --------------------------------------------------------------------------------------
    def _adopt_processing_files(self) -> None:
        """Files moved to processing/ by a daemon killed before it could insert their job row."""
        jobs = self.queue.newest(limit=100_000)
        known = {Path(j.file_path) for j in jobs} | {
            Path(j.settings_file) for j in jobs if j.settings_file
        }
        for p in sorted(self.home.inbox_processing.iterdir()):
            if not p.is_dir() and p not in known and p.suffix != ".toml":
                name = p.name.split("-", 1)[-1]
                self._enqueue(p, name, self._take_sidecar(self.home.inbox / name, p))

    def _take_sidecar(self, src: Path, dest: Path) -> Path | None:
        """The settings file that came with `src` (now at `dest` in processing/), moved beside it;
        None if none. A daemon killed between the two renames left it in the inbox: it is taken
        from there."""
        moved = sidecar_of(dest)
        if moved.exists():
            return moved
        try:
            os.rename(sidecar_of(src), moved)
        except FileNotFoundError:
            return None
        return moved

    def _enqueue_ready_files(self) -> None:
        for path in self.watcher.ready():
            # The rename is the commit point: once in processing/, the file belongs to the queue;
            # its sidecar (x.toml) follows it.
            dest = self.home.unique_path(self.home.inbox_processing, processing_name(path.name))
            try:
                os.rename(path, dest)
            except FileNotFoundError:
                continue
            self._enqueue(dest, path.name, self._take_sidecar(path, dest))

    def _late_sidecars(self) -> None:
        """A settings file (x.toml) still in the inbox after its data file was taken: applied to
        the job if it has not started, else moved to inbox/failed/ with the reason. Never left
        there without a word. A sidecar that came more than LATE_SIDECAR_SECONDS after the newest
        job of its name is for a data file yet to come, and waits for it, as does one whose data
        file never came."""
        now = time.time()
        for side in self.home.inbox.glob("*.toml"):
            names = [side.with_suffix(suffix).name for suffix in SUFFIXES]
            try:
                arrived = os.lstat(side).st_mtime
            except FileNotFoundError:
                continue
            if now - arrived < self.settings.daemon.stable_seconds:
                continue  # still being written
            if any(os.path.lexists(self.home.inbox / name) for name in names):
                continue  # its data file is still here: the watcher takes the pair together
            job = next((j for j in self.queue.newest(limit=1000) if j.file_name in names), None)
            if job is None or arrived - job.created_at > LATE_SIDECAR_SECONDS:
                continue
            if (
                job.state is JobState.QUEUED
                and not job.settings_file
                and job.id not in self.children
            ):
                self._apply_late_sidecar(job, side)
            else:
                why = (
                    f"{side.name} arrived after {job.file_name} was taken as job {job.id}, "
                    f"which is {job.state.value} now: its settings were not applied — drop "
                    f"both files again, or `trainctl retry {job.id} --set section.key=value`"
                )
                dest = self.home.unique_path(self.home.inbox_failed, side.name)
                try:
                    os.rename(side, dest)
                except FileNotFoundError:
                    continue
                write_text_atomic(dest.with_name(dest.name + ".error.txt"), why + "\n")
                log.warning("%s", why)
                # a running job's worker writes it
                if job.id not in self.children and job.state not in ACTIVE:
                    note = f"{side.name} came too late and was not applied (inbox/failed/)"
                    self.queue.update(
                        job.id, message=f"{job.message}; {note}" if job.message else note
                    )

    def _apply_late_sidecar(self, job: Job, side: Path) -> None:
        moved = sidecar_of(Path(job.file_path))
        try:
            os.rename(side, moved)
        except FileNotFoundError:
            return
        try:
            own = file_settings.resolve(
                self.home.settings_file, job.file_name, moved, self.job_overrides
            )
        except ConfigError as exc:
            self.queue.update(job.id, settings_file=str(moved))
            failed = self.queue.transition(
                job.id, JobState.FAILED, error=str(exc), message="bad settings"
            )
            log.error("%s: %s", job.file_name, exc)
            self._ended(failed)
            return
        self.queue.update(
            job.id,
            settings_file=str(moved),
            priority=own.priority,
            overrides=json.dumps(own.overrides) if own.overrides else None,
            message=f"settings from {side.name}, which came after {job.file_name}",
        )
        log.info(
            "%s arrived after %s: its settings apply to job %s", side.name, job.file_name, job.id
        )

    def _enqueue(self, path: Path, name: str, sidecar: Path | None = None) -> Job:
        problem = refusal(path) or (refusal(sidecar) if sidecar is not None else None)
        if problem is not None:
            # Not opened, not hashed: the job exists only to say why, and its file goes to
            # inbox/failed/
            job = self.queue.enqueue(name, path, "", settings_file=sidecar)
            job = self.queue.transition(job.id, JobState.FAILED, error=problem, message=REFUSED)
            log.error("%s: %s", name, problem)
            self._ended(job)
            return job
        try:
            sha = file_sha256(path, follow_symlinks=False)
        except OSError as exc:
            log.warning("cannot read %s: %s", path, exc)
            sha = ""
        try:
            own = file_settings.resolve(self.home.settings_file, name, sidecar, self.job_overrides)
            problem = None
        except ConfigError as exc:
            own, problem = file_settings.FileSettings(dict(self.job_overrides)), str(exc)
        job = self.queue.enqueue(
            name,
            path,
            sha,
            overrides=own.overrides or None,
            priority=own.priority,
            settings_file=sidecar,
        )
        if problem is not None:
            job = self.queue.transition(
                job.id, JobState.FAILED, error=problem, message="bad settings"
            )
            log.error("%s: %s", name, problem)
            self._ended(job)
            return job
        same = (
            self.queue.find_same_content(sha, exclude_id=job.id, overrides=own.overrides)
            if sha
            else None
        )
        if same and self.settings.daemon.skip_duplicates:
            msg = (
                f"same content and settings as job {same.id} "
                f"({same.file_name}, {same.state.value}) — not trained again; "
                f"run `trainctl train {name} --force` to train it anyway"
            )
            job = self.queue.transition(job.id, JobState.SKIPPED, message=msg)
            file_away(self.home, self.queue, job)
            log.info("%s: %s", name, msg)
        else:
            extra = f" with settings from {' and '.join(own.sources)}" if own.sources else ""
            extra += f", priority {own.priority}" if own.priority else ""
            log.info("queued %s as job %s%s", name, job.id, extra)
            self._warn_if_split(job)
        return job

    def _warn_if_split(self, job: Job) -> None:
        """A file of the same name taken a moment ago: likely one writer that closes and reopens it
        per line, each pause long enough to look finished. Said in the log and on the job, so the
        pieces are noticed."""
        before = next(
            (
                j
                for j in self.queue.newest(limit=50)
                if j.id != job.id and j.file_name == job.file_name
            ),
            None,
        )
        if before is None or job.created_at - before.created_at > SPLIT_WRITER_SECONDS:
            return
        note = (
            f"another {job.file_name} came {job.created_at - before.created_at:.0f}s after "
            f"job {before.id} took one: if one writer is still adding to it, these jobs are "
            "pieces of one file — write it elsewhere and rename it into inbox/ when complete"
        )
        self.queue.update(job.id, message=note)
        log.warning("job %s: %s", job.id, note)

    # -- jobs
    # ---------------------------------------------------------------------------------------------
    def _start_what_fits(self) -> bool:
        """Start queued jobs, in order, while the devices they ask for are free; True if one
        started."""
        started = False
        while True:
            job = self.queue.next_runnable(exclude=set(self.children))
            if job is None:
                return started
            try:
                self.home.check_writable()
            except HomeError as exc:
                if not self.children:
                    raise  # nothing is running: the daemon stops with this one line
                # running jobs go on; no new one starts meanwhile
                if self._home_problem != str(exc):
                    log.error("%s; no new job starts until then", exc)
                    self._home_problem = str(exc)
                return started
            self._home_problem = None
            try:
                place = self.devices.take(job.id, job_settings(self.home, job))
            # settings invalid, or more devices than the machine has: never runnable
            except TrainctlError as exc:
                job = self.queue.transition(
                    job.id, JobState.FAILED, error=str(exc), message="cannot be placed"
                )
                log.error("job %s: %s", job.id, exc)
                self._ended(job)
                continue
            if place is None:
                # the next job in line waits for devices; later ones do not overtake it
                return started
            self._start(job, place)
            started = True

    def _start(self, job: Job, place: Placement) -> None:
        log.info(
            "job %s: %s %s on %s",
            job.id,
            "resuming" if job.state == JobState.INTERRUPTED else "starting",
            job.file_name,
            place.describe(),
        )
        self.queue.update(job.id, devices=json.dumps(place.to_dict()))
        cmd = [
            sys.executable,
            "-m",
            "daemon.service.worker",
            "--home",
            str(self.home.root),
            "--job",
            str(job.id),
        ]
        env = {
            **os.environ,
            PLACEMENT_ENV: json.dumps(place.to_dict()),
            **place.env(),
            "PYTHONUNBUFFERED": "1",
        }
        self.alerts.start(job.id, self.home.run_dir(job.id) / "alerts.jsonl")
        self.home.logs.mkdir(parents=True, exist_ok=True)
        with open(self.home.job_log(job.id), "ab") as out:
            out.write(
                f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} job {job.id}: {job.file_name} on "
                f"{place.describe()}\n".encode()
            )
            out.flush()
            # A new session: Ctrl-C in the daemon's terminal reaches the daemon, which asks the
            # child to checkpoint; the job's other processes (torchrun and its ranks) join this
            # session and live and die with it.
            self.children[job.id] = subprocess.Popen(
                cmd,
                start_new_session=True,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        log.info(
            "job %s: output in %s (`trainctl logs -f %s`)",
            job.id,
            self.home.job_log(job.id),
            job.id,
        )
        self._heartbeat("working", force=True)

    def _check_child(self, job_id: int) -> None:
        child = self.children[job_id]
        code = child.poll()
        if code is None:
            return
        job = self.queue.get(job_id)
        if job.state in ACTIVE or job.state == JobState.QUEUED:
            # The child died without recording an outcome: killed (OOM?), segfault, or killed while
            # curating. asked to pause or cancel (trainctl pause/cancel)
            if job.request and job.state in ACTIVE:
                job = self.queue.stopped(job.id, "stopped")
            elif self.stopping and code in (-signal.SIGTERM, 128 + signal.SIGTERM):
                job = self.queue.transition(
                    job.id,
                    JobState.INTERRUPTED,
                    worker_pid=None,
                    message="stopped before its first checkpoint; restarts on next start",
                )
            else:
                why = (
                    f"killed by signal {signal.Signals(-code).name}"
                    if code < 0
                    else f"exited with code {code}"
                )
                hint = (
                    " (out of memory? try a smaller --batch-size or --max-length)"
                    if code == -signal.SIGKILL
                    else ""
                )
                job = self.queue.transition(
                    job.id,
                    JobState.FAILED,
                    worker_pid=None,
                    error=f"training process {why}{hint}",
                    message="worker crashed",
                )
                log.error("job %s: training process %s%s", job.id, why, hint)
        _end_group(child.pid)
        del self.children[job_id]
        self.devices.release(job_id)
        self.alerts.forget(job_id)
        if job.state in TERMINAL:
            self._ended(job)
        else:
            log.info("job %s: %s — %s", job.id, job.state.value, job.message or "")
        self._heartbeat("working" if self.children else "idle", force=True)

    def _ended(self, job: Job) -> None:
        """A job reached a terminal state: its file filed away, a line in the log, a notice."""
        file_away(self.home, self.queue, job)
        log.info("job %s: %s — %s", job.id, job.state.value, job.error or job.message or "")
        if job.state in (JobState.DONE, JobState.FAILED, JobState.CANCELLED):
            self.notifier.send(job_notice(self.home, self.queue.get(job.id), job.state.value))

    def _notify_alerts(self, job_id: int) -> None:
        """Critical (and warning) alerts a running job has just raised, as notices."""
        if not self.notifier.wants_alerts:
            return
        for alert in self.alerts.new_firings(job_id, self.home.run_dir(job_id) / "alerts.jsonl"):
            if alert.get("severity") in ("critical", "warning"):
                self.notifier.send(
                    job_notice(self.home, self.queue.get(job_id), alert["severity"], alert)
                )


def _end_group(pgid: int) -> None:
    """Kill what is left of a finished job's process group (a rank that outlived its launcher), so
    that no stray process holds the job's GPUs or port after the daemon hands them to the next
    job."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


_CONTROL = {code: f"\\x{code:02x}" for code in (*range(0x20), 0x7F)}


class _PrintableFormatter(logging.Formatter):
    """One log line per record: control characters (a newline in a dropped file's name, an escape
    sequence) are written as \\xNN, so a name can neither split a line nor forge one nor drive the
    terminal."""

    # a traceback after it keeps its lines
    def formatMessage(self, record: logging.LogRecord) -> str:
        return super().formatMessage(record).translate(_CONTROL)


def setup_logging(log_file: Path | None = None) -> None:
    """The daemon's lines on stdout and appended to `log_file` (unless stdout already is that file:
    a detached daemon's output is redirected there whole)."""
    fmt = _PrintableFormatter("%(asctime)s %(message)s", datefmt="%Y-%m-%d %H:%M:%S")
    root = logging.getLogger("trainctl")
    root.setLevel(logging.INFO)
    root.propagate = False
    for h in list(root.handlers):
        root.removeHandler(h)
    out = logging.StreamHandler(sys.stdout)
    out.setFormatter(fmt)
    root.addHandler(out)
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        try:
            same = os.path.samestat(os.fstat(sys.stdout.fileno()), os.stat(log_file))
        except (OSError, ValueError):
            same = False
        if not same:
            fh = logging.FileHandler(log_file, encoding="utf-8")
            fh.setFormatter(fmt)
            root.addHandler(fh)
