"""Flagged examples: data/flagged_examples/flagged_examples.json.

One JSON document `{"next_id": N, "flags": [...]}`, the most recent `cap` flags kept. Writers take
an exclusive `flock` on a sidecar lock file, read, change and replace the document atomically;
readers never lock and always see a whole document (old or new). No torch here: `trainctl flags`
reads it.

**A flag is the current model's mistake on one example**: one flag per (job, example) for the
evaluations (`mismatch`, `high_loss`, `error`) and one for the dynamics' verdict (`suspect_label`).
Each evaluation decides them all at once (`FlagStore.evaluation`): an example answered wrong opens
its flag or updates it (latest step, output, loss, reasons), an example answered right again
resolves its open flag ("right again at step N", `resolved_by: "auto"`), and every decision is kept
in the flag's `history`. A flag resolved by hand, and a manual flag, are never reopened or changed
by automation.

A flag: id, job, example (the record's id, else its line), step, file, reason (mismatch | high_loss
| suspect_label | error | manual) and `reasons` (all that held), loss, matches, prompt, golden,
output, timestamp, notes (the user's), resolved, resolved_by (auto | user), change (what automation
last did: "right again at step N", "wrong again at step N"), history; from training also the prompt
turns (`messages`), the golden turn as a row (`answer`, with its reasoning and calls) and the
record's `tools`, so that `flags export` writes the example back whole. `suspect_label` flags come
at the end of training from the per-example dynamics (daemon/runs/dynamics.py), with their figures
under `dynamics`.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
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
EVAL_REASONS = ("error", "mismatch", "high_loss")
"""The reasons an evaluation decides, the first that holds naming the flag."""
SORTS = ("recent", "oldest", "highest_loss", "lowest_loss")
DEFAULT_CAP = 1000
HISTORY = 50
"""Decisions kept per flag (the newest)."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def example_key(row: dict[str, Any]) -> str:
    """Which example a result or a flag is about: the record's id, else its input line, else its
    prompt."""
    for name in ("example_id", "id"):
        if row.get(name) not in (None, ""):
            return f"id:{row[name]}"
    if row.get("line") is not None:
        return f"line:{row['line']}"
    text = json.dumps(
        [row.get("messages") or row.get("prompt", ""), row.get("golden", "")], sort_keys=True
    )
    return "text:" + hashlib.sha1(text.encode()).hexdigest()[:16]


def _slot(flag: dict[str, Any]) -> tuple[Any, str, str] | None:
    """(job, example, kind) of an automated flag; None for a manual or an old-format one."""
    if flag.get("example") is None or flag.get("reason") == "manual":
        return None
    kind = "dynamics" if flag["reason"] == "suspect_label" else "eval"
    return flag.get("job"), flag["example"], kind


