"""Write the settings tables of README.md from daemon/config.py's fields and their docstrings.

Run it after adding or changing a setting: `python docs/settings_tables.py` (tests/test_config.py
fails while the README's tables differ from what this writes)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from daemon.config import section_classes, settings_table  # noqa: E402


def rewrite(readme: str) -> str:
    """README text with the table under each "`[section]`" line replaced by the generated one."""
    lines = readme.split("\n")
    for section, cls in section_classes().items():
        start = lines.index(f"`[{section}]`") + 2  # the heading line, a blank line, then the table
        end = start
        while end < len(lines) and lines[end].startswith("|"):
            end += 1
        lines[start:end] = settings_table(cls).split("\n")
    return "\n".join(lines)


if __name__ == "__main__":
    path = ROOT / "README.md"
    path.write_text(rewrite(path.read_text()))
    print(f"wrote the settings tables of {path}")
