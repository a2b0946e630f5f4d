"""Curate one input file into data/datasets/<name>_<timestamp>/.

Every line read ends in exactly one place: train/val/test.jsonl or rejected.jsonl (with its line
number and a stable reason). Records stream through in chunks: the per-record work
(`analyse.Analyser`) runs in a pool of forked workers on large files, and this process makes the
decisions that depend on earlier records, in file order: exact duplicate, then the quality verdict,
then near duplicate. Only the dedup indexes grow with the file.
"""

from __future__ import annotations

import gc
import itertools
import multiprocessing
import os
import shutil
import signal
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson

from daemon.atomic import atomic_open, write_json_atomic
from daemon.config import CurationConfig, TrainConfig
from daemon.curation.analyse import (
    Analyser,
    Candidate,
    Item,
    Rejected,
    analyse_in_worker,
    gc_paused,
    rejected_row,
    set_worker_analyser,
    split_of,
)
from daemon.curation.lengths import AutoLengthCurator
from daemon.curation.neardup import NearDupIndex
from daemon.curation.quality import QualityScorer
from daemon.errors import InputFileError
from daemon.hashing import file_sha256
from daemon.jsonl_reader import read_items

SPLITS = ("train", "val", "test")


WORK_SUFFIX = ".tmp"
"""A curation's work folder in data/datasets/ is `.NAME.PID.tmp` until it is renamed to NAME."""


def remove_abandoned(datasets: Path) -> list[Path]:
    """Remove the work folders of curations whose process is gone (killed mid-way); returns what
    went. A folder of a live process (a curation running now, in the foreground or another job) is
    left alone."""
    from daemon.jobs import pid_alive

    gone = []
    for folder in datasets.glob(f".*{WORK_SUFFIX}"):
        pid = folder.name[: -len(WORK_SUFFIX)].rpartition(".")[2]
        if folder.is_dir() and pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
            gone.append(folder)
    return gone


def _worker_start() -> None:
    """A pool worker dies at once, silently, when its curation process does (no BrokenPipeError
    tracebacks in the job's log after a kill), and collects garbage between chunks again (the
    parent paused it)."""
    from daemon.parent_death import die_with_parent

    die_with_parent(signal.SIGKILL)
    gc.enable()


@dataclass
class CurationResult:
    dataset_dir: Path
    lines_read: int
    """Every line of the file, blank ones included (elements, for a JSON array)."""
    accepted: dict[str, int]
    rejected: int
    by_reason: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    blank_lines: int = 0

    @property
    def records(self) -> int:
        """The lines that hold something: each is accepted or rejected."""
        return self.lines_read - self.blank_lines

    @property
    def total_accepted(self) -> int:
        return sum(self.accepted.values())


@dataclass
class _Kept:
    """An accepted record in the near-duplicate index: how to name it, and its content key (for its
    split)."""

    line: int
    ident: str
    key: str
    tools: bytes
    """Its tool definitions' hash (b"" without): near duplicates must define the same tools."""


