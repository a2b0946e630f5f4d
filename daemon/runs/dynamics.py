"""Per-example training dynamics of a run: what every training example's forward passes said, read without torch.

**The record** (`data/runs/<job>/dynamics.bin`, written by daemon/training/dynamics_recorder.py): one fixed-size
little-endian record per example per training pass (`RECORD`): the example's row in the train split, the epoch,
the optimizer step it belonged to, and four figures over its trained tokens, measured on the training forward
pass before that step's update: mean loss, mean probability of the golden token, share of golden tokens that
were the argmax, and the AUM-style margin (golden logit minus the largest other logit, averaged), with the
number of trained tokens. Records are appended per step; a torn last record (a kill mid-append) is ignored, and
a resumed run first drops the records of the steps it will redo, so no pass is counted twice. `dynamics.json`
beside it names the dataset and the fields.

**Per example** (Swayamdipta et al. 2020; Toneva et al. 2019; Pleiss et al. 2020): an epoch's figures are the
token-weighted mean of its passes (a turn its template renders on its own is a pass too). Confidence = mean golden
probability over epochs; variability = its standard deviation; AUM = mean margin over epochs — these three over the
epochs after the first when there are several (during the first the model is still learning the task, so an
example's figure says mostly how early in the epoch it came: on SmolLM2, 2 epochs, 10% planted wrong answers, the
lowest-confidence 15% held 80% of the planted over both epochs, 100% over the second). Correctness = share of epochs
in which every golden token was the argmax; forgetting events = epochs correct followed by one not (all epochs). The
classes use the thresholds of daemon/runs/snapshots.py (easy: confidence >= 0.6; hard: confidence < 0.3 and variability
< 0.2; ambiguous: the rest).

**Suspected label errors**: an example is `suspect_label` when it is a low outlier of this dataset on both
confidence and AUM: below the median minus 3 scaled median absolute deviations, each. On a task the model learns,
mislabelled records sit there: the model keeps preferring the rule's answer to theirs. When the model learned
nothing, everyone is low together and nothing is flagged. Nothing is suspected after a single epoch: its figures
say mostly how early in the epoch each example came (one epoch of the clean reverse-the-words demo on SmolLM2 put 27
of 370 in both low tails). Not required: the `hard` class. Its fixed thresholds read
a mean over every trained token, template tokens included, so a record whose two answer words are wrong still scores
0.6-0.7: on SmolLM2 (2 epochs, 30 planted in 300) requiring `hard` flagged none and requiring "not easy" 3; on
builtin:tiny, which memorises them (a planted answer's probability climbs from ~0.05 to ~0.75 by the 6th epoch),
they are `ambiguous`. The two outlier cuts alone flagged 30 of 30 on both, with no false flag.
"""

from __future__ import annotations

import json
import statistics
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daemon.atomic import iter_jsonl
from daemon.errors import TrainctlError
from daemon.runs.snapshots import cartography_class, count_classes

RECORD = struct.Struct("<iiiffffi")
"""example, epoch, step, loss, golden probability, argmax share, margin, trained tokens."""
FIELDS = ("example", "epoch", "step", "loss", "prob", "correct", "margin", "tokens")
DYNAMICS_FILE = "dynamics.bin"
HEADER_FILE = "dynamics.json"
OUTLIER_MADS = 3.0
"""How many scaled median absolute deviations below the median (confidence, AUM) an example must be to be suspected."""
SORTS = ("confidence", "aum", "forgetting", "variability")


