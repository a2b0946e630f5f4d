import dataclasses
from pathlib import Path

import pytest

from daemon.config import (
    field_docs,
    load_settings,
    section_classes,
    settings_table,
)
from daemon.errors import ConfigError
from daemon.home import Home

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_are_valid():
    s = load_settings(None)
    assert s.train.model == "builtin:smollm2-135m"
    assert s.train.save_total_limit >= 2


def test_toml_then_flags_override(tmp_path):
    f = Home(tmp_path).settings_file
    f.write_text("[train]\nlr = 0.001\nepochs = 2\n[curation]\nval_fraction = 0.2\n")
    s = load_settings(f, {"train": {"epochs": 5.0, "batch_size": None}})
    assert s.train.lr == 0.001
    assert s.train.epochs == 5.0  # flag wins over file
    assert s.train.batch_size == 8  # None flag = not given
    assert s.curation.val_fraction == 0.2


def problems(tmp_path, toml: str) -> str:
    """The ConfigError message loading this trainctl.toml gives (it must give one)."""
    f = Home(tmp_path).settings_file
    f.write_text(toml)
    with pytest.raises(ConfigError) as e:
        load_settings(f)
    return str(e.value)


def test_every_problem_is_reported_at_once(tmp_path):
    msg = problems(
        tmp_path,
        '[train]\nlr = -1\nbatch_size = "big"\nwarmp = 3\n[curation]\nval_fraction = 1.5\n'
        "[oops]\nx = 1\n",
    )
    for needle in (
        "train.lr",
        "train.batch_size",
        "unknown setting train.warmp",
        "curation.val_fraction",
        "unknown section [oops]",
    ):
        assert needle in msg
    assert msg.startswith("6 problem(s)")  # val_fraction also breaks val + test < 1


def test_bad_toml_names_the_file(tmp_path):
    f = Home(tmp_path).settings_file
    f.write_text("[train\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(f)


def test_every_field_has_a_docstring_and_the_readme_tables_are_generated_from_them():
    readme = (ROOT / "README.md").read_text()
    for section, cls in section_classes().items():
        docs = field_docs(cls)
        for spec in dataclasses.fields(cls):
            assert docs.get(spec.name), f"{cls.__name__}.{spec.name} has no docstring"
        assert f"`[{section}]`\n\n{settings_table(cls)}\n" in readme, (
            f"README's [{section}] table is not what the "
            "fields say — run `python docs/settings_tables.py`"
        )


def test_bad_notify_settings_are_reported_together(tmp_path):
    msg = problems(
        tmp_path,
        '[notify]\nwebhook = "ftp://x"\nevents = ["done", "exploded"]\ntimeout_seconds = 0\n',
    )
    assert (
        "3 problem(s)" in msg
        and "ftp://x" in msg
        and "exploded" in msg
        and "timeout_seconds" in msg
    )
