"""Per-example training dynamics of a run: what every training example's forward passes said, read
without torch.

**The record** (`data/runs/<job>/dynamics.bin`, written by daemon/training/dynamics_recorder.py):
one fixed-size little-endian record per example per training pass (`RECORD`): the example's row in
the train split, the epoch, the optimizer step it belonged to, and four figures over its trained
tokens, measured on the training forward pass before that step's update: mean loss, mean
probability of the golden token, share of golden tokens that were the argmax, and the AUM-style
margin (golden logit minus the largest other logit, averaged), with the number of trained tokens.
Records are appended per step; a torn last record (a kill mid-append) is ignored, and a resumed run
first drops the records of the steps it will redo, so no pass is counted twice. `dynamics.json`
beside it names the dataset and the fields.

**Per example** (Swayamdipta et al. 2020; Toneva et al. 2019; Pleiss et al. 2020): an epoch's
figures are the token-weighted mean of its passes (a turn its template renders on its own is a pass
too). Confidence = mean golden probability over epochs; variability = its standard deviation; AUM =
mean margin over epochs — these three over the epochs after the first when there are several
(during the first the model is still learning the task, so an example's figure says mostly how
early in the epoch it came: on SmolLM2, 2 epochs, 10% planted wrong answers, the lowest-confidence
15% held 80% of the planted over both epochs, 100% over the second). Correctness = share of epochs
in which every golden token was the argmax; forgetting events = epochs correct followed by one not
(both over every used epoch, the first included). The classes use the thresholds of
daemon/runs/snapshots.py (easy: confidence >= 0.6; hard: confidence < 0.3 and variability < 0.2;
ambiguous: the rest).

**The learning part of the run** (`learning_window`): the figures and the suspects are computed
over the whole epochs the model trained while it was learning. A run that went bad is cut before
the first divergence alert (`nan_loss`, `lr_too_high`, `exploding_gradients`; from the loss or
gradient spike that began it, if one was active) and, after a `regression` alert, at the best
checkpoint's step (from alerts.jsonl). Without such an alert it is the whole run. When fewer than
two whole epochs remain, or the model did not learn the task in them (its training loss fell by
less than a fifth and it answers fewer than half the examples right), no suspects are reported and
`suspects_note` says why, instead of a guess.

**Suspected label errors**: an example is `suspect_label` when it is a low outlier of this dataset
on both confidence and AUM: below the median minus 3 scaled median absolute deviations, each. Both
are accumulated over the used epochs after the first, so a model that memorises a wrong answer late
still carries its early refusals (`builtin:tiny`, 20 epochs of a task with 10% planted wrong
answers, memorised by the last epochs: the lowest-AUM 15% still held all of them). AUM is the
default order of `trainctl evolution`. On a task the model learns, mislabelled records sit there:
the model keeps preferring the rule's answer to theirs. When the model learned nothing, everyone is
low together and nothing is flagged. Nothing is suspected after a single epoch: its figures say
mostly how early in the epoch each example came (one epoch of the clean reverse-the-words demo on
SmolLM2 put 27 of 370 in both low tails). Not required: the `hard` class. Its fixed thresholds read
a mean over every trained token, template tokens included, so a record whose two answer words are
wrong still scores 0.6-0.7: on SmolLM2 (2 epochs, 30 planted in 300) requiring `hard` flagged none
and requiring "not easy" 3; on builtin:tiny, which memorises them (a planted answer's probability
climbs from ~0.05 to ~0.75 by the 6th epoch), they are `ambiguous`. The two outlier cuts alone
flagged 30 of 30 on both, with no false flag.
"""

from __future__ import annotations