def read_records(path: Path, max_step: int | None = None) -> list[tuple]:
    """Every whole record (a torn tail ignored), those of steps after `max_step` left out."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    whole = len(data) - len(data) % RECORD.size
    rows = list(RECORD.iter_unpack(data[:whole]))
    return rows if max_step is None else [r for r in rows if r[2] <= max_step]


@dataclass
class ExampleDynamics:
    index: int
    """Row of the train split."""
    row: dict[str, Any] = field(default_factory=dict)
    epochs: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    prob: list[float] = field(default_factory=list)
    correct: list[float] = field(default_factory=list)
    """Per epoch: share of golden tokens that were the argmax."""
    margin: list[float] = field(default_factory=list)
    suspect: bool = False

    def _settled(self, values: list[float]) -> list[float]:
        """The values of the epochs after the first, when there are any: during the first epoch the model is still
        learning the task, and an example's figure then says mostly how early in the epoch it came."""
        later = [v for e, v in zip(self.epochs, values) if e > 0]
        return later or values

    @property
    def confidence(self) -> float:
        p = self._settled(self.prob)
        return statistics.fmean(p) if p else 0.0

    @property
    def variability(self) -> float:
        p = self._settled(self.prob)
        return statistics.pstdev(p) if len(p) > 1 else 0.0

    @property
    def right(self) -> list[bool]:
        """Per epoch: every golden token was the argmax (greedy decoding would have written the answer)."""
        return [c >= 1.0 - 1e-6 for c in self.correct]

    @property
    def correctness(self) -> float:
        return sum(self.right) / len(self.right) if self.right else 0.0

    @property
    def forgetting_events(self) -> int:
        r = self.right
        return sum(1 for a, b in zip(r, r[1:]) if a and not b)

    @property
    def aum(self) -> float:
        m = self._settled(self.margin)
        return statistics.fmean(m) if m else 0.0

    @property
    def cls(self) -> str:
        return cartography_class(self.confidence, self.variability)

    @property
    def example_id(self) -> str:
        return str(self.row.get("id", f"train_{self.index:05d}"))

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "example_id": self.example_id, "line": self.row.get("line"),
                "class": self.cls, "confidence": round(self.confidence, 4), "variability": round(self.variability, 4),
                "correctness": round(self.correctness, 4), "forgetting_events": self.forgetting_events,
                "aum": round(self.aum, 4), "suspect_label": self.suspect,
                "per_epoch": [{"epoch": e, "loss": round(lo, 4), "prob": round(p, 4), "correct": round(c, 4),
                               "margin": round(m, 4)}
                              for e, lo, p, c, m in zip(self.epochs, self.loss, self.prob, self.correct, self.margin)]}


@dataclass
class RunDynamics:
    run_dir: Path
    dataset: str
    examples: list[ExampleDynamics]
    """Those with at least one recorded pass, in train-split order."""
    steps: int
    """The last optimizer step recorded."""

    def classes(self) -> dict[str, int]:
        return count_classes(self.examples)

    def suspects(self) -> list[ExampleDynamics]:
        return [e for e in self.examples if e.suspect]

    def sorted(self, by: str = "confidence") -> list[ExampleDynamics]:
        """Most worth a look first: lowest confidence or AUM, most forgetting events, highest variability."""
        if by not in SORTS:
            raise TrainctlError(f"unknown sort {by!r} — use one of {', '.join(SORTS)}")
        key = {"confidence": lambda e: (e.confidence, e.aum), "aum": lambda e: (e.aum, e.confidence),
               "forgetting": lambda e: (-e.forgetting_events, e.confidence),
               "variability": lambda e: (-e.variability, e.confidence)}[by]
        return sorted(self.examples, key=key)


def aggregate(records: list[tuple], rows: list[dict[str, Any]] | None = None) -> list[ExampleDynamics]:
    """Records -> per example, per epoch (token-weighted over an epoch's passes), with suspects marked."""
    acc: dict[int, dict[int, list[float]]] = {}
    for ex, epoch, _step, loss, prob, correct, margin, tokens in records:
        a = acc.setdefault(ex, {}).setdefault(epoch, [0.0, 0.0, 0.0, 0.0, 0.0])
        w = max(1, tokens)
        a[0] += loss * w
        a[1] += prob * w
        a[2] += correct * w
        a[3] += margin * w
        a[4] += w
    out = []
    for ex in sorted(acc):
        d = ExampleDynamics(ex, (rows[ex] if rows and ex < len(rows) else {}))
        for epoch in sorted(acc[ex]):
            s = acc[ex][epoch]
            d.epochs.append(epoch)
            d.loss.append(s[0] / s[4])
            d.prob.append(s[1] / s[4])
            d.correct.append(s[2] / s[4])
            d.margin.append(s[3] / s[4])
        out.append(d)
    mark_suspects(out)
    return out


