"""Reading a dataset's rejected.jsonl: what was rejected and why, what is close to passing, what to
change.

Streams the file (a heap keeps the 10 closest); used by `trainctl rejected` and `trainctl rejected
accept`. Imports nothing heavy: the read-only CLI must stay fast.
"""

from __future__ import annotations

import heapq
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daemon.atomic import iter_jsonl, read_json
from daemon.errors import TrainctlError

QUALITY_REASONS = ("low_quality", "low_diversity")
BINS = 10
_BOOKKEEPING = ("line", "rejection_reason", "rejection_details", "quality_score")

# What to do when a component is the weak one, by component.
_COMPONENT_ADVICE = {
    "diversity": "answers repeat the same few words",
    "coherence": "answers are mostly symbols or run-together tokens (code? set a lower domain "
    "threshold)",
    "repetition": "answers repeat whole phrases",
    "length_fitness": "answers fall outside curation.answer_chars",
    "grounding": "answers use few words of their input",
}


def find_dataset(datasets_root: Path, path: Path | None, latest: bool) -> Path:
    """The dataset folder named by PATH (a folder or its rejected.jsonl), or the newest one with
    --latest."""
    if path is not None and latest:
        raise TrainctlError("give a dataset PATH or --latest, not both")
    if path is not None:
        ds = path.parent if path.name == "rejected.jsonl" else path
        if not (ds / "rejected.jsonl").is_file():
            raise TrainctlError(
                f"{path} is not a curated dataset (no rejected.jsonl) "
                f"— pass a folder under {datasets_root} or use --latest"
            )
        return ds
    found = [p for p in datasets_root.glob("*/rejected.jsonl")] if datasets_root.is_dir() else []
    if not found:
        raise TrainctlError(
            f"no curated dataset under {datasets_root} yet — run "
            "`trainctl curate FILE` or drop a file into inbox/"
        )
    if not latest:
        raise TrainctlError("which dataset? pass its PATH or --latest")
    return max(found, key=lambda p: (p.stat().st_mtime, p.parent.name)).parent


@dataclass
class Close:
    """A quality reject near its threshold."""

    line: int
    reason: str
    score: float
    threshold: float
    components: dict[str, float]
    preview: str


@dataclass
class RejectReport:
    dataset: str
    lines_read: int
    """The records read (blank lines not counted)."""
    total_rejected: int
    shown: int
    """Rejects matching the --reason filter (all of them without one)."""
    by_reason: dict[str, int]
    by_detail: dict[str, int]
    by_domain: dict[str, dict[str, int]]
    closest: list[Close]
    histogram: list[int]
    """Quality-score counts of scored rejects in BINS equal bins over [0, 1]."""
    score_stats: dict[str, float]
    recommendations: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def _preview(row: dict[str, Any]) -> str:
    for key in ("output", "completion", "text"):
        if isinstance(row.get(key), str):
            return row[key]
    msgs = row.get("messages") or row.get("conversations")
    if isinstance(msgs, list) and msgs and isinstance(msgs[-1], dict):
        v = msgs[-1].get("content", msgs[-1].get("value", ""))
        return v if isinstance(v, str) else json.dumps(v)
    return str(row.get("raw", ""))


