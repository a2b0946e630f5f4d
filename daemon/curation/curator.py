"""Curate one input file into data/datasets/<name>_<timestamp>/.

Every line read ends in exactly one place: train/val/test.jsonl or rejected.jsonl (with its line number and a
stable reason). Records stream through; only the dedup index grows with the file.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from daemon.atomic import atomic_open, write_json_atomic
from daemon.config import CurationConfig, TrainConfig
from daemon.curation import validate
from daemon.curation.formats import Example, FormatError, normalise
from daemon.curation.reader import RawLine, read_records
from daemon.errors import InputFileError

SPLITS = ("train", "val", "test")


@dataclass
class CurationResult:
    dataset_dir: Path
    lines_read: int
    accepted: dict[str, int]
    rejected: int
    by_reason: dict[str, int] = field(default_factory=dict)

    @property
    def total_accepted(self) -> int:
        return sum(self.accepted.values())


def content_hash(ex: Example) -> str:
    """Hash of the normalised conversation (case- and whitespace-insensitive): the exact-duplicate key."""
    norm = "\x1e".join(f"{m.role}\x1f{' '.join(m.content.lower().split())}" for m in ex.messages)
    return hashlib.sha256(norm.encode("utf-8")).hexdigest()


def split_of(key: str, cfg: CurationConfig) -> str:
    """Deterministic split from a hash: the same content lands in the same split on every run."""
    h = hashlib.sha256(f"{cfg.seed}:{key}".encode()).digest()
    u = int.from_bytes(h[:8], "big") / 2**64
    if u < cfg.val_fraction:
        return "val"
    if u < cfg.val_fraction + cfg.test_fraction:
        return "test"
    return "train"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _rejected_row(raw: RawLine, reason: str, details: dict[str, Any]) -> dict[str, Any]:
    # Keep the record's own fields (Alpaca rows stay Alpaca-shaped); unparsable lines keep their raw text.
    row = dict(raw.obj) if isinstance(raw.obj, dict) else {"raw": raw.text}
    row["line"] = raw.line
    row["rejection_reason"] = reason
    row["rejection_details"] = details
    return row


class Curator:
    """One pass over one file. `tokenizer` (optional) enables the length and trainable-token checks."""

    def __init__(self, cfg: CurationConfig, train_cfg: TrainConfig, tokenizer: Any = None,
                 progress: Callable[[int], None] | None = None):
        self.cfg = cfg
        self.train_cfg = train_cfg
        self.tok = tokenizer
        self.progress = progress
        self.seen: dict[str, int] = {}  # exact-dup key -> line of the first occurrence

    def run(self, src: Path, out_dir: Path) -> CurationResult:
        started = time.time()
        out_dir.mkdir(parents=True, exist_ok=False)
        counts: Counter[str] = Counter()
        reasons: Counter[str] = Counter()
        by_domain: Counter[str] = Counter()
        lengths: dict[str, list[int]] = {s: [] for s in SPLITS}
        lines_read = 0
        with ExitStack() as files:  # all four appear whole at the end, or not at all
            handles = {s: files.enter_context(atomic_open(out_dir / f"{s}.jsonl", "w")) for s in SPLITS}
            rejected_fh = files.enter_context(atomic_open(out_dir / "rejected.jsonl", "w"))
            for raw in read_records(src):
                lines_read += 1
                if self.progress and lines_read % 1000 == 0:
                    self.progress(lines_read)
                outcome = self._judge(raw)
                if isinstance(outcome, dict):  # rejected
                    reasons[outcome["rejection_reason"]] += 1
                    by_domain[str(outcome.get("domain", "default"))] += 1
                    rejected_fh.write(json.dumps(outcome, ensure_ascii=False) + "\n")
                    continue
                ex, key, n_tokens = outcome
                split = split_of(key, self.cfg)
                counts[split] += 1
                lengths[split].append(n_tokens)
                handles[split].write(json.dumps(ex.to_record(), ensure_ascii=False) + "\n")

        accepted = {s: counts[s] for s in SPLITS}
        result = CurationResult(out_dir, lines_read, accepted, sum(reasons.values()), dict(reasons))
        write_json_atomic(out_dir / "rejection_summary.json", {
            "total_rejected": result.rejected, "by_reason": dict(reasons.most_common()),
            "by_domain": dict(by_domain.most_common())})
        write_json_atomic(out_dir / "stats.json", {
            "lines_read": lines_read, "accepted": result.total_accepted, "rejected": result.rejected,
            "accounted_for": result.total_accepted + result.rejected == lines_read,
            "splits": accepted,
            "tokens": {s: _length_stats(v) for s, v in lengths.items()}})
        write_json_atomic(out_dir / "metadata.json", {
            "source_file": src.name, "source_sha256": file_sha256(src),
            "settings": {"curation": vars(self.cfg), "max_length": self.train_cfg.max_length,
                         "loss_on": self.train_cfg.loss_on, "model": self.train_cfg.model},
            "started_at": _iso(started), "finished_at": _iso(time.time())})
        if result.total_accepted == 0:
            top = ", ".join(f"{k}: {v}" for k, v in reasons.most_common(3))
            raise InputFileError(f"{src.name} has no valid record ({lines_read} read, all rejected — {top}); "
                                 f"see {out_dir / 'rejected.jsonl'} or run `trainctl rejected {out_dir}`")
        return result

    def _judge(self, raw: RawLine) -> dict[str, Any] | tuple[Example, str, int]:
        """A rejected row, or (example, dedup key, token count) for an accepted one."""
        if raw.error:
            if raw.error == "validation_failed":
                details = {"detail": raw.detail, "error": raw.message}
            else:
                details = {"error": raw.detail}
            return _rejected_row(raw, raw.error, details)
        try:
            ex = normalise(raw.obj, raw.line)
        except FormatError as exc:
            return _rejected_row(raw, "validation_failed", {"detail": exc.detail, "error": str(exc)})
        if ex is None:
            keys = sorted(raw.obj)[:8] if isinstance(raw.obj, dict) else type(raw.obj).__name__
            return _rejected_row(raw, "unknown_format", {"error": f"no known format has these fields: {keys}"})
        problem = validate.check(ex)
        if problem:
            return _rejected_row(raw, "validation_failed", {"detail": problem[0], "error": problem[1]})
        n_tokens = 0
        if self.tok is not None:
            from daemon.training.data import EncodeError, encode_messages

            try:
                enc = encode_messages(self.tok, ex.messages, self.train_cfg.max_length, self.train_cfg.loss_on)
            except EncodeError as exc:
                return _rejected_row(raw, "validation_failed", {"detail": exc.detail, "error": str(exc)})
            n_tokens = enc.full_length
            limit = self.train_cfg.max_length
            if enc.full_length > limit and self.cfg.on_too_long == "reject":
                return _rejected_row(raw, "validation_failed", {
                    "detail": "too_long", "tokens": enc.full_length, "max_length": limit})
            if enc.trainable == 0:
                return _rejected_row(raw, "validation_failed", {
                    "detail": "no_trainable_tokens", "tokens": enc.full_length, "max_length": limit,
                    "error": "no trained token is left after truncation to max_length"})
        key = content_hash(ex)
        if key in self.seen:
            return _rejected_row(raw, "duplicate", {"duplicate_of_line": self.seen[key]})
        self.seen[key] = raw.line
        return ex, key, n_tokens


def _length_stats(v: list[int]) -> dict[str, float]:
    if not v:
        return {"count": 0}
    s = sorted(v)
    return {"count": len(s), "min": s[0], "max": s[-1], "mean": round(sum(s) / len(s), 1),
            "p50": s[len(s) // 2], "p95": s[min(len(s) - 1, int(len(s) * 0.95))]}


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")


def dataset_stamp() -> str:
    return datetime.now().strftime("%Y%m%d_%H%M%S")