def mark_suspects(examples: list[ExampleDynamics]) -> None:
    """See the module docstring: a low outlier in confidence and in AUM, from two epochs on."""
    if len(examples) < 10 or not any(e > 0 for x in examples for e in x.epochs):
        return
    conf_cut = _low_outlier([e.confidence for e in examples], 0.02)
    aum_cut = _low_outlier([e.aum for e in examples], 0.1)
    for e in examples:
        e.suspect = e.confidence < conf_cut and e.aum < aum_cut


def _low_outlier(values: list[float], floor: float) -> float:
    """Median - OUTLIER_MADS x the scaled median absolute deviation (at least `floor`, so that a dataset learned
    uniformly well does not make every small dip an outlier)."""
    med = statistics.median(values)
    mad = 1.4826 * statistics.median(abs(v - med) for v in values)
    return med - OUTLIER_MADS * max(mad, floor)


def load(run_dir: Path) -> RunDynamics:
    header = _header(run_dir)
    rows = _train_rows(header)
    records = read_records(run_dir / DYNAMICS_FILE)
    if not records:
        raise TrainctlError(f"no per-example dynamics in {run_dir} yet — they are recorded as the job trains")
    return RunDynamics(run_dir, header.get("dataset", run_dir.name), aggregate(records, rows),
                       max(r[2] for r in records))


def runs_with_dynamics(runs_root: Path) -> list[Path]:
    """Run folders with a dynamics record, most recently written last."""
    if not runs_root.exists():
        return []
    found = [d for d in runs_root.iterdir() if (d / DYNAMICS_FILE).exists() and (d / HEADER_FILE).exists()]
    return sorted(found, key=lambda d: (d / DYNAMICS_FILE).stat().st_mtime)


def latest(runs_root: Path, dataset: str | None = None) -> RunDynamics | None:
    """The most recently written run's dynamics whose dataset is `dataset` or starts with it (any, for None)."""
    for run in reversed(runs_with_dynamics(runs_root)):
        name = _header(run).get("dataset", "")
        if dataset is None or name.startswith(dataset):
            return load(run)
    return None


def _header(run_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((run_dir / HEADER_FILE).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _train_rows(header: dict[str, Any]) -> list[dict[str, Any]]:
    path = Path(header.get("train_split", ""))
    return list(iter_jsonl(path)) if path.is_file() else []


def suspect_flags(run: RunDynamics, file: str) -> list[dict[str, Any]]:
    """One `suspect_label` flag per suspected example, with its figures and the whole example (for `flags export`)."""
    from daemon.chat.messages import last_answer, messages_of, question_and_answer, tools_of

    out = []
    for e in run.suspects():
        if not e.row:
            continue
        msgs = messages_of(e.row)
        question, golden = question_and_answer(msgs)
        last = last_answer(msgs)
        figures = {k: v for k, v in e.to_dict().items() if k in ("class", "confidence", "variability", "correctness",
                                                               "forgetting_events", "aum")}
        flag = {"step": run.steps, "file": file, "reason": "suspect_label", "loss": round(statistics.fmean(e.loss), 4),
                "matches": False, "prompt": question, "golden": golden, "output": "",
                "notes": f"confidence {e.confidence:.3f}, AUM {e.aum:.2f}, {e.cls}: the model keeps preferring "
                         "another answer; check the label",
                "example_id": e.row.get("id"), "line": e.row.get("line"), "train_index": e.index,
                "messages": [m.to_row() for m in msgs[:last]], "answer": msgs[last].to_row(), "dynamics": figures}
        tools = tools_of(e.row)
        if tools:
            flag["tools"] = tools
        out.append(flag)
    return out
