"""`train.max_length = "auto"`: the length that keeps 99% of the curated records whole, within what
fits.

The choice is made once per dataset, where the records' token lengths are known (curation measures
them; a dataset curated without a tokenizer is measured when training starts), and the same rule
serves both:

    max_length = min(ceiling, round_up_64(p99 of the records' token lengths))
    ceiling    = min(the model's context, the longest row a micro-batch fits in memory)

The memory side is an estimate, read off the model's config.json and the device's free memory
without loading either (no torch import): activations kept for the backward pass per token (about
34 x hidden + 6 x intermediate bytes a layer in 16-bit, after Korthikanti et al. 2022 without the
attention scores, which SDPA never stores), plus the logits' 12 bytes a vocabulary entry (16-bit
logits, fp32 log-softmax and its gradient). A micro-batch holds batch_size rows of max_length
tokens (or train.batch_tokens with packing, when set); half the free memory, less twice the
weights, is theirs. It is a bound to stay well inside, not a prediction: the report says which side
capped the length.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROUNDING = 64
"""Lengths are whole multiples of this (a tile size GPUs like)."""
SHARE_KEPT_WHOLE = 0.99
"""The share of the curated records the automatic length keeps whole."""
MEMORY_SHARE = 0.5
"""Of the device's free memory, the share one micro-batch's activations may take."""
SAMPLE = 2048
"""Records measured exactly to find the percentile (a hash-chosen sample of larger datasets: about
20 of them lie above the 99th percentile, and measuring them costs about half a second)."""
_SANE_CONTEXT = 1 << 22  # tokenizers without a known limit report ~1e30


@dataclass(frozen=True)
class Ceiling:
    """The longest max_length this model and device take, and what set it."""

    tokens: int
    context: int | None
    """The model's context length (config.json), if known."""
    memory: int | None
    """The longest row one micro-batch fits in memory (estimate), if the model's shape is known."""
    device: str
    """Whose memory: `cuda (N GiB free)`, `cpu (N GiB available)` or `unknown`."""


@dataclass(frozen=True)
class AutoLength:
    """What `max_length = "auto"` resolved to, and from what (config.json's `max_length_auto`)."""

    value: int
    share: float
    """The share of the records it was chosen to keep whole (0.99; 1.0 with on_too_long =
    "reject")."""
    share_tokens: int
    """The length that keeps that share whole (before rounding up and the ceiling)."""
    longest_tokens: int
    measured: int
    """Records whose length was measured exactly (all of them, or a sample of SAMPLE)."""
    of: int
    """Records in the dataset."""
    longer: int
    """Measured records longer than `value` (cut from their oldest turns when trained)."""
    capped_by: str | None
    """`context` or `memory` when the ceiling is below the percentile; None when the data set
    it."""
    ceiling: int
    context: int | None
    memory: int | None
    device: str

    def to_dict(self) -> dict[str, Any]:
        return {"setting": "auto", **asdict(self)}

    def summary(self) -> str:
        """One line for the status file and the job log."""
        sample = (
            f"all {self.of} records"
            if self.measured >= self.of
            else f"{self.measured} of {self.of} records (a sample)"
        )
        line = (
            f"{self.value} tokens (auto: {self.share:.0%} of {sample} are "
            f"at most {self.share_tokens}; longest {self.longest_tokens}"
        )
        if self.capped_by:
            line += f"; capped by the {self.capped_by}: {self.ceiling}"
        return line + ")"


def round_up(tokens: int) -> int:
    return ROUNDING * max(1, math.ceil(tokens / ROUNDING))


def choose(
    lengths: list[int], of: int, ceiling: Ceiling, share: float | None = None
) -> AutoLength:
    """The automatic max_length for records of these token lengths (all of them, or a sample of
    `of`): the one that keeps `share` of them whole (SHARE_KEPT_WHOLE by default), within the
    ceiling."""
    s = sorted(lengths) or [ROUNDING]
    keep = SHARE_KEPT_WHOLE if share is None else share
    kept = s[min(len(s) - 1, max(0, math.ceil(keep * len(s)) - 1))]
    want = round_up(kept)
    value = max(ROUNDING, min(want, ceiling.tokens))
    capped = None
    if want > ceiling.tokens:
        capped = (
            "memory"
            if ceiling.memory is not None and ceiling.memory == ceiling.tokens
            else "context"
        )
    return AutoLength(
        value,
        keep,
        kept,
        s[-1],
        len(lengths),
        max(of, len(lengths)),
        sum(1 for n in s if n > value),
        capped,
        ceiling.tokens,
        ceiling.context,
        ceiling.memory,
        ceiling.device,
    )