class Curator:
    """One pass over one file.

    tokenizer: the model's tokenizer, or None to skip the length checks. workers: processes for the
    per-record work; 0 = one per CPU core (up to 4), 1 = in this process. Small files are always
    done in this process.
    """

    CHUNK = 2048

    def __init__(
        self,
        cfg: CurationConfig,
        train_cfg: TrainConfig,
        tokenizer: Any = None,
        progress: Callable[[int], None] | None = None,
        search_dir: Path | None = None,
        workers: int = 0,
    ):
        self.cfg = cfg
        self.train_cfg = train_cfg
        self.progress = progress
        self.quality = QualityScorer(cfg, search_dir)
        self.analyser = Analyser(cfg, train_cfg, tokenizer, self.quality)
        self.workers = workers or min(4, os.cpu_count() or 1)
        if self.workers > 1:
            # Forked workers tokenise on their own; the Rust tokenizer's threads must not be live
            # across a fork.
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        self.seen: dict[bytes, int] = {}  # exact-dup key -> line of the first occurrence
        self.near = NearDupIndex(cfg.near_dup_threshold)
        self.kept: list[_Kept] = []  # near-dup index key -> the accepted record it stands for
        # records that needed an exact tokenisation (the rest fit by the byte bound)
        self.tokenised = 0
        # train.max_length = "auto": chosen from the accepted records' lengths
        # (daemon/curation/lengths.py)
        self.auto = (
            AutoLengthCurator(self.analyser, train_cfg, tokenizer) if self.analyser.auto else None
        )
        self.max_length: dict[str, Any] = {"setting": train_cfg.max_length}
        """stats.json's `max_length`: the setting, and with "auto" what it resolved to and why."""

    def run(self, src: Path, out_dir: Path) -> CurationResult:
        """Curate `src` into the new folder `out_dir`. It appears whole, by one rename of a work
        folder beside it (`.NAME.PID.tmp`, which `remove_abandoned` clears after a kill), and not
        at all for a file that fails before any record is read (empty, binary, not UTF-8)."""
        if out_dir.exists():
            raise FileExistsError(out_dir)
        work = out_dir.with_name(f".{out_dir.name}.{os.getpid()}{WORK_SUFFIX}")
        work.mkdir(parents=True)
        try:
            return self._run(src, work, out_dir)
        finally:
            # already renamed away when the run got that far
            shutil.rmtree(work, ignore_errors=True)

    def _run(self, src: Path, work: Path, out_dir: Path) -> CurationResult:
        started = time.time()
        self._counts: Counter[str] = Counter()
        self._reasons: Counter[str] = Counter()
        self._details: Counter[str] = Counter()
        self._by_domain: Counter[str] = Counter()
        self._scores: list[float] = []
        self._chars: dict[str, list[int]] = {s: [] for s in SPLITS}
        lines_read = 0  # records so far (blank lines are counted apart)
        blank: dict[str, int] = {}
        with ExitStack() as stack:  # the four files appear whole at the end, or not at all
            # No cyclic GC in this process for the run: the dedup index grows to hundreds of
            # thousands of objects that every full collection would walk again, and nothing here
            # builds reference cycles (the pool's result thread unpickles the workers' outcomes
            # under the same pause). Refcounting frees as usual.
            stack.enter_context(gc_paused())
            self._out = {
                s: stack.enter_context(atomic_open(work / f"{s}.jsonl", "wb")) for s in SPLITS
            }
            self._rejected = stack.enter_context(atomic_open(work / "rejected.jsonl", "wb"))
            pending = work / ".pending-clusters.jsonl"
            self._parent: list[int] = []
            if self.cfg.near_duplicates == "keep":
                self._pending = stack.enter_context(open(pending, "wb"))
                stack.callback(pending.unlink, missing_ok=True)
            for items, (outcomes, tokenised) in self._analysed(
                _chunks(read_items(src, blank), self.CHUNK), stack
            ):
                self.tokenised += tokenised
                lines_read += len(outcomes)
                for o, (_, payload) in zip(outcomes, items):
                    if isinstance(o, Rejected):
                        self._reject(o)
                    else:
                        self._decide(o, payload)
                if self.progress:
                    self.progress(lines_read)
            if self.cfg.near_duplicates == "keep":
                self._pending.close()
                self._write_clusters(pending)
        if self.auto is not None:
            with open(work / "rejected.jsonl", "ab") as self._rejected:
                chosen = self.auto.settle(work, self._settled_reject)
            self.max_length = chosen.to_dict()

        accepted = {s: self._counts[s] for s in SPLITS}
        result = CurationResult(
            out_dir,
            lines_read + blank.get("blank", 0),
            accepted,
            sum(self._reasons.values()),
            dict(self._reasons),
            seconds=time.time() - started,
            blank_lines=blank.get("blank", 0),
        )
        self._write_reports(src, work, result, started)
        # the dataset appears whole (with every rejection, even when all are)
        os.rename(work, out_dir)
        if result.total_accepted == 0:
            top = ", ".join(f"{k}: {v}" for k, v in self._reasons.most_common(3))
            raise InputFileError(
                f"{src.name} has no valid record ({lines_read} read, all rejected — {top}); "
                f"see {out_dir / 'rejected.jsonl'} or run `trainctl rejected {out_dir}`"
            )
        return result

    def _analysed(
        self, chunks: Iterator[list[Item]], stack: ExitStack
    ) -> Iterator[tuple[list[Item], Any]]:
        """(chunk, its analysis) in order: the first two here, the rest through a forked pool if
        there are more. The chunk's raw records stay in this process (a duplicate's rejected row is
        built from them), so that workers send back only what the decisions need."""
        first = list(itertools.islice(chunks, 2))
        if (
            self.workers <= 1
            or len(first) < 2
            or "fork" not in multiprocessing.get_all_start_methods()
        ):
            for chunk in itertools.chain(first, chunks):
                yield chunk, self.analyser.chunk(chunk)
            return
        # forked workers inherit it (and the plugin scorers) as they are
        set_worker_analyser(self.analyser)
        try:
            # Workers are forked from this run, where the collector is paused; each turns it back
            # on for the time between its chunks (Analyser.chunk pauses it again while it analyses
            # one).
            pool = stack.enter_context(
                multiprocessing.get_context("fork").Pool(self.workers, initializer=_worker_start)
            )
            # A bounded window of chunks in flight (Pool.imap would read the whole file ahead into
            # its queue).
            window: deque[tuple[list[Item], Any]] = deque()
            for chunk in itertools.chain(first, chunks):
                window.append((chunk, pool.apply_async(analyse_in_worker, (chunk,))))
                if len(window) >= 2 * self.workers:
                    chunk_done, result = window.popleft()
                    yield chunk_done, result.get()
            while window:
                chunk_done, result = window.popleft()
                yield chunk_done, result.get()
        finally:
            set_worker_analyser(None)

    # -- decisions that depend on the records before, in file order
    # -------------------------------------------------

    def _decide(self, c: Candidate, payload: Any) -> None:
        """payload: the record as read (line bytes or parsed array element), for a duplicate's
        rejected row."""
        first = self.seen.setdefault(c.key, c.line)
        if first != c.line:
            self._reject(_rejected_raw(payload, c.line, "duplicate", {"duplicate_of_line": first}))
            return
        if c.quality_reject is not None:
            self._reject(c.quality_reject)
            return
        sig = c.sig
        if self.cfg.near_duplicates == "keep":
            self._keep_in_cluster(c, sig)
            return
        match = self.near.find(sig, c.words, lambda k: self.kept[k].tools == c.tools_key)
        if match is not None:
            root = self.kept[match.key]
            self._reject(
                _rejected_raw(
                    payload,
                    c.line,
                    "near_duplicate",
                    {
                        "duplicate_of": root.ident,
                        "duplicate_of_line": root.line,
                        "similarity": round(match.similarity, 4),
                    },
                )
            )
            return
        self.near.add(len(self.kept), sig, c.words)
        self.kept.append(_Kept(c.line, c.ident, c.split_key, c.tools_key))
        self._accept(c.split, c.chars, c.row, c.keep_bound)
        if self.auto is not None:
            self.auto.accepted(c)

    def _accept(self, split: str, chars: int, row: bytes, bound: int) -> None:
        self._counts[split] += 1
        self._chars[split].append(chars)
        self._out[split].write(row + b"\n")
        if self.auto is not None:
            self.auto.written(split, bound)

    # near_duplicates = "keep": clusters are only known at the end (a later record can join two),
    # so accepted rows wait in a pending file with their record index; `_write_clusters` then puts
    # each cluster in the split of its first record. Union-find keeps the clusters; every kept
    # record is indexed.

    def _keep_in_cluster(self, c: Candidate, sig: Any) -> None:
        idx = len(self.kept)
        self.kept.append(_Kept(c.line, c.ident, c.split_key, c.tools_key))
        self._parent.append(idx)
        for m in self.near.find_all(sig, c.words, lambda k: self.kept[k].tools == c.tools_key):
            a, b = self._find(idx), self._find(m.key)
            self._parent[max(a, b)] = min(a, b)
        self.near.add(idx, sig, c.words)
        self._pending.write(b"%d\t%d\t%d\t" % (idx, c.chars, c.keep_bound) + c.row + b"\n")
        if self.auto is not None:
            self.auto.accepted(c)

    def _find(self, i: int) -> int:
        while self._parent[i] != i:
            self._parent[i] = self._parent[self._parent[i]]
            i = self._parent[i]
        return i

    def _write_clusters(self, pending: Path) -> None:
        with open(pending, "rb") as fh:
            for line in fh:
                idx, chars, bound, row = line.rstrip(b"\n").split(b"\t", 3)
                root = self.kept[self._find(int(idx))]
                self._accept(split_of(root.key, self.cfg), int(chars), row, int(bound))

    def _settled_reject(self, r: Rejected, split: str, index: int) -> None:
        """An accepted record the automatic max_length does not keep: out of its split, into the
        rejections."""
        self._counts[split] -= 1
        self._chars[split][index] = -1  # marked; dropped from the length statistics
        self._reject(r)

    def _reject(self, r: Rejected) -> None:
        self._reasons[r.reason] += 1
        if r.detail:
            self._details[r.detail] += 1
        self._by_domain[r.domain] += 1
        if r.score is not None:
            self._scores.append(r.score)
        self._rejected.write(r.row + b"\n")

    def _write_reports(
        self, src: Path, out_dir: Path, result: CurationResult, started: float
    ) -> None:
        scores = self._scores
        summary: dict[str, Any] = {
            "total_rejected": result.rejected,
            "by_reason": dict(self._reasons.most_common()),
            "by_detail": dict(self._details.most_common()),
            "by_domain": dict(self._by_domain.most_common()),
        }
        if scores:
            summary.update(
                avg_quality_score=round(sum(scores) / len(scores), 4),
                min_quality_score=min(scores),
                max_quality_score=max(scores),
            )
        write_json_atomic(out_dir / "rejection_summary.json", summary)
        write_json_atomic(
            out_dir / "stats.json",
            {
                "lines_read": result.lines_read,
                "blank_lines": result.blank_lines,
                "records": result.records,
                "accepted": result.total_accepted,
                "rejected": result.rejected,
                "accounted_for": result.total_accepted + result.rejected == result.records,
                "splits": result.accepted,
                "chars": {
                    s: _length_stats([n for n in v if n >= 0]) for s, v in self._chars.items()
                },
                "tokenised_exactly": self.tokenised,
                "max_length": self.max_length,
                "seconds": round(result.seconds, 3),
            },
        )
        write_json_atomic(
            out_dir / "metadata.json",
            {
                "source_file": src.name,
                "source_sha256": file_sha256(src, follow_symlinks=False),
                "settings": {
                    "curation": vars(self.cfg),
                    "max_length": self.train_cfg.max_length,
                    "loss_on": self.train_cfg.loss_on,
                    "model": self.train_cfg.model,
                },
                "quality_components": list(self.quality.weights),
                "started_at": _iso(started),
                "finished_at": _iso(time.time()),
            },
        )


def _rejected_raw(payload: Any, line: int, reason: str, details: dict[str, Any]) -> Rejected:
    return rejected_row(
        orjson.loads(payload) if isinstance(payload, bytes) else payload, "", line, reason, details
    )


def _chunks(items: Iterable[Item], n: int) -> Iterator[list[Item]]:
    it = iter(items)
    while chunk := list(itertools.islice(it, n)):
        yield chunk


def _length_stats(v: list[int]) -> dict[str, float]:
    if not v:
        return {"count": 0}
    s = sorted(v)
    return {
        "count": len(s),
        "min": s[0],
        "max": s[-1],
        "mean": round(sum(s) / len(s), 1),
        "p50": s[len(s) // 2],
        "p95": s[min(len(s) - 1, int(len(s) * 0.95))],
    }


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")


def dataset_stamp() -> str:
    return datetime.now().strftime("%Y%m%d_%H%M%S")
