"""Quality scores: a few cheap components in [0, 1] and their weighted mean, judged against a
per-domain threshold.

Built-in components look at the answer (the text that is trained on): its prose and reasoning,
never the JSON of its tool calls. A turn that only calls tools has no prose: the prose components
have no say on it (calls are checked for form by validation).
  diversity       distinct-word share, averaged over 50-word windows so long answers are not
  punished for length coherence       share of word-like tokens, and of letters among the non-space
  characters repetition      1 - share of repeated word 3-grams (1.0 = nothing repeats)
  length_fitness  1.0 inside curation.answer_chars, decaying outside it (the answer text; the
  reasoning only when
                  the turn has no answer text)
  grounding       share of the answer's content words found in the input, only where the record has
  an input
                  (an Alpaca `input`, tool / observation turns); otherwise it has no say
The overall quality_score is their weighted geometric mean. Extra components are `module:function`
paths in curation.scorers: function(record dict) -> float | None.
A component that returns None is left out of the mean for that record.
"""

from __future__ import annotations

import importlib
import itertools
import math
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemon.chat.formats import Example
from daemon.config import CurationConfig
from daemon.errors import ConfigError

_WORD = re.compile(r"[^\W_]+(?:['’.-][^\W_]+)*")
_PUNCT = "\"'`*()[]{}<>,;:!?."
# Bytes that are not letters (ASCII letters and every byte of a multi-byte UTF-8 character count as
# letters).
_NOT_LETTER_BYTES = bytes(b for b in range(128) if not chr(b).isalpha())
_WINDOW = 50
BUILTIN = ("diversity", "coherence", "repetition", "length_fitness", "grounding")
# answers may rightly use words the input lacks (translation, summaries)
DEFAULT_WEIGHTS = {"grounding": 0.5}
# a component's floor in the geometric mean, so that one zero does not make everything zero
_FLOOR = 0.02

Scorer = Callable[[dict[str, Any]], "float | None"]


@dataclass
class Quality:
    score: float
    components: dict[str, float]
    threshold: float


def diversity(words: list[str]) -> float:
    if not words:
        return 0.0
    if len(words) <= _WINDOW:
        return len(set(words)) / len(words)
    windows = [words[i : i + _WINDOW] for i in range(0, len(words) - _WINDOW + 1, _WINDOW)]
    return sum(len(set(w)) / len(w) for w in windows) / len(windows)


def _word_with_punctuation(t: str) -> bool:
    core = t.strip(_PUNCT)
    return (
        bool(core)
        and len(core) <= 30
        and core.replace("-", "").replace("'", "").replace("’", "").isalnum()
    )


def coherence(text: str, tokens: list[str]) -> float:
    """Half: share of tokens that are words (punctuation around them allowed); half: letters among
    the visible characters, where 60% or more counts as full marks (numbers and punctuation are
    normal in moderation)."""
    if not tokens:
        return 0.0
    # Plain alphanumeric tokens are counted in C; only the others (punctuation attached, hyphens)
    # are looked at.
    others = list(itertools.filterfalse(str.isalnum, tokens))
    wordlike = len(tokens) - len(others) + sum(1 for t in others if _word_with_punctuation(t))
    if max(map(len, tokens)) > 30:
        wordlike -= sum(1 for t in tokens if len(t) > 30 and t.isalnum())
    raw = text.encode("utf-8")
    visible = len(raw) - raw.count(b" ") - raw.count(b"\n") - raw.count(b"\t") - raw.count(b"\r")
    letters = len(raw.translate(None, _NOT_LETTER_BYTES))
    return 0.5 * wordlike / len(tokens) + 0.5 * min(1.0, letters / max(1, visible) / 0.6)


def repetition(words: list[str]) -> float:
    if len(words) < 4:
        return 1.0
    grams = list(zip(words, words[1:], words[2:]))
    return len(set(grams)) / len(grams)


def length_fitness(n_chars: int, lo: int, hi: int) -> float:
    if n_chars < lo:
        return n_chars / lo
    if n_chars > hi:
        return hi / n_chars
    return 1.0


