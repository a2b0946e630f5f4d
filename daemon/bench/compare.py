"""`trainctl bench compare`: join runs by custom_id, extract the comparable part of each answer,
mark rows where the runs disagree, and measure agreement for every pair of runs (share of equal
answers and Cohen's kappa).

Reads results.jsonl files only; no torch. Each run's answers are held in memory as text (one entry
per custom_id).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

from daemon.atomic import iter_jsonl
from daemon.bench.prompts import iter_prompts
from daemon.bench.state import load_run, results_files
from daemon.chat.answers import answer_of_message, normalise_answer, parse_answer
from daemon.errors import BenchError

NO_LABEL = "∅"
"""The comparable value of an answer in which --label-regex finds nothing."""
ERROR = "<error>"


@dataclass
class Cell:
    text: str
    value: str
    """What is compared: the extracted label, or the whitespace-normalised answer; ERROR for an
    error line."""
    cut: bool = False
    """The answer stopped at max_tokens (finish_reason "length"), not where the model ended it."""
    matches: bool | None = None
    """Its value equals the reference's (extracted the same way); None where the row has no
    reference."""


@dataclass
class Row:
    custom_id: str
    name: str
    cells: list[Cell | None]
    """One per run, None where that run has no result for this id."""
    reference: str | None = None

    @property
    def disagree(self) -> bool:
        values = {c.value for c in self.cells if c is not None}
        return len(values) > 1


@dataclass
class PairStats:
    a: str
    b: str
    both: int
    agree: int
    kappa: float | None

    @property
    def agreement(self) -> float:
        return self.agree / self.both if self.both else 0.0


@dataclass
class Comparison:
    runs: list[str]
    rows: list[Row]
    pairs: list[PairStats]
    label_regex: str
    per_run: list[dict[str, Any]] = field(default_factory=list)

    @property
    def disagreements(self) -> int:
        return sum(r.disagree for r in self.rows)


def extract(text: str, pattern: re.Pattern[str] | None) -> str:
    # the whole answer: prose and tool calls (by name and parsed arguments), not reasoning
    if pattern is None:
        return parse_answer(text).key()
    m = pattern.search(text)
    if m is None:
        return NO_LABEL
    return normalise_answer(m.group(1) if m.groups() else m.group(0))


def cohen_kappa(pairs: list[tuple[str, str]]) -> float | None:
    """Agreement beyond chance between two raters; None when chance agreement is already total."""
    n = len(pairs)
    if n == 0:
        return None
    observed = sum(a == b for a, b in pairs) / n
    ca, cb = Counter(a for a, _ in pairs), Counter(b for _, b in pairs)
    expected = sum(ca[k] * cb.get(k, 0) for k in ca) / (n * n)
    if expected >= 1.0:
        return None
    return (observed - expected) / (1 - expected)


def _dig(d: dict[str, Any], dotted: str) -> Any:
    cur: Any = d
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def _load(
    run_dir: Path, pattern: re.Pattern[str] | None
) -> tuple[dict[str, Cell], dict[str, dict[str, Any]]]:
    """custom_id -> Cell, and custom_id -> {reference, metadata} (for names and the golden
    answer)."""
    cells: dict[str, Cell] = {}
    extra: dict[str, dict[str, Any]] = {}
    files = results_files(run_dir)
    if not files:
        raise BenchError(
            f"{run_dir.name} has no results.jsonl yet — run `trainctl bench run` first"
        )
    # skips torn last lines (a kill mid-write)
    for row in (row for path in files for row in iter_jsonl(path)):
        cid = row["custom_id"]
        if row.get("error"):
            err = row["error"]
            cells[cid] = Cell(f"{err.get('code')}: {err.get('message')}", ERROR)
        else:
            choice = row["response"]["body"]["choices"][0]
            text = answer_of_message(choice["message"])
            cells[cid] = Cell(
                text, extract(text, pattern), cut=choice.get("finish_reason") == "length"
            )
        extra[cid] = {"reference": row.get("reference"), "metadata": row.get("metadata") or {}}
    return cells, extra


def _names_from_prompts(prompts: Path, ids: set[str], pattern: re.Pattern[str]) -> dict[str, str]:
    if not prompts.exists():
        raise BenchError(
            f"--name-regex reads the prompts, but {prompts} is gone — use --name-field instead"
        )
    names = {}
    for p in iter_prompts(prompts):
        if p.custom_id in ids and p.messages:
            users = [m["content"] for m in p.messages if m["role"] == "user"] or [
                p.messages[-1]["content"]
            ]
            m = pattern.search(users[-1])
            if m:
                names[p.custom_id] = m.group(1) if m.groups() else m.group(0)
    return names


def compare_runs(
    bench_root: Path,
    names: list[str],
    label_regex: str = "",
    name_field: str = "",
    name_regex: str = "",
) -> Comparison:
    if len(names) < 2:
        raise BenchError("compare needs at least two runs — `trainctl bench list` shows them")
    try:
        label = re.compile(label_regex) if label_regex else None
        name_pat = re.compile(name_regex) if name_regex else None
    except re.error as exc:
        raise BenchError(
            f"invalid regular expression: {exc} — check --label-regex / --name-regex"
        ) from exc
    loaded = []
    for n in names:
        d = bench_root / n
        if load_run(d) is None:
            known = (
                ", ".join(sorted(p.name for p in bench_root.iterdir() if p.is_dir()))
                if bench_root.exists()
                else ""
            )
            raise BenchError(
                f"no bench run named {n!r} (runs: {known or 'none'}) — see `trainctl bench list`"
            )
        loaded.append(_load(d, label))
    ids: list[str] = []
    seen: set[str] = set()
    for cells, _ in loaded:
        for cid in cells:
            if cid not in seen:
                seen.add(cid)
                ids.append(cid)
    display: dict[str, str] = {}
    if name_field:
        for _, extra in loaded:
            for cid, e in extra.items():
                v = _dig(e["metadata"], name_field.removeprefix("metadata."))
                if v is not None and cid not in display:
                    display[cid] = str(v)
    if name_pat is not None:
        first = load_run(bench_root / names[0])
        assert first is not None
        for cid, v in _names_from_prompts(
            Path(first.prompts_path), seen - set(display), name_pat
        ).items():
            display[cid] = v
    rows = []
    for cid in ids:
        ref = next(
            (
                e[cid]["reference"]
                for _, e in loaded
                if cid in e and e[cid]["reference"] is not None
            ),
            None,
        )
        row = Row(cid, display.get(cid, cid), [cells.get(cid) for cells, _ in loaded], ref)
        # each answer against the golden one, compared as the answers are among themselves
        if ref is not None:
            want = extract(ref, label)
            for cell in row.cells:
                if cell is not None:
                    cell.matches = cell.value == want
        rows.append(row)
    pairs = []
    for i, j in combinations(range(len(names)), 2):
        joint = [
            (r.cells[i].value, r.cells[j].value)  # type: ignore[union-attr]
            for r in rows
            if r.cells[i] is not None and r.cells[j] is not None
        ]
        pairs.append(
            PairStats(
                names[i], names[j], len(joint), sum(a == b for a, b in joint), cohen_kappa(joint)
            )
        )
    per_run = []
    for n, (cells, _) in zip(names, loaded):
        values = Counter(c.value for c in cells.values())
        judged = [c for c in cells.values() if c.matches is not None]
        per_run.append(
            {
                "run": n,
                "results": len(cells),
                "errors": values.get(ERROR, 0),
                "cut": sum(c.cut for c in cells.values()),
                "with_reference": len(judged),
                "match_reference": sum(bool(c.matches) for c in judged),
                "no_label": values.get(NO_LABEL, 0) if label else None,
                "top_labels": values.most_common(5) if label else None,
            }
        )
    return Comparison(list(names), rows, pairs, label_regex, per_run)


def comparison_rows_json(c: Comparison, diff_only: bool = False) -> list[dict[str, Any]]:
    out = []
    for r in c.rows:
        if diff_only and not r.disagree:
            continue
        row: dict[str, Any] = {"custom_id": r.custom_id, "name": r.name, "disagree": r.disagree}
        if r.reference is not None:
            row["reference"] = r.reference
        for run, cell in zip(c.runs, r.cells):
            row[run] = (
                None
                if cell is None
                else {
                    "answer": cell.text,
                    "value": cell.value,
                    "cut": cell.cut,
                    "matches": cell.matches,
                }
            )
        out.append(row)
    return out
