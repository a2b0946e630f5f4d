"""A data file's own settings: `x.toml` dropped beside `x.jsonl`, or a `[files."x.jsonl"]` table in
trainctl.toml.

They override `[train]` and `[curation]` (and set the job's `priority`) for that file's job only.
Layers, last wins: trainctl.toml, the daemon's own flags, `[files."x.jsonl"]`, `x.toml`. The merged
overrides are validated before the job is queued (every problem at once) and stored with the job,
so a resumed or retried job keeps them whatever trainctl.toml says by then.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from daemon.config import FILES_TABLE, PER_FILE_SECTIONS, load_settings, per_file_problems
from daemon.errors import ConfigError


@dataclass
class FileSettings:
    """What one data file's job runs with, beyond trainctl.toml."""

    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    """{"train": {...}, "curation": {...}}: the merged layers, as stored with the job."""
    priority: int = 0
    """The job's priority (higher starts first)."""
    sources: list[str] = field(default_factory=list)
    """Where they came from, for messages: `[files."x.jsonl"]`, `x.toml`."""


def merge(*layers: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Section-wise merge, later layers winning key by key."""
    out: dict[str, dict[str, Any]] = {}
    for layer in layers:
        for section, values in (layer or {}).items():
            out.setdefault(section, {}).update(values)
    return {k: v for k, v in out.items() if v}


def _split(table: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], int | None]:
    return {k: v for k, v in table.items() if k in PER_FILE_SECTIONS}, table.get("priority")


def resolve(
    settings_file: Path,
    file_name: str,
    sidecar: Path | None,
    base_overrides: dict[str, dict[str, Any]] | None = None,
) -> FileSettings:
    """The settings of `file_name`'s job: `base_overrides` (the daemon's flags), then
    trainctl.toml's `[files."<file_name>"]`, then the sidecar. Raises ConfigError naming every
    problem and the file or table it is in, by the name the user wrote (the sidecar as dropped,
    x.toml, not its copy in processing/)."""
    sidecar_name = Path(file_name).with_suffix(".toml").name
    problems: list[str] = []
    layers: list[dict[str, dict[str, Any]]] = [base_overrides or {}]
    priority: int | None = None
    sources: list[str] = []

    def add(table: Any, where: str) -> None:
        """One per-file layer: its problems, or its sections, priority and name."""
        nonlocal priority
        found = per_file_problems(table, where)
        problems.extend(found)
        if not found:
            sections, own_priority = _split(table)
            layers.append(sections)
            priority = own_priority if own_priority is not None else priority
            sources.append(where)

    if settings_file.exists():
        try:
            files = tomllib.loads(settings_file.read_text(encoding="utf-8")).get(FILES_TABLE) or {}
        except (tomllib.TOMLDecodeError, UnicodeDecodeError):
            files = {}  # reported by load_settings below, with the rest of the file
        table = files.get(file_name) if isinstance(files, dict) else None
        if table is not None:
            add(table, f'[files."{file_name}"]')
    if sidecar is not None:
        try:
            doc = tomllib.loads(sidecar.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            problems.append(f"{sidecar_name} is not valid TOML: {exc}")
        else:
            add(doc, sidecar_name)
    merged = merge(*layers)
    if not problems:
        try:
            # ranges and combinations, as for any settings; what is wrong named by where it was set
            load_settings(settings_file, merged, " and ".join(sources) or "the daemon's flags")
        except ConfigError as exc:
            problems.append(str(exc))
    if problems:
        raise ConfigError(
            f"the settings for {file_name} are not usable: "
            + "; ".join(problems)
            + " — fix them and drop the file again"
        )
    return FileSettings(merged, priority or 0, sources)


def describe(overrides: dict[str, dict[str, Any]]) -> str:
    """`epochs=3 model=builtin:tiny curation.min_chars=5` for `trainctl queue` (train keys
    unprefixed)."""
    parts = []
    for section, values in overrides.items():
        for key, value in values.items():
            if isinstance(value, float) and value.is_integer():
                value = int(value)  # `--epochs 2` is stored as 2.0
            parts.append(f"{key}={value}" if section == "train" else f"{section}.{key}={value}")
    return " ".join(parts)
