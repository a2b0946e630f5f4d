"""Small formatting helpers shared by the Rich views."""

from __future__ import annotations

import time
from typing import Any

SPARK = "▁▂▃▄▅▆▇█"


def dash(v: Any, fmt: str = "{}") -> str:
    if v is None or v == "":
        return "—"
    try:
        return fmt.format(v)
    except (ValueError, TypeError):
        return str(v)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def clock(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "—"


def sparkline(values: list[float], width: int = 40) -> str:
    vals = [v for v in values if isinstance(v, (int, float))][-width:]
    if not vals:
        return ""
    lo, hi = min(vals), max(vals)
    span = hi - lo or 1.0
    return "".join(
        SPARK[min(len(SPARK) - 1, int((v - lo) / span * (len(SPARK) - 1)))] for v in vals
    )


def bar(done: int, total: int, width: int = 30) -> str:
    if not total:
        return ""
    filled = int(width * min(1.0, done / total))
    return "█" * filled + "░" * (width - filled)


def clip(text: Any, n: int = 40) -> str:
    """One line of at most n characters: whitespace collapsed, an ellipsis where it was cut."""
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"