class FlagStore:
    def __init__(self, path: Path, cap: int = DEFAULT_CAP):
        self.path = path
        self.cap = cap

    # -- reading (no lock)
    # --------------------------------------------------------------------------------------
    def load(self) -> list[dict[str, Any]]:
        doc = read_json(self.path) or {}
        return list(doc.get("flags", []))

    def query(
        self,
        reason: str | None = None,
        sort: str = "recent",
        limit: int | None = None,
        include_resolved: bool = False,
        flags: list[dict[str, Any]] | None = None,
        job: int | None = None,
        search: str | None = None,
    ) -> list[dict[str, Any]]:
        """`flags`: what `load()` returned, when the caller asks several questions of one read;
        `search`: text in the prompt, golden answer, output or notes (any case)."""
        if reason is not None and reason not in REASONS:
            raise TrainctlError(f"unknown reason {reason!r} — use one of {', '.join(REASONS)}")
        if sort not in SORTS:
            raise TrainctlError(f"unknown sort {sort!r} — use one of {', '.join(SORTS)}")
        needle = (search or "").lower()
        rows = [
            f
            for f in (self.load() if flags is None else flags)
            if (include_resolved or not f.get("resolved"))
            and (reason is None or f["reason"] == reason)
            and (job is None or f.get("job") == job)
            and (
                not needle
                or any(
                    needle in str(f.get(k) or "").lower()
                    for k in ("prompt", "golden", "output", "notes")
                )
            )
        ]
        key = {
            "recent": lambda f: (-f["id"],),
            "oldest": lambda f: (f["id"],),
            "highest_loss": lambda f: (
                -(f.get("loss") if f.get("loss") is not None else -1e9),
                -f["id"],
            ),
            "lowest_loss": lambda f: (
                (f.get("loss") if f.get("loss") is not None else 1e9),
                -f["id"],
            ),
        }[sort]
        rows.sort(key=key)
        return rows[:limit] if limit else rows

    def stats(
        self, flags: list[dict[str, Any]] | None = None, job: int | None = None
    ) -> dict[str, Any]:
        flags = self.load() if flags is None else flags
        if job is not None:
            flags = [f for f in flags if f.get("job") == job]
        open_ = [f for f in flags if not f.get("resolved")]
        losses = [f["loss"] for f in open_ if isinstance(f.get("loss"), (int, float))]
        return {
            "total": len(flags),
            "open": len(open_),
            "resolved": len(flags) - len(open_),
            "by_reason": dict(Counter(f["reason"] for f in open_).most_common()),
            "avg_loss": round(sum(losses) / len(losses), 4) if losses else None,
        }

    def trend(self, job: int | None = None) -> list[dict[str, Any]]:
        """Per job and evaluation step, from the flags' histories: how many examples were wrong for
        each reason, and how many were right again (`resolved`): [{"job", "step", reason: count,
        "resolved": n}], in order. Jobs are never added up, even where their step numbers meet."""
        by: dict[tuple[int, int], Counter[str]] = {}
        for f in self.load():
            if f["reason"] in ("manual", "suspect_label") or (
                job is not None and f.get("job") != job
            ):
                continue
            for entry in f.get("history") or [{"step": f.get("step"), "reason": f["reason"]}]:
                if isinstance(entry.get("step"), int):
                    c = by.setdefault((f.get("job") or 0, entry["step"]), Counter())
                    c["resolved" if entry.get("right") else entry.get("reason", f["reason"])] += 1
        return [{"job": j, "step": s, **dict(c)} for (j, s), c in sorted(by.items())]

    # -- writing (exclusive lock)
    # ----------------------------------------------------------------------------------
    @contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            doc = read_json(self.path) or {"next_id": 1, "flags": []}
            yield doc
            doc["flags"] = doc["flags"][-self.cap :] if self.cap else doc["flags"]
            write_json_atomic(self.path, doc, indent=None)

    @staticmethod
    def _new(doc: dict[str, Any], flag: dict[str, Any]) -> dict[str, Any]:
        if flag.get("reason") not in REASONS:
            raise TrainctlError(f"unknown flag reason {flag.get('reason')!r}")
        row = {
            "step": None,
            "file": None,
            "loss": None,
            "matches": None,
            "prompt": "",
            "golden": "",
            "output": "",
            "notes": "",
            "resolved": False,
            "timestamp": _now(),
            **flag,
            "id": doc["next_id"],
        }
        doc["next_id"] += 1
        doc["flags"].append(row)
        return row

    def add(self, flags: Iterable[dict[str, Any]]) -> list[int]:
        """New flags as they are (manual ones); automated ones go through `evaluation` and
        `suspects`."""
        with self._locked() as doc:
            return [self._new(doc, f)["id"] for f in flags]

    def evaluation(
        self,
        job: int | None,
        step: int,
        results: list[dict[str, Any]],
        file: str | None,
        loss_threshold: float = 3.0,
        scored_only: bool = False,
    ) -> dict[str, int]:
        """Decide every evaluated example's flag at once (see the module docstring). Returns what
        changed: {"added", "updated", "resolved", "open"} (`open`: the job's open flags
        afterwards)."""
        counts = Counter({"added": 0, "updated": 0, "resolved": 0})
        with self._locked() as doc:
            slots = {s: f for f in doc["flags"] if (s := _slot(f)) is not None}
            for r in results:
                key = example_key(r)
                flag = slots.get((job, key, "eval"))
                reasons = eval_reasons(r, loss_threshold)
                entry = {
                    "step": step,
                    "right": not reasons,
                    "loss": r.get("loss"),
                    **({"reason": reasons[0]} if reasons else {}),
                    **({"scored_only": True} if scored_only else {"output": r.get("output", "")}),
                }
                if flag is not None and flag.get("resolved") and flag.get("resolved_by") != "auto":
                    continue  # resolved by hand: automation leaves it as the user left it
                if not reasons:
                    if flag is not None and not flag.get("resolved"):
                        _remember(flag, entry)
                        flag.update(
                            resolved=True,
                            resolved_by="auto",
                            resolved_at=time.time(),
                            resolved_step=step,
                            matches=True,
                            step=step,
                            loss=r.get("loss"),
                            change=f"right again at step {step}",
                        )
                        counts["resolved"] += 1
                    continue
                latest = {
                    "step": step,
                    "reason": reasons[0],
                    "reasons": reasons,
                    "loss": r.get("loss"),
                    "matches": r.get("matches"),
                    "output": r.get("output", ""),
                    "timestamp": _now(),
                    "scored_only": scored_only,
                }
                if flag is None:
                    flag = self._new(
                        doc,
                        {
                            **_describe(r),
                            "job": job,
                            "example": key,
                            "file": file,
                            **latest,
                            "notes": r.get("error", ""),
                        },
                    )
                    slots[(job, key, "eval")] = flag
                    counts["added"] += 1
                else:
                    if flag.get("resolved"):
                        flag.update(
                            resolved=False, resolved_by=None, change=f"wrong again at step {step}"
                        )
                    flag.update(latest)
                    counts["updated"] += 1
                _remember(flag, entry)
            counts["open"] = sum(
                1 for f in doc["flags"] if f.get("job") == job and not f.get("resolved")
            )
        return dict(counts)

    def suspects(self, job: int | None, flags: list[dict[str, Any]]) -> int:
        """The dynamics' `suspect_label` flags of a job: one per example, added once (a flag
        resolved by hand stays resolved). Returns how many were new."""
        added = 0
        with self._locked() as doc:
            slots = {s for f in doc["flags"] if (s := _slot(f)) is not None}
            for f in flags:
                key = example_key(f)
                if (job, key, "dynamics") not in slots:
                    self._new(doc, {**f, "job": job, "example": key, "reason": "suspect_label"})
                    slots.add((job, key, "dynamics"))
                    added += 1
        return added

    def note(self, flag_id: int, notes: str) -> dict[str, Any]:
        """Add notes to a flag without resolving it."""
        return self._change(flag_id, notes, resolved=None)

    def resolve(self, flag_id: int, notes: str | None = None) -> dict[str, Any]:
        return self._change(flag_id, notes, resolved=True)

    def reopen(self, flag_id: int, notes: str | None = None) -> dict[str, Any]:
        """Un-resolve a flag (by hand): automation may then resolve it again."""
        return self._change(flag_id, notes, resolved=False)

    def _change(self, flag_id: int, notes: str | None, resolved: bool | None) -> dict[str, Any]:
        with self._locked() as doc:
            for f in doc["flags"]:
                if f["id"] == flag_id:
                    if resolved is True:
                        f.update(resolved=True, resolved_by="user", resolved_at=time.time())
                    elif resolved is False:
                        f.update(resolved=False, resolved_by=None)
                    if notes:
                        f["notes"] = _add_note(f.get("notes"), notes)
                    return f
        raise TrainctlError(f"no flag with id {flag_id} — `trainctl flags --all` lists them")


