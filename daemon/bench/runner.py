"""`trainctl bench run`: stream a prompt file through a backend, appending each answer to
results.jsonl the moment it finishes, so that a kill at any instant loses only the requests in
flight.

Read top to bottom: open (fingerprint, lock, resume bookkeeping) → load the backend → stream the
prompts that have no result yet → write each completion → close (state, progress). results.jsonl is
the truth: on resume its torn last line is cut, its custom_ids are skipped, and a run only ever
appends, so every prompt ends with exactly one result line.
"""

from __future__ import annotations

import fcntl
import hashlib
import itertools
import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemon.atomic import JsonlAppender, iter_jsonl, repair_torn_tail, write_bytes_atomic
from daemon.bench.backends import Backend, Completion, Request
from daemon.bench.engines import one_line, plan_max_model_len, vllm_unusable
from daemon.bench.prompts import BenchPrompt, iter_prompts, scan_prompt_file
from daemon.bench.state import (
    BenchState,
    Progress,
    RunInfo,
    fingerprint_changes,
    load_run,
    results_files,
    shard_of,
)
from daemon.chat.answers import openai_message
from daemon.chat.messages import message_from_row
from daemon.chat.render import prompt_text
from daemon.config import BenchConfig
from daemon.errors import BenchError
from daemon.hashing import update_from_file
from daemon.home import Home
from daemon.models.max_length import model_context


@dataclass
class BenchSpec:
    """One `bench run` as asked (resolved from flags, trainctl.toml, a job or the stored run)."""

    name: str
    model: str
    prompts: Path
    adapter: Path | None
    cfg: BenchConfig
    job_id: int | None = None
    limit: int | None = None
    """Answer only the first `limit` prompts of the file (`--limit`: try 100 first); a later run of
    the same line without it answers the rest."""


@dataclass
class Outcome:
    info: RunInfo
    results: Path
    written: int
    """Result lines written by this session."""
    skipped: int
    """Prompts that already had a result from an earlier session."""
    repaired_bytes: int


class Stop(Exception):
    """A second SIGINT/SIGTERM: leave now, abandoning the requests in flight (they are redone on
    resume)."""


def prompt_ids(
    tok: Any, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
) -> list[int]:
    """The chat rendered as in training (daemon.chat.render: the model's template with the tools,
    or the fallback) with the generation prompt, as token ids (what both backends take)."""
    text = prompt_text(tok, [message_from_row(m) for m in messages], tools)
    return list(tok(text, add_special_tokens=False)["input_ids"])


def request_seed(run_seed: int, custom_id: str) -> int:
    """The per-request sampling seed: the same for a request whatever session or batch it runs
    in."""
    return (
        int.from_bytes(hashlib.sha256(f"{run_seed}:{custom_id}".encode()).digest()[:4], "big")
        & 0x7FFFFFFF
    )


def adapter_sha256(adapter: Path | None) -> str | None:
    if adapter is None:
        return None
    digest = hashlib.sha256()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        f = adapter / name
        if not f.exists():
            raise BenchError(
                f"{adapter} has no {name} — point --adapter at a saved LoRA adapter folder"
            )
        update_from_file(digest, f)
    return digest.hexdigest()


def fingerprint(spec: BenchSpec, prompts_sha256: str) -> dict[str, Any]:
    c = spec.cfg
    return {
        "model": spec.model,
        "adapter": str(spec.adapter) if spec.adapter else None,
        "adapter_sha256": adapter_sha256(spec.adapter),
        "prompts_sha256": prompts_sha256,
        "backend": c.backend,
        "max_tokens": c.max_tokens,
        "temperature": c.temperature,
        "top_p": c.top_p,
        "seed": c.seed,
    }