import json
import statistics
import struct
from collections import defaultdict
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
"""How many scaled median absolute deviations below the median (confidence, AUM) an example must be
to be suspected."""
SORTS = ("aum", "confidence", "forgetting", "variability", "first_right")
BAD_ALERTS = ("nan_loss", "lr_too_high", "exploding_gradients")
"""Alerts that say the run is diverging: the learning part of the run ends before them."""
SPIKES = ("loss_spike", "grad_spike")
"""Alerts that often open a divergence: when one is active as a divergence alert fires, the cut
starts there."""
LEARNED_LOSS_DROP = 0.8
"""The run learned when the last used epoch's mean training loss is below this share of the first's
..."""
LEARNED_RIGHT = 0.5
"""... or when at least this share of the examples is answered right in it (the model knew the task
already)."""
WHOLE_EPOCH = 0.95
"""An epoch is whole when at least this share of the examples have a pass in it (several processes
may drop a last uneven batch)."""


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
    used: tuple[int, ...] | None = None
    """The epochs the figures use (those of the learning part of the run); None = every recorded
    one."""
    first_seen_step: int | None = None
    """The step of its first training pass."""
    first_right_step: int | None = None
    """The first step at which its training pass had every golden token as the argmax (None:
    never)."""

    def _settled(self, values: list[float]) -> list[float]:
        """The values of the used epochs after the first, when there are any: during the first
        epoch the model is still learning the task, and an example's figure then says mostly how
        early in the epoch it came."""
        mine = [(e, v) for e, v in zip(self.epochs, values) if self.used is None or e in self.used]
        later = [v for e, v in mine if e > 0]
        return later or [v for _, v in mine] or values

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
        """Per used epoch: every golden token was the argmax (greedy decoding would have written
        the answer)."""
        return [
            c >= 1.0 - 1e-6
            for e, c in zip(self.epochs, self.correct)
            if self.used is None or e in self.used
        ]

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
        return {
            "index": self.index,
            "example_id": self.example_id,
            "line": self.row.get("line"),
            "class": self.cls,
            "confidence": round(self.confidence, 4),
            "variability": round(self.variability, 4),
            "correctness": round(self.correctness, 4),
            "forgetting_events": self.forgetting_events,
            "aum": round(self.aum, 4),
            "suspect_label": self.suspect,
            "first_seen_step": self.first_seen_step,
            "first_right_step": self.first_right_step,
            "per_epoch": [
                {
                    "epoch": e,
                    "loss": round(lo, 4),
                    "prob": round(p, 4),
                    "correct": round(c, 4),
                    "margin": round(m, 4),
                }
                for e, lo, p, c, m in zip(
                    self.epochs, self.loss, self.prob, self.correct, self.margin
                )
            ],
        }


@dataclass
class RunDynamics:
    run_dir: Path
    dataset: str
    examples: list[ExampleDynamics]
    """Those with at least one recorded pass, in train-split order."""
    steps: int
    """The last optimizer step recorded."""
    epochs_used: list[int] = field(default_factory=list)
    """The whole epochs of the learning part of the run, which the figures use."""
    window_end: int | None = None
    """The last step of the learning part of the run when it was cut (None: the whole run)."""
    window_reason: str = ""
    """Why the run was cut there ("" when it was not)."""
    suspects_note: str = ""
    """Why no suspects are reported, when none can be ("" when they were looked for)."""

    @property
    def epochs(self) -> int:
        """Epochs with a recorded pass."""
        return max((len(e.epochs) for e in self.examples), default=0)

    def epochs_said(self) -> str:
        """Which epochs the figures use, in words."""
        if not self.epochs_used:
            return "no whole epoch yet: the figures are over the passes so far"
        later = [e + 1 for e in self.epochs_used if e > 0]
        if not later:
            return (
                f"epoch 1 of {self.epochs} only (in the first epoch an example's "
                "figures say mostly how early in the epoch it came); `first right` "
                "is the step at which its training pass was first answered right"
            )
        span = f"epoch {later[0]}" if len(later) == 1 else f"epochs {later[0]}-{later[-1]}"
        said = (
            f"{span} of {self.epochs} (the first is left "
            "out: the model is still learning the task then)"
        )
        if len(later) == 1:
            said += "; variability needs two such epochs, so it is 0"
        if self.window_end is not None:
            said += f"; the run is used up to step {self.window_end}: {self.window_reason}"
        return said

    def classes(self) -> dict[str, int]:
        return count_classes(self.examples)

    def suspects(self) -> list[ExampleDynamics]:
        return [e for e in self.examples if e.suspect]

    def sorted(self, by: str = "aum") -> list[ExampleDynamics]:
        """Most worth a look first: lowest AUM or confidence, most forgetting events, highest
        variability, latest first answered right (never first, and of those the latest seen: wrong
        when the model knew the task)."""
        if by not in SORTS:
            raise TrainctlError(f"unknown sort {by!r} — use one of {', '.join(SORTS)}")
        never = 1 << 30
        key = {
            "confidence": lambda e: (e.confidence, e.aum),
            "aum": lambda e: (e.aum, e.confidence),
            "forgetting": lambda e: (-e.forgetting_events, e.confidence),
            "variability": lambda e: (-e.variability, e.confidence),
            "first_right": lambda e: (
                -(e.first_right_step if e.first_right_step is not None else never),
                -(e.first_seen_step or 0),
            ),
        }[by]
        return sorted(self.examples, key=key)


