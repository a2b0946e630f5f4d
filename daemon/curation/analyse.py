"""Per-record curation work that needs no other record: parse, recognise, validate, length,
quality, MinHash.

`Analyser.chunk(items)` turns a chunk of raw lines into outcomes: `Rejected` (final) or `Candidate`
(left for the curator's in-order decisions: exact duplicate, quality verdict, near duplicate).
Outcomes carry their output rows already serialised, so that chunks can be analysed in worker
processes (the curator forks a pool on large files) and the parent only decides and writes.
"""

from __future__ import annotations

import gc
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

import orjson

from daemon.chat.formats import Example, FormatError, normalise
from daemon.chat.messages import Message, text_bytes
from daemon.chat.render import Lengths, exchange_starts, measure_lengths, shortened, trains_on
from daemon.config import CurationConfig, TrainConfig
from daemon.curation import validate
from daemon.curation.neardup import NearDupIndex, shingles
from daemon.curation.quality import Quality, QualityScorer
from daemon.models.max_length import round_up

Item = tuple[int, Any]
"""(line number, raw bytes of a JSONL line | an already parsed element of a JSON array)."""


class Rejected(NamedTuple):
    line: int
    row: bytes
    """The rejected.jsonl line (JSON, no newline)."""
    reason: str
    detail: str | None
    domain: str
    score: float | None


class Candidate(NamedTuple):
    line: int
    key: bytes
    """Exact-duplicate key: 16 bytes of the sha256 of the normalised conversation."""
    quality_reject: Rejected | None
    """The low_quality / low_diversity verdict, applied only if the record is not an exact
    duplicate."""
    words: str
    """Normalised text (lower-cased words) for the exact Jaccard check."""
    row: bytes
    """The train/val/test line (JSON, no newline)."""
    chars: int
    ident: str
    split_key: str
    split: str
    """train / val / test, from split_key (a near-duplicate cluster's records take their root's
    instead)."""
    sig: Any
    """rensa MinHash of the word 3-gram shingles."""
    tools_key: bytes
    """Hash of the record's tool definitions (b"" without): only records with the same tools are
    near duplicates."""
    keep_bound: int
    """`Analyser.length_bound` (0 without a tokenizer): with max_length "auto" the curator
    re-checks the records whose bound reaches the chosen length."""


@contextmanager
def gc_paused() -> Iterator[None]:
    """Cyclic garbage collection off for the block (a chunk of records in a worker; the curator's
    whole run).

    A chunk allocates some 30 containers a record (parsed JSON, messages, word lists) and builds no
    reference cycles; left on, the collector keeps re-scanning the chunk's survivors and the
    curator's growing dedup index. Refcounting frees everything as usual; whatever a plugin scorer
    leaves in a cycle is collected once the collector is back on: between chunks in a worker, after
    the run in the curator's process."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()


def split_of(key: str, cfg: CurationConfig) -> str:
    """Deterministic split from a hash: the same content lands in the same split on every run."""
    h = hashlib.sha256(f"{cfg.seed}:{key}".encode()).digest()
    u = int.from_bytes(h[:8], "big") / 2**64
    if u < cfg.val_fraction:
        return "val"
    if u < cfg.val_fraction + cfg.test_fraction:
        return "test"
    return "train"


def content_hash(turns: list[tuple[str, list[str]]]) -> str:
    """Hash of the normalised conversation, given as (role, lower-cased words) per turn: case- and
    whitespace-insensitive, the exact-duplicate key."""
    norm = "\x1e".join(f"{role}\x1f{' '.join(words)}" for role, words in turns)
    return hashlib.sha256(norm.encode("utf-8")).hexdigest()


def rejected_row(
    obj: Any,
    text: str,
    line: int,
    reason: str,
    details: dict[str, Any],
    quality: Quality | None = None,
) -> Rejected:
    # Keep the record's own fields (Alpaca rows stay Alpaca-shaped); unparsable lines keep their
    # raw text.
    row = dict(obj) if isinstance(obj, dict) else {"raw": text}
    row["line"] = line
    row["rejection_reason"] = reason
    score = None
    if quality is not None:
        score = row["quality_score"] = quality.score
        details = {"threshold": quality.threshold, **quality.components, **details}
    row["rejection_details"] = details
    domain = row.get("domain", "default")
    return Rejected(
        line,
        orjson.dumps(row, default=str),
        reason,
        details.get("detail"),
        domain if isinstance(domain, str) else str(domain),
        score,
    )


def no_trainable_tokens(raw: Any, line: int, n: Lengths, limit: int) -> Rejected:
    """The rejection of a record that keeps no trained token at max_length `limit`; `keeps_at` is
    the max_length that keeps its last exchange whole (the system turn, the tools, the last prompt
    and answer)."""
    return rejected_row(
        raw,
        "",
        line,
        "validation_failed",
        {
            "detail": "no_trainable_tokens",
            "tokens": n.whole,
            "max_length": limit,
            "keeps_at": round_up(n.last_exchange),
            "error": f"no trained token is left at max_length {limit}, even with the oldest turns "
            f"left out; max_length {round_up(n.last_exchange)} keeps its last exchange whole",
        },
    )


def _ident(ex: Example) -> str:
    """How a record is named in another record's rejection: its `id`, else its line."""
    rid = ex.meta.get("id")
    return (
        str(rid)
        if isinstance(rid, (str, int)) and not isinstance(rid, bool)
        else f"line {ex.line}"
    )