def analyse(ds: Path, reason: str | None = None) -> RejectReport:
    stats = read_json(ds / "stats.json") or {}
    settings = dict((read_json(ds / "metadata.json") or {}).get("settings", {}))
    chosen = stats.get("max_length") or {}
    if settings.get("max_length") == "auto" and isinstance(chosen.get("value"), int):
        settings["max_length"] = f"auto = {chosen['value']}"
    by_reason: Counter[str] = Counter()
    by_detail: Counter[str] = Counter()
    by_domain: dict[str, Counter[str]] = defaultdict(Counter)
    hist = [0] * BINS
    heap: list[tuple[float, int, Close]] = []  # (-margin, line, close): the 10 smallest margins
    scores: list[float] = []
    weak: Counter[str] = Counter()  # quality rejects' weakest component
    comp_sum: dict[str, float] = defaultdict(float)
    comp_n: Counter[str] = Counter()
    examples: dict[str, list[int]] = defaultdict(list)  # reason/detail -> first lines
    too_long: list[int] = []
    # no_trainable_tokens: the max_length that keeps each one's last exchange whole
    keeps_at: list[int] = []
    near: list[float] = []  # scores of low_quality rejects within 0.05 of their threshold
    unknown_keys: Counter[str] = Counter()
    total = shown = 0
    for row in iter_jsonl(ds / "rejected.jsonl"):
        total += 1
        r = row.get("rejection_reason", "?")
        details = row.get("rejection_details") or {}
        if reason and r != reason and details.get("detail") != reason:
            continue
        shown += 1
        by_reason[r] += 1
        detail = details.get("detail")
        if detail:
            by_detail[detail] += 1
        by_domain[str(row.get("domain", "default"))][r] += 1
        key = detail or r
        if len(examples[key]) < 5:
            examples[key].append(row.get("line", 0))
        if detail == "too_long" and isinstance(details.get("tokens"), int):
            too_long.append(details["tokens"])
        if detail == "no_trainable_tokens" and isinstance(details.get("keeps_at"), int):
            keeps_at.append(details["keeps_at"])
        if r == "unknown_format":
            unknown_keys[", ".join(sorted(k for k in row if k not in _BOOKKEEPING))[:80]] += 1
        score = row.get("quality_score")
        if r in QUALITY_REASONS and isinstance(score, (int, float)):
            scores.append(score)
            hist[min(BINS - 1, int(score * BINS))] += 1
            threshold = float(details.get("threshold", 0.0))
            comps = {
                k: v
                for k, v in details.items()
                if k not in ("threshold", "min_diversity") and isinstance(v, (int, float))
            }
            for k, v in comps.items():
                comp_sum[k] += v
                comp_n[k] += 1
            if comps:
                weak[min(comps, key=comps.__getitem__)] += 1
            margin = (
                threshold - score
                if r == "low_quality"
                else float(details.get("min_diversity", 0)) - comps.get("diversity", 0.0)
            )
            if r == "low_quality" and margin <= 0.05:
                near.append(score)
            item = Close(row.get("line", 0), r, score, threshold, comps, _preview(row)[:120])
            entry = (-margin, -item.line, item)
            if len(heap) < 10:
                heapq.heappush(heap, entry)
            elif entry > heap[0]:
                heapq.heapreplace(heap, entry)
    closest = [c for _, _, c in sorted(heap, key=lambda e: (-e[0], -e[1]))]
    score_stats = (
        {
            "avg": round(sum(scores) / len(scores), 4),
            "min": min(scores),
            "max": max(scores),
            "count": len(scores),
        }
        if scores
        else {}
    )
    report = RejectReport(
        dataset=str(ds),
        lines_read=int(stats.get("records", stats.get("lines_read", total))),
        total_rejected=total,
        shown=shown,
        by_reason=dict(by_reason.most_common()),
        by_detail=dict(by_detail.most_common()),
        by_domain={
            d: dict(c.most_common())
            for d, c in sorted(by_domain.items(), key=lambda kv: -sum(kv[1].values()))
        },
        closest=closest,
        histogram=hist,
        score_stats=score_stats,
    )
    report.recommendations = _recommend(
        report,
        settings,
        examples,
        too_long,
        keeps_at,
        near,
        weak,
        {k: comp_sum[k] / comp_n[k] for k in comp_n},
        unknown_keys,
    )
    return report


def _lines(xs: list[int]) -> str:
    return ", ".join(str(x) for x in xs)