def check_resume(
    name: str,
    existing: RunInfo | None,
    resume: bool,
    fp: dict[str, Any],
    log: Callable[[str], None],
) -> None:
    """Refuse to resume a run that does not exist, or to continue one with another model, adapter,
    prompt file or sampling setting (naming what changed). The same command line run again on an
    existing run with the same settings continues it, saying so: after a crash, a user re-runs the
    line they ran."""
    if not existing and resume:
        raise BenchError(
            f"there is no bench run {name!r} to resume — drop --resume "
            "to start it (`trainctl bench list` shows the runs)"
        )
    changes = fingerprint_changes(existing.fingerprint, fp) if existing else []
    if changes and not resume:
        raise BenchError(
            f"bench run {name!r} already exists with other settings: "
            + "; ".join(changes)
            + " — run it with its own settings, or choose another --name"
        )
    if changes:
        raise BenchError(
            f"bench run {name!r} cannot resume: "
            + "; ".join(changes)
            + " — resume with the original settings, or start a new run with another --name"
        )
    if existing and not resume:
        log(
            f"bench run {name!r} exists with the same settings ({existing.shown_state}, "
            f"{existing.progress.done}/{existing.total}): continuing it"
        )


# ---------------------------------------------------------------- results.jsonl


def scan_results(path: Path) -> tuple[set[str], set[str], Progress]:
    """(answered ids, errored ids, token totals) of an existing results file."""
    ok: set[str] = set()
    bad: set[str] = set()
    prog = Progress()
    for row in iter_jsonl(path):
        cid = row["custom_id"]
        if row.get("error"):
            bad.add(cid)
        else:
            ok.add(cid)
            usage = row["response"]["body"]["usage"]
            prog.prompt_tokens += usage["prompt_tokens"]
            prog.completion_tokens += usage["completion_tokens"]
    prog.done, prog.errors = len(ok) + len(bad), len(bad)
    return ok, bad, prog


def drop_error_lines(path: Path) -> int:
    """Rewrite results.jsonl without its error lines (atomically), so that retried prompts still
    end with one line each. Returns how many were dropped."""
    kept, dropped = [], 0
    with open(path, "rb") as fh:
        for raw in fh:
            if raw.strip() and json.loads(raw).get("error"):
                dropped += 1
            elif raw.strip():
                kept.append(raw)
    write_bytes_atomic(path, b"".join(kept))
    return dropped


def result_row(
    run: str, model: str, prompt: BenchPrompt, c: Completion | None, error: str | None
) -> dict[str, Any]:
    """One line of results.jsonl: the OpenAI batch output shape, plus timing, the prompt's line,
    reference and metadata."""
    rid = hashlib.sha256(f"{run}:{prompt.custom_id}".encode()).hexdigest()[:24]
    row: dict[str, Any] = {
        "id": f"batch_req_{rid}",
        "custom_id": prompt.custom_id,
        "response": None,
        "error": None,
    }
    if error is None and c is not None:
        created = int(c.finished_at)
        message = openai_message(c.text, f"call_{rid}")
        row["response"] = {
            "status_code": 200,
            "request_id": f"req_{rid}",
            "body": {
                "id": f"chatcmpl-{rid}",
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "finish_reason": "tool_calls"
                        if "tool_calls" in message and c.finish_reason == "stop"
                        else c.finish_reason,
                    }
                ],
                "usage": {
                    "prompt_tokens": c.prompt_tokens,
                    "completion_tokens": c.completion_tokens,
                    "total_tokens": c.prompt_tokens + c.completion_tokens,
                },
            },
        }
    else:
        code, _, detail = (error or "error").partition(": ")
        row["error"] = {"code": code, "message": detail or code}
    if c is not None:
        latency = max(c.finished_at - c.started_at, 1e-9)
        row["timing"] = {
            "started_at": round(c.started_at, 3),
            "finished_at": round(c.finished_at, 3),
            "latency_s": round(latency, 4),
            "output_tokens_per_s": round(c.completion_tokens / latency, 2),
        }
    row["line"] = prompt.line
    if prompt.reference is not None:
        row["reference"] = prompt.reference
    if prompt.metadata:
        row["metadata"] = prompt.metadata
    return row


# ---------------------------------------------------------------- the run