def aggregate(
    records: list[tuple],
    rows: list[dict[str, Any]] | None = None,
    used: tuple[int, ...] | None = None,
    suspects: bool = True,
) -> list[ExampleDynamics]:
    """Records -> per example, per epoch (token-weighted over an epoch's passes), figures over the
    `used` epochs (None: all), suspects marked when `suspects`."""
    acc: dict[int, dict[int, list[float]]] = {}
    seen: dict[int, int] = {}
    right: dict[int, int] = {}
    for ex, epoch, step, loss, prob, correct, margin, tokens in records:
        seen[ex] = min(seen.get(ex, step), step)
        if correct >= 1.0 - 1e-6:
            right[ex] = min(right.get(ex, step), step)
        a = acc.setdefault(ex, {}).setdefault(epoch, [0.0, 0.0, 0.0, 0.0, 0.0])
        w = max(1, tokens)
        a[0] += loss * w
        a[1] += prob * w
        a[2] += correct * w
        a[3] += margin * w
        a[4] += w
    out = []
    for ex in sorted(acc):
        d = ExampleDynamics(
            ex,
            (rows[ex] if rows and ex < len(rows) else {}),
            used=used,
            first_seen_step=seen.get(ex),
            first_right_step=right.get(ex),
        )
        for epoch in sorted(acc[ex]):
            s = acc[ex][epoch]
            d.epochs.append(epoch)
            d.loss.append(s[0] / s[4])
            d.prob.append(s[1] / s[4])
            d.correct.append(s[2] / s[4])
            d.margin.append(s[3] / s[4])
        out.append(d)
    if suspects:
        mark_suspects(out)
    return out


def mark_suspects(examples: list[ExampleDynamics]) -> None:
    """See the module docstring: a low outlier in confidence and in AUM, from two epochs on."""
    if len(examples) < 10 or not any(
        e > 0 and (x.used is None or e in x.used) for x in examples for e in x.epochs
    ):
        return
    conf_cut = _low_outlier([e.confidence for e in examples], 0.02)
    aum_cut = _low_outlier([e.aum for e in examples], 0.1)
    for e in examples:
        e.suspect = e.confidence < conf_cut and e.aum < aum_cut


def _low_outlier(values: list[float], floor: float) -> float:
    """Median - OUTLIER_MADS x the scaled median absolute deviation (at least `floor`, so that a
    dataset learned uniformly well does not make every small dip an outlier)."""
    med = statistics.median(values)
    mad = 1.4826 * statistics.median(abs(v - med) for v in values)
    return med - OUTLIER_MADS * max(mad, floor)


def learning_window(alerts: list[dict[str, Any]]) -> tuple[int | None, str]:
    """(the last step of the learning part of the run, why it ends there) from alerts.jsonl's
    lines; (None, "") when no alert says the run went bad. See the module docstring."""
    end: int | None = None
    why = ""
    spike_since: dict[str, int] = {}
    for a in alerts:
        kind, step = a.get("id"), a.get("step")
        if not isinstance(step, int):
            continue
        if kind in SPIKES:
            if a.get("event") == "fired":
                spike_since[kind] = step
            else:
                spike_since.pop(kind, None)
            continue
        if a.get("event") != "fired":
            continue
        cut: int | None = None
        if kind in BAD_ALERTS:
            start = min([step, *spike_since.values()])
            cut, said = (
                start - 1,
                f"the run went bad at step {start} ({kind} fired at step {step})",
            )
        elif kind == "regression" and isinstance(a.get("best_step"), int):
            cut, said = (
                a["best_step"],
                (
                    "exact match regressed after the best checkpoint (step "
                    f"{a['best_step']}; regression alert at step {step})"
                ),
            )
        if cut is not None and (end is None or cut < end):
            end, why = cut, said
    return end, why


def _whole_epochs(records: list[tuple], end: int | None, examples: int) -> list[int]:
    """The epochs whose passes all lie at or before `end` (any, for None) and cover nearly every
    example."""
    last_step: dict[int, int] = {}
    members: dict[int, set[int]] = defaultdict(set)
    for r in records:
        last_step[r[1]] = max(last_step.get(r[1], 0), r[2])
        members[r[1]].add(r[0])
    need = WHOLE_EPOCH * (examples or max((len(m) for m in members.values()), default=0))
    return sorted(
        e for e in last_step if (end is None or last_step[e] <= end) and len(members[e]) >= need
    )


