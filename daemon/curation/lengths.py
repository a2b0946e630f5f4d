"""`train.max_length = "auto"` during curation: measure the accepted records, choose, settle the
few outliers.

While records stream through, the analyser holds them to the ceiling (daemon/models/max_length.py)
and this class keeps two things of the accepted ones:
- a sample for the percentile: the SAMPLE records with the smallest content hash (all of a smaller
  file), so that the same content gives the same sample, whatever the order or the number of
  workers;
- per split, in the order they were written, the byte bound of the check that depends on the length
  (`Candidate.keep_bound`, 4 bytes a record): only records whose bound reaches the chosen length
  can lose every trained token to it (or, with on_too_long = "reject", be longer than it).

At the end `settle` measures the sample, chooses the length and re-checks exactly only those few
records, read from the written splits by their position: with `truncate`, a record that keeps no
trained token even with its oldest turns left out moves to the rejections (saying which max_length
would keep it); with `reject`, the length grows to keep every accepted record whole (they all fit
the ceiling already).
"""

from __future__ import annotations

import heapq
import os
from array import array
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from daemon.chat.messages import messages_of, tools_of
from daemon.chat.render import measure_lengths, whole_lengths
from daemon.config import TrainConfig
from daemon.curation.analyse import Analyser, Candidate, Rejected, no_trainable_tokens
from daemon.models.max_length import SAMPLE, AutoLength, Ceiling, ceiling, choose

_CHECK_BATCH = 256


class AutoLengthCurator:
    """Collects what the automatic max_length needs during one curation, then settles it."""

    def __init__(self, analyser: Analyser, train_cfg: TrainConfig, tokenizer: Any):
        self.loss_on = train_cfg.loss_on
        self.keep_all = analyser.cfg.on_too_long == "reject"
        self.tok = tokenizer
        self.ceiling: Ceiling = ceiling(
            getattr(tokenizer, "name_or_path", "") or "",
            tokenizer,
            train_cfg.batch_size,
            train_cfg.batch_tokens if train_cfg.packing else 0,
            train_cfg.gradient_checkpointing,
            train_cfg.device,
        )
        # The analyser rejects only what no length up to the ceiling keeps.
        analyser.limit = self.ceiling.tokens
        # (-hash, row): a max-heap of the smallest hashes, so the root is the one to replace.
        self._sample: list[tuple[int, bytes]] = []
        self._accepted = 0
        self.bounds: dict[str, array[int]] = {}
        """Per split, each written record's bound, in the order of the split file."""

    def accepted(self, c: Candidate) -> None:
        """Note an accepted record for the sample (its split may still change: near-duplicate
        clusters)."""
        self._accepted += 1
        item = (-int.from_bytes(c.key[:8], "big"), c.row)
        if len(self._sample) < SAMPLE:
            heapq.heappush(self._sample, item)
        elif item > self._sample[0]:
            heapq.heapreplace(self._sample, item)

    def written(self, split: str, bound: int) -> None:
        """A record was written to `split` (the next line of its file)."""
        self.bounds.setdefault(split, array("i")).append(min(bound, 2**31 - 1))

    def settle(self, work: Path, reject: Callable[[Rejected, str, int], None]) -> AutoLength:
        """Choose the length; re-check the records it may not keep in the split files under `work`,
        handing each rejection to `reject(rejection, split, its row's index in the split)`."""
        rows = [orjson.loads(row) for _, row in self._sample]
        whole = whole_lengths(self.tok, [(messages_of(r), tools_of(r)) for r in rows])
        chosen = choose(whole, self._accepted, self.ceiling, share=1.0 if self.keep_all else None)
        longest = 0
        for split, bounds in self.bounds.items():
            # keep_bound >= L: may keep no trained token; whole bound > L: may be longer than L
            unsure = {
                i
                for i, b in enumerate(bounds)
                if b > chosen.value or (b == chosen.value and not self.keep_all)
            }
            if unsure:
                longest = max(
                    longest,
                    self._recheck(work / f"{split}.jsonl", unsure, chosen.value, split, reject),
                )
        if self.keep_all and longest > chosen.value:
            chosen = choose(whole + [longest], self._accepted, self.ceiling, share=1.0)
        return chosen

    def _recheck(
        self,
        path: Path,
        unsure: set[int],
        limit: int,
        split: str,
        reject: Callable[[Rejected, str, int], None],
    ) -> int:
        """Exact checks of the records of one split at the `unsure` positions; rewrites the file
        without the rejected ones. Returns the longest of them (for on_too_long = "reject")."""
        found: list[tuple[int, dict[str, Any]]] = []
        with open(path, "rb") as fh:
            for i, line in enumerate(fh):
                if i in unsure:
                    found.append((i, orjson.loads(line)))
        dropped: set[int] = set()
        longest = 0
        for at in range(0, len(found), _CHECK_BATCH):
            batch = found[at : at + _CHECK_BATCH]
            lengths = measure_lengths(
                self.tok, [(messages_of(r), tools_of(r)) for _, r in batch], self.loss_on
            )
            for (i, row), n in zip(batch, lengths):
                longest = max(longest, n.whole)
                if not self.keep_all and not n.keeps_trained_token(limit):
                    record = {k: v for k, v in row.items() if k not in ("line", "layout")}
                    reject(
                        no_trainable_tokens(record, int(row.get("line", 0)), n, limit), split, i
                    )
                    dropped.add(i)
        if dropped:
            tmp = path.with_name(path.name + ".settle")
            with open(path, "rb") as src, open(tmp, "wb") as dst:
                dst.writelines(line for i, line in enumerate(src) if i not in dropped)
            os.replace(tmp, path)
        return longest