def model_context(model_path: str) -> int | None:
    """The model's context length from its config.json (a local folder), or None."""
    doc = _config(model_path)
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        if isinstance(doc.get(key), int) and doc[key] > 0:
            return int(doc[key])
    return None


def ceiling(
    model_path: str,
    tokenizer: Any,
    batch_size: int,
    batch_tokens: int = 0,
    gradient_checkpointing: bool = False,
    device: str = "auto",
) -> Ceiling:
    """The longest max_length for this model on this device (see the module docstring)."""
    context = model_context(model_path)
    if context is None:
        n = getattr(tokenizer, "model_max_length", None)
        context = int(n) if isinstance(n, int) and 0 < n < _SANE_CONTEXT else None
    free, where = free_memory(device)
    per_token = bytes_per_token(model_path, gradient_checkpointing)
    memory = None
    if free is not None and per_token is not None:
        budget = MEMORY_SHARE * free - 2 * _weights_bytes(model_path)
        # A micro-batch is batch_size rows of up to L tokens; packed to batch_tokens,
        # max(batch_tokens, L).
        rows = 1 if batch_tokens else batch_size
        memory = max(ROUNDING, ROUNDING * int(max(0.0, budget / per_token / rows) // ROUNDING))
    limits = [n for n in (context, memory) if n is not None]
    return Ceiling(min(limits) if limits else 1 << 15, context, memory, where)


def bytes_per_token(model_path: str, gradient_checkpointing: bool = False) -> float | None:
    """Training activation bytes a token costs (module docstring), or None without a known
    shape."""
    doc = _config(model_path)
    doc = doc.get("text_config", doc) if isinstance(doc.get("text_config"), dict) else doc
    try:
        layers, hidden = int(doc["num_hidden_layers"]), int(doc["hidden_size"])
        vocab = int(doc["vocab_size"])
    except (KeyError, TypeError, ValueError):
        return None
    inter = int(doc.get("intermediate_size") or 4 * hidden)
    # With checkpointing a layer keeps only its input (2 bytes x hidden); one layer is recomputed
    # at a time.
    per_layer = 34 * hidden + 6 * inter
    kept = layers * 2 * hidden + per_layer if gradient_checkpointing else layers * per_layer
    return float(kept + 12 * vocab)


def free_memory(device: str = "auto") -> tuple[int | None, str]:
    """Free bytes of the device training will use (the smallest GPU's when there are several), and
    a word on whose; read from nvidia-smi and /proc/meminfo, so that nothing imports torch for
    it."""
    if device in ("auto", "cuda") and shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=memory.free", "--format=csv,noheader,nounits"],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            ).stdout
            free = [int(x) for x in out.split() if x.strip().isdigit()]
        except (OSError, subprocess.SubprocessError, ValueError):
            free = []
        if free:
            return min(free) << 20, f"cuda ({min(free) / 1024:.0f} GiB free)"
    if device in ("auto", "cpu"):
        try:
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemAvailable:"):
                    free_bytes = int(line.split()[1]) << 10
                    return free_bytes, f"cpu ({free_bytes / 2**30:.0f} GiB available)"
        except (OSError, ValueError, IndexError):
            pass
    return None, "unknown"


def _config(model_path: str) -> dict[str, Any]:
    try:
        doc = json.loads((Path(model_path) / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _weights_bytes(model_path: str) -> int:
    folder = Path(model_path)
    if not folder.is_dir():
        return 0
    return sum(p.stat().st_size for p in folder.glob("*.safetensors")) + sum(
        p.stat().st_size for p in folder.glob("*.bin")
    )