def _recommend(
    rep: RejectReport,
    settings: dict[str, Any],
    examples: dict[str, list[int]],
    too_long: list[int],
    keeps_at: list[int],
    near: list[float],
    weak: Counter[str],
    comp_mean: dict[str, float],
    unknown_keys: Counter[str],
) -> list[str]:
    """Advice derived from the numbers: each line names a count and the change that addresses
    it."""
    cur = settings.get("curation", {})
    out: list[str] = []
    n = max(1, rep.lines_read)
    share = rep.total_rejected / n
    limit = cur.get("max_rejected_fraction")
    if limit is not None and share > limit:
        out.append(
            f"{share:.0%} of the file was rejected, above "
            f"curation.max_rejected_fraction = {limit:.0%}, so its training job "
            "fails: fix the causes below, or raise the limit if this is expected."
        )
    lq = rep.by_reason.get("low_quality", 0)
    if lq:
        if weak:
            comp, cnt = weak.most_common(1)[0]
            out.append(
                f"{lq} low_quality: the weakest component is `{comp}` "
                f"in {cnt} of them (mean {comp_mean.get(comp, 0):.2f}) "
                f"— {_COMPONENT_ADVICE.get(comp, 'a custom scorer')}."
            )
        if near:
            out.append(
                f"{len(near)} low_quality records are within 0.05 of their threshold: "
                f"`trainctl rejected accept --min-score {min(near):.2f}` recovers them, "
                f"or lower curation.min_quality (now {cur.get('min_quality', '?')})."
            )
    for dom, reasons in rep.by_domain.items():
        dq = reasons.get("low_quality", 0)
        if dom != "default" and dq >= max(5, 0.5 * lq) and len(rep.by_domain) > 1:
            out.append(
                f"domain {dom!r} has {dq} of the low_quality rejects: give it its own threshold "
                f"with curation.domain_min_quality.{dom} = ... if its records are fine."
            )
    ld = rep.by_reason.get("low_diversity", 0)
    if ld:
        out.append(
            f"{ld} low_diversity: answers repeat a few words (lines "
            f"{_lines(examples['low_diversity'])}); lower curation.min_diversity "
            f"(now {cur.get('min_diversity', '?')}) if that is their nature."
        )
    dup = rep.by_reason.get("duplicate", 0)
    if dup / n > 0.05:
        out.append(
            f"{dup} exact duplicates ({dup / n:.0%} of the file): the source "
            "repeats records — de-duplicate upstream; here they are only skipped."
        )
    nd = rep.by_reason.get("near_duplicate", 0)
    if nd:
        out.append(
            f"{nd} near duplicates at Jaccard >= {cur.get('near_dup_threshold', 0.8)}: "
            "raise curation.near_dup_threshold if they differ in ways that matter, or set "
            'curation.near_duplicates = "keep" (kept in the same split as their original).'
        )
    if too_long:
        longest = max(too_long)
        out.append(
            f"{len(too_long)} too_long (longest {longest} tokens, "
            f"train.max_length {settings.get('max_length', '?')}): "
            f"raise train.max_length to {_round_up(longest)} or set "
            'curation.on_too_long = "truncate".'
        )
    if rep.by_detail.get("no_trainable_tokens"):
        keep = (
            f"train.max_length = {max(keeps_at)} keeps them all (their last exchange whole)"
            if keeps_at
            else "raise train.max_length"
        )
        out.append(
            f"{rep.by_detail['no_trainable_tokens']} records keep no trained token "
            "even without their oldest turns (lines "
            f"{_lines(examples['no_trainable_tokens'])}, train.max_length "
            f"{settings.get('max_length', '?')}): {keep}, or shorten their prompts."
        )
    if rep.by_reason.get("invalid_json"):
        out.append(
            f"{rep.by_reason['invalid_json']} lines are not valid JSON (lines "
            f"{_lines(examples['invalid_json'])}): fix them and drop the file again."
        )
    if rep.by_reason.get("unknown_format"):
        keys = unknown_keys.most_common(1)[0][0] if unknown_keys else "?"
        out.append(
            f"{rep.by_reason['unknown_format']} records match no format (most common fields: "
            f"{keys}): rename them to messages / instruction+output / prompt+completion / text."
        )
    for detail, fix in (
        ("unfilled_placeholder", "fill in the template before exporting"),
        ("empty_output", "drop or complete them upstream"),
        ("no_assistant_turn", "add the assistant's answer"),
        ("bad_role_order", "start with a user turn, one system message first at most"),
        ("not_utf8", "re-save the file as UTF-8"),
        ("empty_prompt", "give each record the question it answers"),
        (
            "bad_tool_call",
            "each call needs a function name and JSON-object "
            "arguments (the rejection's `error` names the turn)",
        ),
        ("bad_tools", "`tools` must list function definitions, each with a name"),
        (
            "unknown_tool",
            "add the called functions to the records' `tools`, or fix the call names",
        ),
    ):
        if rep.by_detail.get(detail):
            out.append(
                f"{rep.by_detail[detail]} {detail} (lines {_lines(examples[detail])}): {fix}."
            )
    if not out and rep.total_rejected:
        out.append("Nothing stands out: the rejections are few and scattered.")
    return out


def _round_up(n: int) -> int:
    p = 64
    while p < n:
        p *= 2
    return p


def recover(ds: Path, min_score: float) -> list[dict[str, Any]]:
    """Quality rejects scoring at least `min_score`, as their original records, marked to pass the
    quality gate when curated again (`quality_override`); every other check still applies."""
    out = []
    for row in iter_jsonl(ds / "rejected.jsonl"):
        score = row.get("quality_score")
        if (
            row.get("rejection_reason") in QUALITY_REASONS
            and isinstance(score, (int, float))
            and score >= min_score
        ):
            rec = {k: v for k, v in row.items() if k not in _BOOKKEEPING}
            rec["quality_override"] = True
            out.append(rec)
    return out
