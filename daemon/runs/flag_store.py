"""Flagged examples: data/flagged_examples/flagged_examples.json.

One JSON document `{"next_id": N, "flags": [...]}`, the most recent `cap` flags kept. Writers take an exclusive
`flock` on a sidecar lock file, read, change and replace the document atomically; readers never lock and always
see a whole document (old or new). No torch here: `trainctl flags` reads it.

A flag: id, step, file, reason (mismatch | high_loss | suspect_label | error | manual), loss, matches, prompt,
golden, output, timestamp, notes, resolved; from training also the prompt turns (`messages`), the golden turn as a
row (`answer`, with its reasoning and calls) and the record's `tools`, so that `flags export` writes the example back
whole. `suspect_label` flags are added at the end of training from the per-example dynamics (daemon/runs/dynamics.py),
with their figures under `dynamics`.
"""

from __future__ import annotations

import fcntl
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from daemon.atomic import read_json, write_json_atomic
from daemon.errors import TrainctlError

REASONS = ("mismatch", "high_loss", "suspect_label", "error", "manual")
SORTS = ("recent", "oldest", "highest_loss", "lowest_loss")
DEFAULT_CAP = 1000


class FlagStore:
    def __init__(self, path: Path, cap: int = DEFAULT_CAP):
        self.path = path
        self.cap = cap

    # -- reading (no lock) --------------------------------------------------------------------------------------
    def load(self) -> list[dict[str, Any]]:
        doc = read_json(self.path) or {}
        return list(doc.get("flags", []))

    def query(self, reason: str | None = None, sort: str = "recent", limit: int | None = None,
              include_resolved: bool = False, flags: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
        """`flags`: what `load()` returned, when the caller asks several questions of one read."""
        if reason is not None and reason not in REASONS:
            raise TrainctlError(f"unknown reason {reason!r} — use one of {', '.join(REASONS)}")
        if sort not in SORTS:
            raise TrainctlError(f"unknown sort {sort!r} — use one of {', '.join(SORTS)}")
        rows = [f for f in (self.load() if flags is None else flags) if (include_resolved or not f.get("resolved"))
                and (reason is None or f["reason"] == reason)]
        key = {"recent": lambda f: (-f["id"],), "oldest": lambda f: (f["id"],),
               "highest_loss": lambda f: (-(f.get("loss") if f.get("loss") is not None else -1e9), -f["id"]),
               "lowest_loss": lambda f: ((f.get("loss") if f.get("loss") is not None else 1e9), -f["id"])}[sort]
        rows.sort(key=key)
        return rows[:limit] if limit else rows

    def stats(self, flags: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        flags = self.load() if flags is None else flags
        open_ = [f for f in flags if not f.get("resolved")]
        losses = [f["loss"] for f in open_ if isinstance(f.get("loss"), (int, float))]
        return {"total": len(flags), "open": len(open_), "resolved": len(flags) - len(open_),
                "by_reason": dict(Counter(f["reason"] for f in open_).most_common()),
                "avg_loss": round(sum(losses) / len(losses), 4) if losses else None}

    def trend(self) -> list[tuple[int, dict[str, int]]]:
        """Flags per evaluation step (manual flags excluded): [(step, {reason: count})], in step order."""
        by_step: dict[int, Counter[str]] = {}
        for f in self.load():
            if f["reason"] != "manual" and isinstance(f.get("step"), int):
                by_step.setdefault(f["step"], Counter())[f["reason"]] += 1
        return [(s, dict(c)) for s, c in sorted(by_step.items())]

    # -- writing (exclusive lock) ----------------------------------------------------------------------------------
    @contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            doc = read_json(self.path) or {"next_id": 1, "flags": []}
            yield doc
            doc["flags"] = doc["flags"][-self.cap:] if self.cap else doc["flags"]
            write_json_atomic(self.path, doc, indent=None)

    def add(self, flags: Iterable[dict[str, Any]]) -> list[int]:
        ids = []
        with self._locked() as doc:
            for f in flags:
                if f.get("reason") not in REASONS:
                    raise TrainctlError(f"unknown flag reason {f.get('reason')!r}")
                row = {"id": doc["next_id"], "step": None, "file": None, "loss": None, "matches": None,
                       "prompt": "", "golden": "", "output": "", "notes": "", "resolved": False,
                       "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"), **f}
                row["id"] = doc["next_id"]
                doc["next_id"] += 1
                doc["flags"].append(row)
                ids.append(row["id"])
        return ids

    def note(self, flag_id: int, notes: str) -> dict[str, Any]:
        """Add notes to a flag without resolving it."""
        return self._change(flag_id, notes, resolve=False)

    def resolve(self, flag_id: int, notes: str | None = None) -> dict[str, Any]:
        return self._change(flag_id, notes, resolve=True)

    def _change(self, flag_id: int, notes: str | None, resolve: bool) -> dict[str, Any]:
        with self._locked() as doc:
            for f in doc["flags"]:
                if f["id"] == flag_id:
                    if resolve:
                        f["resolved"] = True
                        f["resolved_at"] = time.time()
                    if notes:
                        f["notes"] = (f.get("notes") + "; " if f.get("notes") else "") + notes
                    return f
        raise TrainctlError(f"no flag with id {flag_id} — `trainctl flags --all` lists them")


def flags_from_eval(step: int, results: list[dict[str, Any]], file: str | None,
                    loss_threshold: float = 3.0) -> list[dict[str, Any]]:
    """One flag per example that mismatched or whose golden-answer loss is above the threshold."""
    out = []
    for r in results:
        reasons = []
        if r.get("error"):
            reasons.append("error")
        else:
            if not r.get("matches"):
                reasons.append("mismatch")
            if isinstance(r.get("loss"), (int, float)) and r["loss"] > loss_threshold:
                reasons.append("high_loss")
        for reason in reasons:
            out.append({"step": step, "file": file, "reason": reason, "loss": r.get("loss"),
                        "matches": r.get("matches"), "prompt": r.get("prompt", ""), "golden": r.get("golden", ""),
                        "output": r.get("output", ""), "notes": r.get("error", ""),
                        "example_id": r.get("id"), "line": r.get("line"), "messages": r.get("messages"),
                        **{k: r[k] for k in ("answer", "tools") if r.get(k)}})
    return out


def to_training_record(flag: dict[str, Any]) -> dict[str, Any]:
    """A flag as a record to train on: its prompt turns and the golden answer (what the model should have said),
    with its reasoning, calls and the tools it may use where the example had them."""
    prompt = flag.get("messages") or [{"role": "user", "content": flag.get("prompt", "")}]
    answer = flag.get("answer") or {"role": "assistant", "content": flag.get("golden", "")}
    rec: dict[str, Any] = {"messages": [*prompt, answer], "source": f"flag:{flag['id']}"}
    if flag.get("tools"):
        rec["tools"] = flag["tools"]
    if flag.get("notes"):
        rec["notes"] = flag["notes"]
    return rec