def _add_note(old: str | None, new: str) -> str:
    return f"{old}; {new}" if old else new


def _remember(flag: dict[str, Any], entry: dict[str, Any]) -> None:
    flag["history"] = [*(flag.get("history") or []), entry][-HISTORY:]


def eval_reasons(result: dict[str, Any], loss_threshold: float) -> list[str]:
    """Why an evaluated example is flagged, most telling first; [] when the model got it right."""
    if result.get("error"):
        return ["error"]
    reasons = [] if result.get("matches") else ["mismatch"]
    if isinstance(result.get("loss"), (int, float)) and result["loss"] > loss_threshold:
        reasons.append("high_loss")
    return reasons


def _describe(r: dict[str, Any]) -> dict[str, Any]:
    """What a flag keeps of its example: the prompt, the golden answer, the prompt turns, the
    record's line."""
    return {
        "prompt": r.get("prompt", ""),
        "golden": r.get("golden", ""),
        "example_id": r.get("id"),
        "line": r.get("line"),
        "messages": r.get("messages"),
        **{k: r[k] for k in ("answer", "tools") if r.get(k)},
    }


def to_training_record(flag: dict[str, Any]) -> dict[str, Any]:
    """A flag as a record to train on: its prompt turns and the golden answer (what the model
    should have said), with its reasoning, calls and the tools it may use where the example had
    them."""
    prompt = flag.get("messages") or [{"role": "user", "content": flag.get("prompt", "")}]
    answer = flag.get("answer") or {"role": "assistant", "content": flag.get("golden", "")}
    rec: dict[str, Any] = {"messages": [*prompt, answer], "source": f"flag:{flag['id']}"}
    if flag.get("tools"):
        rec["tools"] = flag["tools"]
    if flag.get("notes"):
        rec["notes"] = flag["notes"]
    return rec


def one_per_example(flags: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The flags of distinct examples (the same record flagged in several jobs counts once: the
    newest flag)."""
    seen: set[str] = set()
    out = []
    for f in sorted(flags, key=lambda f: -f["id"]):
        rec = to_training_record(f)
        key = json.dumps([rec["messages"], rec.get("tools")], sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(f)
    return sorted(out, key=lambda f: f["id"])
