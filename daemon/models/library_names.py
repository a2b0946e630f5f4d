"""The names transformers gives things in the installed version, so that trainctl never passes a
deprecated one.

transformers 5.20 renamed two things trainctl uses; the old names still work there but print a
FutureWarning on every run (and go in 5.40 and v6). trainctl supports both sides of the rename (its
CPU pin is below 5.20, GPU installs take the newest), so it asks the installed version which name
it knows:

- `TrainingArguments.gradient_checkpointing(_kwargs)` became `activation_checkpointing(_kwargs)`;
- the decoder's `past_key_values` argument became `cache`.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Any


@functools.cache
def checkpointing_prefix() -> str:
    """`activation_checkpointing` where TrainingArguments has it, else `gradient_checkpointing`."""
    from transformers import TrainingArguments

    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    return (
        "activation_checkpointing"
        if "activation_checkpointing" in names
        else "gradient_checkpointing"
    )


def checkpointing_args(enabled: bool) -> dict[str, Any]:
    """TrainingArguments' checkpointing settings under the installed version's names.
    Non-reentrant: it works with frozen base weights (LoRA) without forcing input gradients, and
    under DDP."""
    prefix = checkpointing_prefix()
    return {prefix: enabled, f"{prefix}_kwargs": {"use_reentrant": False} if enabled else None}


def cache_argument(model: Any) -> str:
    """The name the model's forward takes its key/value cache by: `cache` or `past_key_values`."""
    base: Any = model.get_base_model() if hasattr(model, "get_base_model") else model
    cls: Any = type(base)
    return _cache_name(cls)


@functools.cache
def _cache_name(cls: Any) -> str:
    try:
        params = inspect.signature(cls.forward).parameters
    except (TypeError, ValueError):
        return "past_key_values"
    return "cache" if "cache" in params and "past_key_values" not in params else "past_key_values"
