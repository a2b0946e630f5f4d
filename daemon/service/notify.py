"""Notices: the daemon tells a webhook and/or a command when a job ends (done, failed, cancelled)
or raises a critical (optionally warning) alert. `[notify]` in trainctl.toml.

Delivered by one thread of the daemon, never by a training process, in the order the events
happened. Each delivery is tried `1 + retries` times with doubling waits; one that hangs is
abandoned after `timeout_seconds`. A failing hook is logged and never stops or slows a job: the
daemon's loop only puts notices on a queue.

Durable: each notice is written to data/notify/outbox/ before it is queued and removed once every
hook has accepted it, so a daemon killed with notices still queued sends them at its next start, in
order: at least once, never silently lost. Each carries an idempotency key (event, job, state; the
alert and its step for alerts) in its body and in an `Idempotency-Key` header, so a receiver can
drop a repeat. A notice a hook refused through all its retries is moved to data/notify/failed/
(with why) and `trainctl status` counts it.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import queue
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from daemon.atomic import read_json, write_json_atomic
from daemon.config import NotifyConfig
from daemon.home import Home
from daemon.jobs import Job

log = logging.getLogger("trainctl.daemon")

_FIGURES = ("steps", "final_loss", "stopped_early", "resumed_from")


def job_notice(
    home: Home, job: Job, event: str, alert: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The JSON body of one notice: what happened to which job, with its figures and adapter."""
    result = read_json(home.run_dir(job.id) / "result.json") or {}
    figures = {k: result.get(k) for k in _FIGURES if result.get(k) is not None}
    for split in ("train_eval", "test_eval", "base_test_eval"):
        em = (result.get(split) or {}).get("exact_match")
        if em is not None:
            figures[f"{split.removesuffix('_eval')}_exact_match"] = em
    body: dict[str, Any] = {
        "event": event,
        "job": job.id,
        "file": job.file_name,
        "state": job.state.value,
        "message": job.message,
        "error": job.error,
        "figures": figures,
        "adapter": job.adapter_dir,
        "home": str(home.root),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    key = f"{event}:job-{job.id}:{job.state.value}"
    if alert is not None:
        body["alert"] = {
            k: alert.get(k) for k in ("id", "severity", "message", "recommendation", "step")
        }
        key += f":{alert.get('id')}:step-{alert.get('step')}"
    body["idempotency_key"] = key
    return body


class Notifier:
    """A queue of notices and the one thread that delivers them; with `home`, backed by its outbox
    folder."""

    def __init__(self, cfg: NotifyConfig, home: Home | None = None):
        self.cfg = cfg
        self.outbox = home.notify_outbox if home is not None else None
        self.failed = home.notify_failed if home is not None else None
        self._queue: queue.Queue[tuple[dict[str, Any], Path | None] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._seq = 0
        self.delivered = 0
        self.given_up = 0
        if self.outbox is not None and self.enabled:
            self._resend_outbox()

    def _resend_outbox(self) -> None:
        """Queue what a killed daemon left in the outbox, oldest first."""
        assert self.outbox is not None and self.failed is not None
        names = [
            path.name
            for folder in (self.outbox, self.failed)
            if folder.is_dir()
            for path in folder.iterdir()
            if path.suffix == ".json"
        ]
        self._seq = max(
            (int(name.split("-", 1)[0]) for name in names if name.split("-", 1)[0].isdigit()),
            default=0,
        )
        left = sorted(path for path in self.outbox.glob("*.json")) if self.outbox.is_dir() else []
        for path in left:
            notice = read_json(path)
            if isinstance(notice, dict) and "event" in notice:
                log.info(
                    "notice %s: sending again after a restart",
                    notice.get("idempotency_key", path.name),
                )
                self._put(notice, path)

    @property
    def enabled(self) -> bool:
        return bool(self.cfg.webhook or self.cfg.command)

    @property
    def wants_alerts(self) -> bool:
        """Whether alert notices are sent at all (else the daemon need not read the jobs' alert
        files)."""
        return self.enabled and bool({"critical", "warning"} & set(self.cfg.events))

    def send(self, notice: dict[str, Any]) -> None:
        """Queue `notice` if a hook is set and its event is wanted (written to the outbox first);
        returns at once."""
        if not self.enabled or notice["event"] not in self.cfg.events:
            return
        path = None
        if self.outbox is not None:
            self._seq += 1
            path = self.outbox / f"{self._seq:09d}-{notice['event']}-job{notice['job']}.json"
            try:
                write_json_atomic(path, notice)
            # a disk gone read-only: still sent now, only not kept for a restart
            except OSError as exc:
                log.warning(
                    "notice %s: not written to the outbox (%s); sending it anyway", path.name, exc
                )
                path = None
        self._put(notice, path)

    def _put(self, notice: dict[str, Any], path: Path | None) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="notices", daemon=True)
            self._thread.start()
        self._queue.put((notice, path))

    def close(self, timeout: float | None = None) -> None:
        """Deliver what is queued (waiting at most `timeout`, default one delivery's limit per
        queued notice and hook, plus their backoffs), then stop the thread."""
        if self._thread is None:
            return
        pending = self._queue.qsize() + 1
        hooks = bool(self.cfg.webhook) + bool(self.cfg.command)
        if timeout is None:
            timeout = pending * hooks * (self.cfg.timeout_seconds + self.cfg.backoff_seconds) + 5
        self._queue.put(None)
        self._thread.join(timeout)
        if self._thread.is_alive():
            kept = (
                " (kept in data/notify/outbox/: the next start sends them)" if self.outbox else ""
            )
            log.warning(
                "notices: %d not delivered before the daemon stopped%s", self._queue.qsize(), kept
            )

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            notice, path = item
            body = json.dumps(notice).encode()
            key = str(notice.get("idempotency_key", ""))
            what = f"job {notice['job']} {notice['event']}"
            refused = []
            if self.cfg.webhook and not self._deliver(
                f"webhook {self.cfg.webhook}", what, functools.partial(self._post, key=key), body
            ):
                refused.append("webhook")
            if self.cfg.command and not self._deliver(
                f"command {self.cfg.command!r}", what, self._run_command, body
            ):
                refused.append("command")
            if path is not None:
                self._settle(path, notice, refused)

    def _settle(self, path: Path, notice: dict[str, Any], refused: list[str]) -> None:
        """Out of the outbox: gone when delivered, kept in failed/ (with which hook refused it)
        when not."""
        assert self.failed is not None
        try:
            if refused:
                write_json_atomic(self.failed / path.name, {**notice, "refused_by": refused})
            os.unlink(path)
        # a disk gone read-only: the outbox keeps it, and the next start sends it again
        except OSError as exc:
            log.warning("notice %s: outbox not updated: %s", path.name, exc)

    def _deliver(
        self, target: str, what: str, attempt: Callable[[bytes], None], body: bytes
    ) -> bool:
        delay = self.cfg.backoff_seconds
        tries = 1 + self.cfg.retries
        for n in range(1, tries + 1):
            try:
                attempt(body)
                self.delivered += 1
                log.info("notice %s: delivered to %s", what, target)
                return True
            # any failure of a hook is logged, never raised
            except Exception as exc:  # noqa: BLE001
                if n == tries:
                    self.given_up += 1
                    log.warning(
                        "notice %s: %s failed %d time(s), giving "
                        "up (kept in data/notify/failed/): %s",
                        what,
                        target,
                        tries,
                        exc,
                    )
                    return False
                log.info("notice %s: %s failed (%s); retrying in %.0fs", what, target, exc, delay)
                time.sleep(delay)
                delay *= 2
        return False

    def _post(self, body: bytes, key: str = "") -> None:
        headers = {"Content-Type": "application/json", "User-Agent": "trainctl"}
        if key:
            headers["Idempotency-Key"] = key
        req = urllib.request.Request(self.cfg.webhook, data=body, method="POST", headers=headers)
        # the URL is the user's own webhook
        timeout = self.cfg.timeout_seconds
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
            if not 200 <= resp.status < 300:
                raise urllib.error.HTTPError(
                    self.cfg.webhook, resp.status, "not a 2xx answer", resp.headers, None
                )

    def _run_command(self, body: bytes) -> None:
        r = subprocess.run(
            self.cfg.command,
            shell=True,
            input=body,
            capture_output=True,  # noqa: S602
            timeout=self.cfg.timeout_seconds,
        )
        if r.returncode != 0:
            raise RuntimeError(
                f"exit code {r.returncode}: {r.stderr.decode(errors='replace').strip()[-300:]}"
            )


class AlertWatch:
    """New alert firings of running jobs, read from their alerts.jsonl (appended by the training
    process)."""

    def __init__(self) -> None:
        self._offsets: dict[int, int] = {}

    def new_firings(self, job_id: int, path: Path) -> list[dict[str, Any]]:
        try:
            with open(path, "rb") as fh:
                fh.seek(self._offsets.get(job_id, 0))
                data = fh.read()
        except FileNotFoundError:
            return []
        complete = data[: data.rfind(b"\n") + 1]  # a line being written waits for the next look
        self._offsets[job_id] = self._offsets.get(job_id, 0) + len(complete)
        out = []
        for line in complete.splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") == "fired":
                out.append(event)
        return out

    def start(self, job_id: int, path: Path) -> None:
        """Watch from the end of what is there now (a resumed job's earlier alerts were told
        before)."""
        try:
            self._offsets[job_id] = path.stat().st_size
        except FileNotFoundError:
            self._offsets[job_id] = 0

    def forget(self, job_id: int) -> None:
        self._offsets.pop(job_id, None)