def grounding(answer_words: list[str], context: str) -> float | None:
    if not context.strip():
        return None
    content = [w for w in answer_words if len(w) >= 4 or w.isdigit()]
    if not content:
        return None
    ctx = set(context.lower().split()) | set(_WORD.findall(context.lower()))
    return sum(1 for w in content if w in ctx) / len(content)


def context_of(ex: Example) -> str:
    """The input an answer can be grounded in: an Alpaca `input`, tool results. '' when there is
    none."""
    parts = [m.content for m in ex.messages if m.role == "tool"]
    if ex.fmt == "alpaca" and isinstance(ex.raw.get("input"), str):
        parts.append(ex.raw["input"])
    return "\n".join(parts)


def load_scorer(path: str, search_dir: Path | None = None) -> Scorer:
    """Import `module:function`; `search_dir` (the home folder) is importable so a user can drop a
    module there."""
    mod_name, _, fn_name = path.partition(":")
    if search_dir is not None and str(search_dir) not in sys.path:
        sys.path.insert(0, str(search_dir))
    try:
        mod = importlib.import_module(mod_name)
    except Exception as exc:  # ImportError, or the module itself failing at import
        raise ConfigError(
            f"curation.scorers: cannot import {mod_name!r} ({type(exc).__name__}: {exc}) — put "
            f"{mod_name}.py in the home folder or install it, or remove it from trainctl.toml"
        ) from exc
    fn = getattr(mod, fn_name, None)
    if not callable(fn):
        raise ConfigError(
            f"curation.scorers: {mod_name!r} has no function "
            f"{fn_name!r} — check the name in trainctl.toml"
        )
    return fn


class QualityScorer:
    """Scores one example: `score(ex) -> Quality`. Plugin scorers are loaded once, here."""

    def __init__(self, cfg: CurationConfig, search_dir: Path | None = None):
        self.cfg = cfg
        self.lo, self.hi = cfg.answer_chars
        self.plugins = [(p.partition(":")[2], load_scorer(p, search_dir)) for p in cfg.scorers]
        self.weights = {
            name: cfg.quality_weights.get(name, DEFAULT_WEIGHTS.get(name, 1.0))
            for name in [*BUILTIN, *(n for n, _ in self.plugins)]
        }

    def threshold(self, domain: str | None) -> float:
        return self.cfg.domain_min_quality.get(domain or "", self.cfg.min_quality)

    def score(self, ex: Example, words: list[str] | None = None) -> Quality:
        """`words`: the answer's prose (Message.prose) lower-cased and split on whitespace, when
        the caller has it."""
        answer = ex.answer_message
        prose = answer.prose
        if words is None:
            words = prose.lower().split()
        comps: dict[str, float] = {}
        if prose.strip():  # a tool-call-only turn has no prose to judge
            comps = {
                "diversity": diversity(words),
                "coherence": coherence(prose, prose.split()),
                "repetition": repetition(words),
                "length_fitness": length_fitness(
                    len(answer.content or answer.reasoning), self.lo, self.hi
                ),
            }
        g = grounding(words, context_of(ex))
        if g is not None:
            comps["grounding"] = g
        for name, fn in self.plugins:
            comps.update(self._plugin(name, fn, ex))
        # Weighted geometric mean: one component near 0 (noise, say) pulls the score down as a weak
        # link should, where an arithmetic mean would let three good components carry it. (A plain
        # loop: this runs per record.)
        total = logs = 0.0
        for k, v in comps.items():
            w = self.weights[k]
            total += w
            logs += w * math.log(v if v > _FLOOR else _FLOOR)
        overall = math.exp(logs / total) if total else 1.0
        domain = ex.meta.get("domain")
        return Quality(
            round(overall, 4),
            {k: round(v, 4) for k, v in comps.items()},
            self.threshold(domain if isinstance(domain, str) else None),
        )

    @staticmethod
    def _plugin(name: str, fn: Scorer, ex: Example) -> dict[str, float]:
        record = ex.to_record()
        try:
            v = fn(record)
        except Exception as exc:
            raise ConfigError(
                f"curation scorer {name} failed on line {ex.line}: {type(exc).__name__}: {exc}"
            ) from exc
        if v is None:
            return {}
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
            raise ConfigError(
                f"curation scorer {name} returned {v!r} on line "
                f"{ex.line}; it must return a number in [0, 1] or None"
            )
        return {name: float(v)}