class BenchRunner:
    def __init__(
        self,
        home: Home,
        spec: BenchSpec,
        resume: bool = False,
        retry_errors: bool = False,
        on_progress: Callable[[RunInfo], None] | None = None,
        log: Callable[[str], None] = print,
        shard: tuple[int, int] | None = None,
    ):
        """`shard`: (rank, ranks) of a data-parallel run (daemon/bench/shards.py): this runner
        answers the prompts whose custom_id hashes to `rank`, into results.rank-R.jsonl, with its
        own run.rank-R.json."""
        self.home, self.spec, self.resume, self.retry_errors = home, spec, resume, retry_errors
        self.on_progress = on_progress or (lambda info: None)
        self.log = log
        self.shard = shard
        self.dir = home.bench_dir(spec.name)
        suffix = f".rank-{shard[0]}" if shard else ""
        self.results = self.dir / f"results{suffix}.jsonl"
        self.run_json = self.dir / f"run{suffix}.json"
        self._lock_name = f".lock{suffix}"
        self.stop_requested = False
        self._lock_fh: Any = None

    # -- open: fingerprint, lock, what is already done
    def _lock(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock_fh = open(self.dir / self._lock_name, "w")
        try:
            fcntl.flock(self._lock_fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            info = load_run(self.dir)
            pid = f" (pid {info.pid})" if info and info.pid else ""
            raise BenchError(
                f"bench run {self.spec.name!r} is already running{pid} — wait for it or stop it"
            ) from None

    def mine(self, custom_id: str) -> bool:
        return self.shard is None or shard_of(custom_id, self.shard[1]) == self.shard[0]

    def open(self) -> tuple[RunInfo, set[str], int]:
        existing = load_run(self.dir, self.run_json.name)
        scan = scan_prompt_file(self.spec.prompts)
        fp = fingerprint(self.spec, scan.sha256)
        check_resume(self.spec.name, existing, self.resume, fp, self.log)
        self._lock()
        repaired = repair_torn_tail(self.results)
        if repaired:
            self.log(
                f"cut a torn last line ({repaired} bytes) from "
                f"{self.results.name}: that prompt is redone"
            )
        ok, bad, prog = scan_results(self.results)
        if self.retry_errors and bad:
            drop_error_lines(self.results)
            self.log(f"retrying {len(bad)} prompt(s) that ended in an error")
            prog.done -= len(bad)
            prog.errors = 0
            bad = set()
        limit = self.spec.limit
        total = min(scan.total, limit) if limit else scan.total
        others = [f for f in results_files(self.dir) if f != self.results]
        for f in others:
            # Answers in the other ranks' files (of this session's ranks or, after a change of
            # data_parallel_size, of earlier sessions) are never redone: every prompt keeps exactly
            # one answer
            other_ok, other_bad, _ = scan_results(f)
            ok, bad = ok | other_ok, bad | other_bad
        if self.shard is not None or limit:
            wanted = {p.custom_id for p in self.prompts() if self.mine(p.custom_id)}
            total = len(wanted)
            prog.done = len((ok | bad) & wanted)
            prog.errors = len(bad & wanted)
        elif others:
            prog.done, prog.errors = len(ok | bad), len(bad)
        info = existing or RunInfo(
            name=self.spec.name,
            fingerprint=fp,
            prompts_path=str(self.spec.prompts),
            total=total,
            job_id=self.spec.job_id,
        )
        info.total = total
        info.limit = limit
        info.prompts_path = str(self.spec.prompts)
        prog.active_seconds = info.progress.active_seconds
        info.progress = prog
        return info, ok | bad, repaired

    def prompts(self) -> Iterator[BenchPrompt]:
        """The prompts this run answers: the file's, or its first `limit`."""
        return itertools.islice(iter_prompts(self.spec.prompts), self.spec.limit or None)

    # -- the prompt stream: skip what has a result, render the rest
    def _requests(
        self,
        tok: Any,
        pending: dict[str, BenchPrompt],
        writer: JsonlAppender,
        done: set[str],
        info: RunInfo,
    ) -> Iterator[Request]:
        c = self.spec.cfg
        max_pos = _max_positions(tok)
        for p in self.prompts():
            if self.stop_requested:
                return
            if p.custom_id in done or not self.mine(p.custom_id):
                continue
            error = p.error
            ids: list[int] = []
            max_tokens = p.max_tokens or c.max_tokens
            if error is None:
                ids = prompt_ids(tok, p.messages, p.tools)
                if max_pos and len(ids) + max_tokens > max_pos:
                    error = (
                        f"prompt_too_long: {len(ids)} prompt tokens + max_tokens "
                        f"{max_tokens} exceed the model's {max_pos} positions"
                    )
            if error is not None:
                self._record(writer, info, p, None, error)
                continue
            pending[p.custom_id] = p
            yield Request(
                p.custom_id,
                ids,
                max_tokens,
                c.temperature if p.temperature is None else p.temperature,
                c.top_p if p.top_p is None else p.top_p,
                request_seed(c.seed, p.custom_id),
            )

    def _record(
        self,
        writer: JsonlAppender,
        info: RunInfo,
        p: BenchPrompt,
        c: Completion | None,
        error: str | None,
    ) -> None:
        writer.write(result_row(self.spec.name, self.spec.model, p, c, error))
        prog = info.progress
        prog.done += 1
        if error is not None:
            prog.errors += 1
        elif c is not None:
            prog.prompt_tokens += c.prompt_tokens
            prog.completion_tokens += c.completion_tokens
        self.written += 1

    def _record_engine(self, info: RunInfo, backend: Backend) -> None:
        """Which engine answered (each session's; a run resumed on another engine says so)."""
        engine = {"backend": backend.name, "version": backend.version}
        if info.engine and info.engine != engine:
            self.log(
                f"this session answers with {backend.name} {backend.version}; earlier "
                f"sessions used {info.engine['backend']} {info.engine['version']}"
            )
        info.engine = engine
        info.save(self.run_json)

    def _signals(self) -> Callable[[], None]:
        def handler(signum: int, frame: Any) -> None:
            if self.stop_requested:
                raise Stop()
            self.stop_requested = True
            self.log(
                f"{signal.Signals(signum).name}: finishing the requests in flight, then "
                "stopping (send it again to abandon them; they are redone on resume)"
            )

        old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}

        def restore() -> None:
            for s, h in old.items():
                signal.signal(s, h)

        return restore

    def run(self, load_backend: Callable[[BenchSpec], tuple[Backend, Any]]) -> Outcome:
        """`load_backend(spec) -> (backend, tokenizer)`; kept as an argument so tests can give a
        stand-in."""
        info, done, repaired = self.open()
        skipped = len(done)
        self.written = 0
        restore = self._signals()
        # a power cut loses at most that long
        writer = JsonlAppender(self.results, self.spec.cfg.fsync_seconds)
        session_start = time.monotonic()
        last_save = 0.0

        def save(final: bool = False) -> None:
            nonlocal session_start, last_save
            now = time.monotonic()
            info.progress.active_seconds += now - session_start
            session_start = now
            if final or now - last_save > 2.0:
                info.save(self.run_json)
                last_save = now

        try:
            info.pid = os.getpid()
            info.sessions += 1
            info.transition(BenchState.RUNNING, "")
            info.save(self.run_json)
            if info.progress.done < info.total:
                try:
                    backend, tok = load_backend(self.spec)
                except BenchError:
                    raise
                # any exception: the model/engine failed to load, a FAILED run
                except Exception as exc:  # noqa: BLE001
                    raise BenchError(
                        f"cannot load {self.spec.model!r} for "
                        f"{self.spec.cfg.backend}: {one_line(exc)}"
                    ) from exc
                self._record_engine(info, backend)
                session_start = time.monotonic()  # loading the model is not generation time
                pending: dict[str, BenchPrompt] = {}
                for c in backend.run(self._requests(tok, pending, writer, done, info)):
                    self._record(writer, info, pending.pop(c.custom_id), c, c.error)
                    save()
                    self.on_progress(info)
            complete = info.progress.done >= info.total
            if complete:
                info.transition(
                    BenchState.COMPLETED,
                    f"{info.progress.done} results, {info.progress.errors} errors",
                )
            else:
                info.transition(BenchState.STOPPED, "stopped by a signal; `--resume` continues")
        except Stop:
            info.transition(
                BenchState.STOPPED,
                "stopped by a second signal; requests in flight are redone on resume",
            )
        except BaseException as exc:
            msg = str(exc) if isinstance(exc, BenchError) else f"{type(exc).__name__}: {exc}"
            if info.state is not BenchState.FAILED:
                info.transition(BenchState.FAILED, msg)
            raise
        finally:
            writer.close()
            save(final=True)
            restore()
            if self._lock_fh:
                self._lock_fh.close()
        return Outcome(info, self.results, self.written, skipped, repaired)


class ModelLoader:
    """The real `load_backend`: the model's tokenizer, then one loaded model (vLLM engine or
    transformers) for the whole process, handing out a backend per adapter. `adapters`: every
    adapter the model must answer with (a sweep's); by default the spec's own. `bench.backend =
    "auto"` falls back to hf with a one-line reason."""

    def __init__(
        self, home: Home, log: Callable[[str], None] = print, adapters: list[Path] | None = None
    ):
        self.home, self.log, self.adapters = home, log, adapters
        self.loaded: Any = None
        self.tok: Any = None

    def close(self) -> None:
        """Release the loaded model (a vLLM engine's processes stop)."""
        if self.loaded is not None:
            self.loaded.close()
            self.loaded = None

    def __call__(self, spec: BenchSpec) -> tuple[Backend, Any]:
        if self.loaded is None:
            self.loaded, self.tok = self._load(spec)
        return self.loaded.backend(spec.adapter), self.tok

    def _load(self, spec: BenchSpec) -> tuple[Any, Any]:
        from daemon.bench.backends import HfModel
        from daemon.models.loading import load_tokenizer

        tok = load_tokenizer(spec.model, self.home.models)
        adapters = self.adapters if self.adapters is not None else [a for a in [spec.adapter] if a]
        choice = spec.cfg.backend
        if choice in ("auto", "vllm"):
            reason = vllm_unusable(spec.model) if choice == "auto" else None
            if reason is None:
                try:
                    return self._vllm(spec, tok, adapters), tok
                # auto: any engine failure falls back to hf
                except Exception as exc:  # noqa: BLE001
                    if choice == "vllm":
                        raise
                    reason = f"vLLM could not load {spec.model}: {one_line(exc)}"
            self.log(f"answering with transformers (hf): {reason}")
        return HfModel(spec.model, self.home.models, tok, spec.cfg.batch_size, adapters), tok

    def _vllm(self, spec: BenchSpec, tok: Any, adapters: list[Path]) -> Any:
        from daemon.bench.backends import VllmModel
        from daemon.models.loading import resolve_model_path

        path = resolve_model_path(spec.model, self.home.models)
        longest, answer = 0, spec.cfg.max_tokens
        prompts = (
            []
            if spec.cfg.max_model_len
            else itertools.islice(iter_prompts(spec.prompts), spec.limit or None)
        )
        for p in prompts:  # the length plan: the longest rendered prompt and its answer budget
            if p.error is None:
                longest = max(longest, len(prompt_ids(tok, p.messages, p.tools)))
                answer = max(answer, p.max_tokens or 0)
        length = plan_max_model_len(spec.cfg, longest, answer, model_context(path))
        return VllmModel(path, spec.cfg, adapters, length)


def load_backend_for(home: Home, log: Callable[[str], None] = print) -> ModelLoader:
    """The loader a single bench run uses (also each data-parallel rank)."""
    return ModelLoader(home, log)


def _max_positions(tok: Any) -> int | None:
    n = getattr(tok, "model_max_length", None)
    return n if isinstance(n, int) and 0 < n < 10**8 else None