class Analyser:
    """The per-record checks, configured once (in the parent, inherited by forked workers)."""

    def __init__(
        self, cfg: CurationConfig, train_cfg: TrainConfig, tokenizer: Any, quality: QualityScorer
    ):
        self.cfg = cfg
        self.train_cfg = train_cfg
        self.tok = tokenizer
        self.quality = quality
        self._overheads: dict[tuple[str, ...], int] = {}
        self.limit = train_cfg.max_length if isinstance(train_cfg.max_length, int) else 1 << 30
        """The length the checks hold records to: train.max_length, or the ceiling when it is
        "auto"."""
        self.auto = tokenizer is not None and not isinstance(train_cfg.max_length, int)

    def chunk(self, items: list[Item]) -> tuple[list[Rejected | Candidate], int]:
        """Outcomes in input order (one per item), and how many records needed exact
        tokenisation."""
        with gc_paused():
            parsed = [self._parse(line, payload) for line, payload in items]
            bounds = [0] * len(parsed)
            tokenised = self._check_lengths(parsed, bounds)
            out: list[Rejected | Candidate] = []
            for p, bound in zip(parsed, bounds):
                out.append(p if isinstance(p, Rejected) else self._finish(p[0], p[2], bound))
            return out, tokenised

    def _parse(self, line: int, payload: Any) -> Rejected | tuple[int, Any, Example]:
        text = ""
        if isinstance(payload, bytes):
            try:
                text = payload.decode("utf-8")
            except UnicodeDecodeError as exc:
                return rejected_row(
                    None,
                    payload.decode("utf-8", "replace").rstrip("\n")[:2000],
                    line,
                    "validation_failed",
                    {
                        "detail": "not_utf8",
                        "error": f"invalid UTF-8 byte at column {exc.start + 1}",
                    },
                )
            try:
                obj = orjson.loads(payload)
            except orjson.JSONDecodeError as exc:
                return rejected_row(
                    None, text.rstrip("\n")[:2000], line, "invalid_json", {"error": str(exc)}
                )
        else:
            obj = payload
        try:
            ex = normalise(obj, line)
        except FormatError as exc:
            return rejected_row(
                obj, text, line, "validation_failed", {"detail": exc.detail, "error": str(exc)}
            )
        if ex is None:
            keys = sorted(obj)[:8] if isinstance(obj, dict) else type(obj).__name__
            return rejected_row(
                obj,
                text,
                line,
                "unknown_format",
                {"error": f"no known format has these fields: {keys}"},
            )
        problem = validate.check(ex)
        if problem:
            return rejected_row(
                obj, text, line, "validation_failed", {"detail": problem[0], "error": problem[1]}
            )
        return line, payload, ex

    def _check_lengths(self, parsed: list[Any], bounds: list[int]) -> int:
        """too_long / no_trainable_tokens, in place; returns how many records were tokenised.

        A token covers at least one byte (byte-level BPE, SentencePiece with byte fallback), so
        byte counts bound token counts: a record whose rendered size fits the limit cannot be too
        long, and one whose prompt (up to the first trained turn, in its whole or its shortest
        form: see `encode_messages`) fits keeps a trained token. Only records these bounds cannot
        settle are tokenised, in one batch for the chunk. The limit is train.max_length, or with
        "auto" the ceiling (the curator settles the chosen length at the end). `bounds[i]` receives
        record i's bound (`length_bound`), which the automatic length reads again."""
        if self.tok is None:
            return 0
        limit = self.limit
        reject_long = self.cfg.on_too_long == "reject"
        unsure = []
        for i, p in enumerate(parsed):
            if isinstance(p, Rejected):
                continue
            bounds[i] = bound = self.length_bound(p[2].messages, p[2].tools)
            if bound > limit or (bound == limit and not reject_long):
                unsure.append(i)
        if not unsure:
            return 0
        lengths = measure_lengths(
            self.tok,
            [(parsed[i][2].messages, parsed[i][2].tools) for i in unsure],
            self.train_cfg.loss_on,
        )
        for i, n in zip(unsure, lengths):
            line, payload, ex = parsed[i]
            if n.whole > limit and reject_long:
                parsed[i] = rejected_row(
                    ex.raw,
                    "",
                    line,
                    "validation_failed",
                    {
                        "detail": "too_long",
                        "tokens": n.whole,
                        "max_length": limit,
                        "keeps_at": round_up(n.whole),
                    },
                )
            elif not reject_long and not n.keeps_trained_token(limit):
                parsed[i] = no_trainable_tokens(ex.raw, line, n, limit)
        return len(unsure)

    def length_bound(self, msgs: list[Message], tools: list[dict[str, Any]] | None) -> int:
        """The bound the length check reads: `whole_bound` with on_too_long = "reject", else
        `keep_bound`."""
        if self.cfg.on_too_long == "reject":
            return self.whole_bound(msgs, tools)
        return self.keep_bound(msgs, tools)

    def whole_bound(self, msgs: list[Message], tools: list[dict[str, Any]] | None) -> int:
        """An upper bound on the conversation's tokens."""
        return text_bytes(msgs, tools) + self._overhead(tuple(m.role for m in msgs))

    def keep_bound(self, msgs: list[Message], tools: list[dict[str, Any]] | None) -> int:
        """An upper bound on the tokens before the first trained one, in the conversation's whole
        or shortest form (whichever is less): below max_length, the record surely keeps a trained
        token. The shortest form is looked at only when the whole one's bound does not settle it
        (below `self.limit`)."""
        loss_on = self.train_cfg.loss_on
        bound = 1 << 30
        for form in self._forms(msgs):
            k = next((j for j, m in enumerate(form) if trains_on(m, loss_on)), len(form))
            prompt = form[: k + 1]  # the first trained turn's role marker counts too
            bound = min(
                bound, text_bytes(form[:k], tools) + self._overhead(tuple(m.role for m in prompt))
            )
            if bound < self.limit:
                break
        return bound

    @staticmethod
    def _forms(msgs: list[Message]) -> Iterator[list[Message]]:
        """The conversation whole, then (when it has several exchanges) its shortest form."""
        yield msgs
        head, starts = exchange_starts(msgs)
        if starts:
            yield shortened(msgs, head, starts[-1])

    def _overhead(self, roles: tuple[str, ...]) -> int:
        """Bytes the chat template adds around the contents for this sequence of roles (+ a safety
        margin)."""
        if roles not in self._overheads:
            try:
                rendered = self.tok.apply_chat_template(
                    [{"role": r, "content": ""} for r in roles], tokenize=False
                )
                self._overheads[roles] = len(rendered.encode("utf-8")) + 8
            except Exception:  # a template that rejects this shape: always tokenise exactly
                self._overheads[roles] = 1 << 30
        return self._overheads[roles]

    def _finish(self, line: int, ex: Example, bound: int) -> Candidate:
        turns = [(m.role, _words(m)) for m in ex.messages]
        tools_key = b""
        if ex.tools:  # two conversations that differ only in their tools are different examples
            canonical = orjson.dumps(ex.tools, option=orjson.OPT_SORT_KEYS)
            tools_key = hashlib.sha256(canonical).digest()[:16]
        key = content_hash(turns + ([("tools", [tools_key.hex()])] if tools_key else []))
        answer = ex.answer_message
        # The answer's prose words (reasoning and text, not the calls): its turn's words when it
        # makes no call.
        q = self.quality.score(
            ex,
            answer.prose.lower().split()
            if answer.tool_calls
            else next(ws for role, ws in reversed(turns) if role == "assistant"),
        )
        verdict = None
        if not ex.meta.get("quality_override"):
            if q.components.get("diversity", 1.0) < self.cfg.min_diversity:
                verdict = rejected_row(
                    ex.raw, "", line, "low_diversity", {"min_diversity": self.cfg.min_diversity}, q
                )
            elif q.score < q.threshold:
                verdict = rejected_row(ex.raw, "", line, "low_quality", {}, q)
        words = [w for _, ws in turns for w in ws]
        row = ex.to_record()
        row["quality_score"] = q.score
        return Candidate(
            line,
            bytes.fromhex(key[:32]),
            verdict,
            " ".join(words),
            orjson.dumps(row, default=str),
            sum(len(m.content) + len(m.reasoning) for m in ex.messages),
            _ident(ex),
            key,
            split_of(key, self.cfg),
            NearDupIndex.signature(shingles(words)),
            tools_key,
            bound,
        )


def _words(m: Message) -> list[str]:
    """A turn's lower-cased words for the duplicate keys: reasoning, text, and its calls (arguments
    key-sorted)."""
    text = f"{m.reasoning} {m.content}" if m.reasoning else m.content
    for c in m.tool_calls:
        text += (
            " "
            + orjson.dumps(
                {"name": c.name, "arguments": c.arguments},
                option=orjson.OPT_SORT_KEYS,
                default=str,
            ).decode()
        )
    return text.lower().split()


# -- worker-process plumbing: the analyser is handed to forked workers through this global
# ------------------------
_WORKER: Analyser | None = None


def set_worker_analyser(a: Analyser | None) -> None:
    global _WORKER
    _WORKER = a


def analyse_in_worker(items: list[Item]) -> tuple[list[Rejected | Candidate], int]:
    assert _WORKER is not None, "set_worker_analyser() before forking the pool"
    return _WORKER.chunk(items)
