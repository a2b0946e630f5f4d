"""Near-duplicate detection: MinHash LSH (rensa) finds candidates, exact Jaccard on word 3-gram
shingles decides.

rensa was measured against datasketch on this workload (benchmarks/curate_throughput.py
--compare-minhash): about 15 µs against 630 µs per record for signature + query + insert, so rensa
it is. LSH bands are tuned to a lower similarity than the threshold so that pairs at the threshold
are almost never missed; candidates are ranked by their MinHash estimate and the best few get the
exact check, which keeps precision. Memory: the index, the signatures and the normalised text of
each indexed record.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

NUM_PERM = 144
# 6 rows a band: candidate probability 0.999 at Jaccard 0.8, 0.31 at 0.5, 0.017 at 0.3
NUM_BANDS = 24
# exact checks per record, best MinHash estimates first (bounds templated data's cost)
MAX_VERIFIED = 32
# estimates this far below the threshold still get the exact check (estimate sd ~0.035 at 0.8)
_SLACK = 0.15
SEED = 1234


def shingles(words: Sequence[str]) -> list[str]:
    """Word 3-grams; texts shorter than three words are one shingle (the whole text)."""
    if len(words) < 3:
        return [" ".join(words)]
    return list(map(" ".join, zip(words, words[1:], words[2:])))


def jaccard(a: Sequence[str], b: Sequence[str]) -> float:
    sa, sb = set(a), set(b)
    return len(sa & sb) / len(sa | sb) if sa or sb else 1.0


@dataclass
class Match:
    key: int
    similarity: float


class NearDupIndex:
    """Accepted records by integer key; `find` returns the most similar earlier one at or above the
    threshold."""

    def __init__(self, threshold: float):
        from rensa import RMinHashLSH

        self.threshold = threshold
        self._lsh = RMinHashLSH(min(threshold, 0.6), NUM_PERM, NUM_BANDS)
        self._sigs: dict[int, Any] = {}  # key -> MinHash, for the estimate that ranks candidates
        self._words: dict[int, str] = {}  # key -> normalised text, for the exact Jaccard check

    @staticmethod
    def signature(shingle_set: list[str]) -> Any:
        """The rensa MinHash of one shingle set. (Not rensa's faster bulk `from_token_sets`: it
        runs on a rayon thread pool, and a process that has started one deadlocks the workers it
        forks later.)"""
        from rensa import RMinHash

        m = RMinHash(NUM_PERM, SEED)
        m.update(shingle_set)
        return m

    def find(self, sig, words: str, among: Callable[[int], bool] | None = None) -> Match | None:
        """The most similar indexed record at or above the threshold; `words` is the record's
        normalised text; `among(key)`: only records it accepts count (the curator's: the same tool
        definitions)."""
        matches = self.find_all(sig, words, among)
        return max(matches, key=lambda m: (m.similarity, -m.key)) if matches else None

    def find_all(self, sig, words: str, among: Callable[[int], bool] | None = None) -> list[Match]:
        """Indexed records at or above the threshold (among the MAX_VERIFIED best estimates)."""
        keys = self._lsh.query(sig)
        if among is not None:
            keys = [k for k in keys if among(k)]
        if not keys:
            return []
        floor = self.threshold - _SLACK
        ranked = sorted(
            ((est, k) for k in keys if (est := sig.jaccard(self._sigs[k])) >= floor), reverse=True
        )
        mine = shingles(words.split())
        out = []
        for _, key in ranked[:MAX_VERIFIED]:
            sim = jaccard(mine, shingles(self._words[key].split()))
            if sim >= self.threshold:
                out.append(Match(key, sim))
        return out

    def add(self, key: int, sig, words: str) -> None:
        self._lsh.insert(key, sig)
        self._sigs[key] = sig
        self._words[key] = words

    def __len__(self) -> int:
        return len(self._words)
