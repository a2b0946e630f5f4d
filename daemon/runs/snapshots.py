"""Reading evolution snapshots: the accuracy/loss curve over snapshots and, per example, when it
was first learned, how often it was forgotten, and its Dataset-Cartography class.

Confidence is the mean probability the model gives the golden answer's tokens, averaged over the
snapshots after step 0 (the untrained model says nothing about an example); variability is its
standard deviation over the same snapshots. Classes (Swayamdipta et al., 2020, with fixed
thresholds): `easy` (confidence >= 0.6: learned and kept), `hard` (confidence < 0.3 and variability
< 0.2: never learned), `ambiguous` (the rest: the model goes back and forth). JSON only; no torch.
"""

from __future__ import annotations

import json
import os
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daemon.errors import TrainctlError

EASY_CONFIDENCE = 0.6
HARD_CONFIDENCE = 0.3
HARD_VARIABILITY = 0.2


def cartography_class(confidence: float, variability: float) -> str:
    """Dataset Cartography's class from confidence and variability (the thresholds above)."""
    if confidence >= EASY_CONFIDENCE:
        return "easy"
    if confidence < HARD_CONFIDENCE and variability < HARD_VARIABILITY:
        return "hard"
    return "ambiguous"


def count_classes(examples: list[Any]) -> dict[str, int]:
    """How many examples (anything with a `cls`) fall in each class, every class listed."""
    out = {"easy": 0, "ambiguous": 0, "hard": 0}
    for e in examples:
        out[e.cls] += 1
    return out


@dataclass
class ExampleEvolution:
    example_id: str
    input: str
    expected: str
    metadata: dict[str, Any]
    steps: list[int] = field(default_factory=list)
    correct: list[bool] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    prob: list[float] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)

    @property
    def first_learned(self) -> int | None:
        """The step of the first snapshot where the model answered it exactly."""
        return next((s for s, ok in zip(self.steps, self.correct) if ok), None)

    @property
    def forgetting_events(self) -> int:
        """Times it went from correct to wrong between consecutive snapshots."""
        return sum(1 for a, b in zip(self.correct, self.correct[1:]) if a and not b)

    def _probs(self) -> list[float]:
        return [p for s, p in zip(self.steps, self.prob) if s > 0] or self.prob

    @property
    def confidence(self) -> float:
        return statistics.fmean(self._probs()) if self.prob else 0.0

    @property
    def variability(self) -> float:
        p = self._probs()
        return statistics.pstdev(p) if len(p) > 1 else 0.0

    @property
    def cls(self) -> str:
        return cartography_class(self.confidence, self.variability)

    def to_dict(self, curve: bool = False) -> dict[str, Any]:
        d: dict[str, Any] = {
            "example_id": self.example_id,
            "input": self.input,
            "expected_output": self.expected,
            "metadata": self.metadata,
            "first_learned_step": self.first_learned,
            "forgetting_events": self.forgetting_events,
            "confidence": round(self.confidence, 4),
            "variability": round(self.variability, 4),
            "class": self.cls,
            "final_correct": self.correct[-1] if self.correct else None,
        }
        if curve:
            d["curve"] = [
                {"step": s, "exact_match": c, "loss": lo, "golden_prob": p, "model_output": o}
                for s, c, lo, p, o in zip(
                    self.steps, self.correct, self.loss, self.prob, self.outputs
                )
            ]
        return d


@dataclass
class Evolution:
    dataset: str
    curve: list[dict[str, Any]]
    """Per snapshot: step, accuracy, avg_loss, correct, total."""
    examples: list[ExampleEvolution]

    def classes(self) -> dict[str, int]:
        return count_classes(self.examples)

    def hardest(self) -> list[ExampleEvolution]:
        """Lowest confidence first: the examples most worth a look (mislabelled ones gather
        here)."""
        return sorted(self.examples, key=lambda e: (e.confidence, -e.variability))

    def get(self, example_id: str) -> ExampleEvolution:
        for e in self.examples:
            if example_id in (e.example_id, str(e.metadata.get("id"))):
                return e
        raise TrainctlError(
            f"no example {example_id!r} in {self.dataset} — ids look like "
            "ex_000 (or the record's own id); `trainctl evolution` lists them"
        )


STAMPED = re.compile(r"^(?P<name>.+)_\d{8}_\d{6}$")
"""A dataset folder's name: the input file's stem, then when it was curated
(daemon/curation/curator.py)."""


def stable_name(folder: Path) -> str | None:
    """The dataset's name without its timestamp (None when the folder's name carries none)."""
    m = STAMPED.match(folder.name)
    return m.group("name") if m else None


def link_stable_name(folder: Path) -> Path | None:
    """Point `<root>/<dataset name>` at `folder` (a run's timestamped snapshot folder), so that the
    documented data/evolution_snapshots/<dataset>/ holds the latest run of that dataset. The link
    is replaced atomically (a new link renamed over the old); a real folder of that name is left
    alone. Returns the link, or None."""
    name = stable_name(folder)
    if name is None:
        return None
    link = folder.parent / name
    if link.exists() and not link.is_symlink():
        return None
    tmp = folder.parent / f".{name}.{os.getpid()}.link"
    tmp.unlink(missing_ok=True)
    os.symlink(folder.name, tmp)
    os.replace(tmp, link)
    return link


def datasets(root: Path) -> list[Path]:
    """Snapshot folders, most recently written last (the stable-name links left out: they repeat
    one)."""
    if not root.exists():
        return []
    found = [
        d
        for d in root.iterdir()
        if d.is_dir() and not d.is_symlink() and any(d.glob("step_*.json"))
    ]
    return sorted(found, key=lambda d: max(p.stat().st_mtime for p in d.glob("step_*.json")))


def load(folder: Path) -> Evolution:
    files = sorted(folder.glob("step_*.json"))
    if not files:
        raise TrainctlError(f"no snapshots in {folder} — they are written while a job trains")
    curve: list[dict[str, Any]] = []
    by_id: dict[str, ExampleEvolution] = {}
    for f in files:
        try:
            doc = json.loads(f.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue  # written atomically, so only a foreign file can be broken; skip it
        step = int(doc["training_step"])
        s = doc["summary"]
        curve.append(
            {
                "step": step,
                "accuracy": s["accuracy"],
                "avg_loss": s["avg_loss"],
                "correct": s["correct"],
                "total": s["total_examples"],
            }
        )
        for ex in doc["examples"]:
            e = by_id.get(ex["example_id"])
            if e is None:
                e = by_id[ex["example_id"]] = ExampleEvolution(
                    ex["example_id"], ex["input"], ex["expected_output"], ex.get("metadata") or {}
                )
            e.steps.append(step)
            e.correct.append(bool(ex["exact_match"]))
            e.loss.append(float(ex["loss"]))
            e.prob.append(float(ex.get("golden_prob", 0.0)))
            e.outputs.append(ex["model_output"])
    return Evolution(folder.name, curve, list(by_id.values()))
