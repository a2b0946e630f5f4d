"""`train.max_length = "auto"` during curation: measure the accepted records, choose, settle the few outliers.

While records stream through, the analyser holds them to the ceiling (daemon/models/max_length.py) and this
class keeps two things of every accepted one:
- a sample for the percentile: the SAMPLE records with the smallest content hash (all of a smaller file), so
  that the same content gives the same sample, whatever the order or the number of workers;
- the byte bound of the check that depends on the length (`Candidate.keep_bound`): only records whose bound
  reaches the chosen length can lose every trained token to it (or, with on_too_long = "reject", be longer).

At the end `settle` measures the sample, chooses the length and re-checks those few records exactly in the
written splits: with `truncate`, a record that keeps no trained token even with its oldest turns left out is
moved to the rejections (saying which max_length would keep it); with `reject`, the length grows to keep every
accepted record whole (they all fit the ceiling already).
"""

from __future__ import annotations

import heapq
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from daemon.chat.messages import messages_of, tools_of
from daemon.chat.render import measure_lengths
from daemon.config import TrainConfig
from daemon.curation.analyse import Analyser, Candidate, Rejected, no_trainable_tokens
from daemon.models.max_length import SAMPLE, AutoLength, Ceiling, ceiling, choose

_CHECK_BATCH = 256


class AutoLengthCurator:
    """Collects what the automatic max_length needs during one curation, then settles it."""

    def __init__(self, analyser: Analyser, train_cfg: TrainConfig, tokenizer: Any):
        self.analyser = analyser
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
        analyser.limit = (
            self.ceiling.tokens
        )  # the analyser rejects only what no length up to it keeps
        self._sample: list[
            tuple[int, bytes]
        ] = []  # (-hash, row): a max-heap of the smallest hashes
        self._accepted = 0
        self._max_bound = 0

    def accepted(self, c: Candidate) -> None:
        """Note an accepted record (before near-duplicate clustering moves it, which does not matter here)."""
        self._accepted += 1
        self._max_bound = max(self._max_bound, c.keep_bound)
        item = (-int.from_bytes(c.key[:8], "big"), c.row)
        if len(self._sample) < SAMPLE:
            heapq.heappush(self._sample, item)
        elif item > self._sample[0]:
            heapq.heapreplace(self._sample, item)

    def settle(
        self, work: Path, splits: tuple[str, ...], reject: Callable[[Rejected, str, int], None]
    ) -> AutoLength:
        """Choose the length; re-check the records it may not keep in the split files under `work`, handing
        each rejection to `reject(rejection, split, its row's index in the split)`."""
        rows = [orjson.loads(row) for _, row in self._sample]
        whole = [
            n.whole
            for n in measure_lengths(
                self.tok, [(messages_of(r), tools_of(r)) for r in rows], self.loss_on
            )
        ]
        chosen = choose(whole, self._accepted, self.ceiling, share=1.0 if self.keep_all else None)
        if self._max_bound < chosen.value:
            return chosen
        longest = 0
        for split in splits:
            path = work / f"{split}.jsonl"
            gone = self._recheck(path, chosen.value, split, reject)
            longest = max(longest, gone)
        if self.keep_all and longest > chosen.value:
            chosen = choose(whole + [longest], self._accepted, self.ceiling, share=1.0)
        return chosen

    def _recheck(
        self, path: Path, limit: int, split: str, reject: Callable[[Rejected, str, int], None]
    ) -> int:
        """Exact checks of one split's records whose bound reaches `limit`; rewrites the file without the
        rejected ones. Returns the longest record found (for on_too_long = "reject")."""
        with open(path, "rb") as fh:
            lines = fh.readlines()
        unsure: list[int] = []
        for i, line in enumerate(lines):
            row = orjson.loads(line)
            msgs, tools = messages_of(row), tools_of(row)
            if self.keep_all:
                if self.analyser.whole_bound(msgs, tools) > limit:
                    unsure.append(i)
            elif self.analyser.keep_bound(msgs, tools) >= limit:
                unsure.append(i)
        dropped: set[int] = set()
        longest = 0
        for at in range(0, len(unsure), _CHECK_BATCH):
            batch = unsure[at : at + _CHECK_BATCH]
            rows = [orjson.loads(lines[i]) for i in batch]
            for i, row, n in zip(
                batch,
                rows,
                measure_lengths(
                    self.tok, [(messages_of(r), tools_of(r)) for r in rows], self.loss_on
                ),
            ):
                longest = max(longest, n.whole)
                if not self.keep_all and not n.keeps_trained_token(limit):
                    record = {k: v for k, v in row.items() if k not in ("line", "layout")}
                    reject(
                        no_trainable_tokens(record, int(row.get("line", 0)), n, limit), split, i
                    )
                    dropped.add(i)
        if dropped:
            tmp = path.with_name(path.name + ".settle")
            with open(tmp, "wb") as fh:
                fh.writelines(line for i, line in enumerate(lines) if i not in dropped)
            os.replace(tmp, path)
        return longest
