"""The daemon as a service: started detached (`trainctl daemon --detach`), followed in its logs
(`trainctl logs`), or kept by systemd (`trainctl service install`).

A detached daemon is an ordinary `trainctl daemon` in a session of its own, its whole output
appended to data/logs/daemon.log and its pid in status/daemon.json. It counts as started once it
holds the home's lock (daemon/service/instance_lock.py) and has written its pid; one that exits
first is reported with the end of its log.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from daemon.atomic import read_json, write_text_atomic
from daemon.errors import TrainctlError
from daemon.home import Home, safe_name
from daemon.service import instance_lock


def start_detached(home: Home, daemon_args: list[str], timeout: float = 60) -> int:
    """Start `trainctl daemon <daemon_args>` in the background on `home`; returns its pid once it
    runs."""
    if instance_lock.held(home.status_dir):
        pid = (read_json(home.daemon_status) or {}).get("pid", "?")
        raise TrainctlError(
            f"a daemon is already running for {home.root} (pid {pid}) "
            "— `trainctl logs -f` follows it, `trainctl stop` stops it"
        )
    home.logs.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "cli", "daemon", "--home", str(home.root), *daemon_args]
    with open(home.daemon_log, "ab") as log:
        log.write(
            f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} trainctl daemon --detach: "
            f"{shlex.join(cmd)}\n".encode()
        )
        log.flush()
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise TrainctlError(
                f"the daemon exited at once (code {proc.returncode}):\n"
                f"{tail(home.daemon_log, 8)}\n"
                "— fix the cause above and run `trainctl daemon --detach` again"
            )
        doc = read_json(home.daemon_status) or {}
        if (
            doc.get("pid") == proc.pid
            and doc.get("state") != "stopped"
            and instance_lock.held(home.status_dir)
        ):
            return proc.pid
        time.sleep(0.1)
    raise TrainctlError(
        f"the daemon (pid {proc.pid}) did not report within {timeout:.0f}s — see {home.daemon_log}"
    )


def tail(path: Path, lines: int) -> str:
    """The last `lines` lines of a text file (reading only its end)."""
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        block = min(size, max(4096, lines * 400))
        while True:
            fh.seek(size - block)
            data = fh.read()
            if data.count(b"\n") > lines or block == size:
                break
            block = min(size, block * 4)
    return (
        b"\n".join(data.rstrip(b"\n").split(b"\n")[-lines:]).decode("utf-8", errors="replace")
        if data
        else ""
    )


def follow(path: Path, still_going: Callable[[], bool], poll: float = 0.25) -> Iterator[str]:
    """What is appended to `path` from now on, chunk by chunk, until `still_going()` is false and
    nothing more came (checked after a quiet poll, so the last lines are not lost)."""
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        while True:
            data = fh.read()
            if data:
                yield data.decode("utf-8", errors="replace")
                continue
            if not still_going():
                data = fh.read()
                if data:
                    yield data.decode("utf-8", errors="replace")
                return
            time.sleep(poll)


def unit_name(home: Home) -> str:
    """trainctl-<home folder name>: one unit per home, several homes side by side."""
    return f"trainctl-{safe_name(home.root.name)}"


def systemd_unit(home: Home) -> str:
    """A systemd user unit that runs the daemon on `home` and restarts it when it fails. On stop
    systemd sends SIGTERM to the daemon alone (KillMode=mixed): it asks the running jobs to
    checkpoint and waits for them."""
    return f"""[Unit]
Description=trainctl daemon for {home.root}

[Service]
Type=simple
WorkingDirectory={home.root}
Environment=TRAINCTL_HOME={home.root}
Environment=PYTHONUNBUFFERED=1
ExecStart={shlex.quote(sys.executable)} -m cli daemon --home {shlex.quote(str(home.root))}
Restart=on-failure
RestartSec=10
KillMode=mixed
TimeoutStopSec=900

[Install]
WantedBy=default.target
"""


def install_unit(home: Home, force: bool = False) -> Path:
    """Write the unit to ~/.config/systemd/user/ ($XDG_CONFIG_HOME); refuses to replace a different
    one."""
    config = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    path = config / "systemd" / "user" / f"{unit_name(home)}.service"
    text = systemd_unit(home)
    if path.exists() and path.read_text() != text and not force:
        raise TrainctlError(f"{path} exists with other content — add --force to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, text)
    return path