def _learned(examples: list[ExampleDynamics], first: int, last: int) -> tuple[bool, str]:
    """Whether the model learned the task over epochs `first`..`last`: its mean training loss fell
    by a fifth, or it answers most examples right in the last (a model that knew the task already);
    and the figures, in words."""

    def mean_of(epoch: int, values: Any) -> float:
        found = [v for e in examples for ep, v in zip(e.epochs, values(e)) if ep == epoch]
        return statistics.fmean(found) if found else 0.0

    before, after = mean_of(first, lambda e: e.loss), mean_of(last, lambda e: e.loss)
    right = mean_of(last, lambda e: [c >= 1.0 - 1e-6 for c in e.correct])
    said = (
        f"mean training loss {before:.3f} -> {after:.3f}, "
        f"{right:.0%} answered right in epoch {last + 1}"
    )
    return after < LEARNED_LOSS_DROP * before or right >= LEARNED_RIGHT, said


def load(run_dir: Path) -> RunDynamics:
    header = _header(run_dir)
    rows = _train_rows(header)
    records = read_records(run_dir / DYNAMICS_FILE)
    if not records:
        raise TrainctlError(
            f"no per-example dynamics in {run_dir} yet — they are recorded as the job trains"
        )
    end, why = learning_window(_alerts(run_dir))
    used = _whole_epochs(records, end, int(header.get("examples") or 0))
    note = ""
    if len(used) < 2:
        note = (
            f"{why}; before that it trained {len(used)} "
            "whole epoch(s), and suspected labels need two"
            if why
            else "suspected labels need two or more whole epochs: in the first an example's "
            "figures say mostly how early in the epoch it came"
        )
    examples = aggregate(records, rows, tuple(used) if used else None, suspects=False)
    if not note:
        learned, said = _learned(examples, used[0], used[-1])
        if not learned:
            note = (
                f"the model did not learn the task over epochs {used[0] + 1}-{used[-1] + 1} "
                f"({said}): low figures say nothing about the labels then"
            )
        else:
            mark_suspects(examples)
    return RunDynamics(
        run_dir,
        header.get("dataset", run_dir.name),
        examples,
        max(r[2] for r in records),
        epochs_used=used,
        window_end=end,
        window_reason=why,
        suspects_note=note,
    )


def _alerts(run_dir: Path) -> list[dict[str, Any]]:
    try:
        return list(iter_jsonl(run_dir / "alerts.jsonl"))
    except (OSError, ValueError):
        return []


def runs_with_dynamics(runs_root: Path) -> list[Path]:
    """Run folders with a dynamics record, most recently written last."""
    if not runs_root.exists():
        return []
    found = [
        d
        for d in runs_root.iterdir()
        if (d / DYNAMICS_FILE).exists() and (d / HEADER_FILE).exists()
    ]
    return sorted(found, key=lambda d: (d / DYNAMICS_FILE).stat().st_mtime)


def latest(runs_root: Path, dataset: str | None = None) -> RunDynamics | None:
    """The most recently written run's dynamics whose dataset is `dataset` or starts with it (any,
    for None)."""
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
    """One `suspect_label` flag per suspected example, with its figures and the whole example (for
    `flags export`)."""
    from daemon.chat.messages import last_answer, messages_of, question_and_answer, tools_of

    out = []
    for e in run.suspects():
        if not e.row:
            continue
        msgs = messages_of(e.row)
        question, golden = question_and_answer(msgs)
        last = last_answer(msgs)
        figures = {
            k: v
            for k, v in e.to_dict().items()
            if k
            in ("class", "confidence", "variability", "correctness", "forgetting_events", "aum")
        }
        flag = {
            "step": run.steps,
            "file": file,
            "reason": "suspect_label",
            "loss": round(statistics.fmean(e.loss), 4),
            "matches": False,
            "prompt": question,
            "golden": golden,
            "output": "",
            "notes": f"confidence {e.confidence:.3f}, AUM {e.aum:.2f}, {e.cls}: the model keeps "
            "preferring another answer; check the label",
            "example_id": e.row.get("id"),
            "line": e.row.get("line"),
            "train_index": e.index,
            "messages": [m.to_row() for m in msgs[:last]],
            "answer": msgs[last].to_row(),
            "dynamics": figures,
        }
        tools = tools_of(e.row)
        if tools:
            flag["tools"] = tools
        out.append(flag)
    return out
