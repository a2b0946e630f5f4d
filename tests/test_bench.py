"""`trainctl bench`: prompt formats, results in the OpenAI batch shape, resume refusals, kills at
random points, error lines and --retry-errors, the vllm engine loop (against the stand-in engine),
list and compare."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.app import app
from daemon.bench.backends import Completion, VllmBackend
from daemon.bench.prompts import iter_prompts, scan_prompt_file
from daemon.bench.runner import BenchRunner, BenchSpec, request_seed
from daemon.config import BenchConfig
from daemon.errors import BenchError
from daemon.home import Home
from tests.helpers import ROOT, wait_for, write_jsonl
from tests.vllm_standin import StandInEngine, StandInSamplingParams

# CliRunner has no terminal: a wide console keeps Rich from folding table cells mid-phrase
pytestmark = pytest.mark.usefixtures("wide_console")

runner = CliRunner()


def batch_line(cid: str, text: str, **body) -> dict:
    return {
        "custom_id": cid,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "m", "messages": [{"role": "user", "content": text}], **body},
    }


def results(home: Path, name: str) -> list[dict]:
    path = Home(home).bench_root / name / "results.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_prompt_file_formats_ids_references_and_bad_lines(tmp_path):
    path = write_jsonl(
        tmp_path / "p.jsonl",
        [
            batch_line("b1", "hi", max_tokens=7, temperature=0.5, metadata={"name": "Ann"}),
            {"id": "a1", "instruction": "Upper", "input": "abc", "output": "ABC"},
            {"prompt": "just a prompt"},
            {
                "messages": [
                    {"role": "system", "content": "s"},
                    {"role": "user", "content": "q"},
                    {"role": "assistant", "content": "golden"},
                ],
                "domain": "qa",
            },
            "{not json",
            {"foo": 1},
            {"custom_id": "b2", "body": {"messages": []}},
        ],
    )
    ps = list(iter_prompts(path))
    assert [p.custom_id for p in ps] == ["b1", "a1", "line-3", "line-4", "line-5", "line-6", "b2"]
    b1, a1, plain, chat, bad, unknown, empty = ps
    assert (b1.max_tokens, b1.temperature, b1.metadata, b1.error) == (
        7,
        0.5,
        {"name": "Ann"},
        None,
    )
    assert a1.messages == [{"role": "user", "content": "Upper\n\nabc"}] and a1.reference == "ABC"
    assert (
        plain.messages == [{"role": "user", "content": "just a prompt"}]
        and plain.reference is None
    )
    assert chat.messages[-1] == {"role": "user", "content": "q"} and chat.reference == "golden"
    assert chat.metadata == {"domain": "qa"}
    assert bad.error.startswith("invalid_json") and unknown.error.startswith("unknown_format")
    assert empty.error.startswith("invalid_request")
    info = scan_prompt_file(path)
    assert info.total == 7 and len(info.sha256) == 64

    dup = write_jsonl(
        tmp_path / "dup.jsonl", [batch_line("x", "1"), batch_line("y", "2"), batch_line("x", "3")]
    )
    with pytest.raises(BenchError, match=r"repeats custom_id 'x' \(lines 1 and 3\)"):
        scan_prompt_file(dup)


def test_bench_run_writes_batch_output_shape_and_refuses_a_changed_resume(home, tmp_path):
    prompts = write_jsonl(
        tmp_path / "p.jsonl",
        [batch_line(f"q{i}", f"question {i}") for i in range(10)]
        + [{"id": "gold", "prompt": "2+2", "completion": "4"}, "{broken"],
    )
    base = [
        "bench",
        "run",
        "--home",
        str(home),
        "--prompts",
        str(prompts),
        "--name",
        "base",
        "--max-tokens",
        "8",
    ]
    r = runner.invoke(app, base)
    assert r.exit_code == 0, r.output
    assert "completed: 12/12 results (1 errors" in r.output
    rows = results(home, "base")
    assert len(rows) == 12 and len({x["custom_id"] for x in rows}) == 12
    ok = next(x for x in rows if x["custom_id"] == "q3")
    body = ok["response"]["body"]
    assert (
        ok["response"]["status_code"] == 200
        and ok["error"] is None
        and body["object"] == "chat.completion"
    )
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert body["choices"][0]["finish_reason"] in ("stop", "length")
    usage = body["usage"]
    assert (
        1 <= usage["completion_tokens"] <= 8
        and usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    )
    assert ok["timing"]["latency_s"] > 0
    assert next(x for x in rows if x["custom_id"] == "gold")["reference"] == "4"
    broken = next(x for x in rows if x["error"])
    assert (
        broken["custom_id"] == "line-12"
        and broken["error"]["code"] == "invalid_json"
        and broken["line"] == 12
    )

    # backend auto: builtin:tiny cannot run on vLLM, which is said in one line; the run records its
    # engine.
    assert (
        "answering with transformers (hf): builtin:tiny is a test model vLLM's engine cannot run"
        in r.output
    )
    run_json = json.loads((Home(home).bench_root / "base" / "run.json").read_text())
    assert run_json["engine"]["backend"] == "hf" and run_json["engine"]["version"]
    # The very same line again (as after a crash): it continues the run and says so; nothing is
    # redone.
    r = runner.invoke(app, base)
    assert (
        r.exit_code == 0
        and "exists with the same settings (completed, 12/12): continuing it" in r.output
    )
    assert "0 this session, 12 from before" in r.output and len(results(home, "base")) == 12
    # The same name with other settings and no --resume: refused, naming the change, nothing
    # touched.
    r = runner.invoke(app, [*base[:-1], "9"])
    assert (
        r.exit_code == 1
        and "already exists with other settings: max_tokens was 8, now 9" in r.output
    )
    # A resume with other sampling settings, another model or a changed prompt file: refused,
    # saying what changed.
    resume = ["bench", "run", "--home", str(home), "--name", "base", "--resume"]
    r = runner.invoke(app, [*resume, "--temperature", "0.7"])
    assert r.exit_code == 1 and "temperature was 0.0, now 0.7" in r.output
    r = runner.invoke(app, [*resume, "--model", str(Home(home).models / "tiny-v1")])
    assert r.exit_code == 1 and "model was 'builtin:tiny'" in r.output
    with open(prompts, "a") as fh:
        fh.write(json.dumps(batch_line("new", "one more")) + "\n")
    r = runner.invoke(app, resume)
    assert r.exit_code == 1 and "prompt file content changed" in r.output
    assert len(results(home, "base")) == 12
    r = runner.invoke(app, ["bench", "run", "--home", str(home), "--name", "nope", "--resume"])
    assert (
        r.exit_code == 1
        and "no bench run 'nope' to resume, and no --prompts or --job to start it" in r.output
    )

    r = runner.invoke(app, ["bench", "list", "--home", str(home), "--json"])
    assert r.exit_code == 0
    (row,) = json.loads(r.output)
    assert (row["name"], row["state"], row["done"], row["total"], row["errors"]) == (
        "base",
        "completed",
        12,
        12,
        1,
    )
    assert row["output_tokens_per_s"] > 0


def test_sampling_is_per_request_whatever_the_batch(home):
    """A sampled request draws the same tokens alone or inside a batch: a resumed request samples
    the same."""
    from daemon.models.generation import RowSampling, generate_batch
    from daemon.models.loading import load_model, load_tokenizer

    tok = load_tokenizer("builtin:tiny", Home(home).models)
    model = load_model("builtin:tiny", Home(home).models, device="cpu")
    ids = [
        tok(t, add_special_tokens=False)["input_ids"]
        for t in (
            "<|user|>abc<|end|><|assistant|>",
            "<|user|>a much longer prompt<|end|><|assistant|>",
        )
    ]
    rows = [RowSampling(12, 1.0, 0.95, seed=7), RowSampling(12, 1.0, 0.95, seed=8)]
    together = generate_batch(model, tok, ids, rows)
    alone = generate_batch(model, tok, [ids[0]], [rows[0]])
    assert together[0]["token_ids"] == alone[0]["token_ids"]
    other_seed = generate_batch(model, tok, [ids[0]], [RowSampling(12, 1.0, 0.95, seed=9)])
    assert other_seed[0]["token_ids"] != alone[0]["token_ids"]


class ScriptedBackend:
    """Answers with the custom_id upper-cased; ids in `fail` end in an error."""

    name, version = "hf", "scripted"

    def __init__(self, fail: set[str] = frozenset(), answer=lambda cid: cid.upper()):
        self.fail, self.answer, self.seen = set(fail), answer, []

    def run(self, requests):
        for r in requests:
            self.seen.append(r.custom_id)
            t = time.time()
            if r.custom_id in self.fail:
                yield Completion(
                    r.custom_id,
                    "",
                    len(r.prompt_ids),
                    0,
                    "error",
                    t,
                    t,
                    error="generation_failed: boom",
                )
            else:
                text = self.answer(r.custom_id)
                yield Completion(
                    r.custom_id, text, len(r.prompt_ids), len(text), "stop", t, t + 0.01
                )


@pytest.fixture
def tok(home):
    from daemon.models.loading import load_tokenizer

    return load_tokenizer("builtin:tiny", Home(home).models)


def spec(home: Path, prompts: Path, name: str, **cfg) -> BenchSpec:
    return BenchSpec(
        name=name, model="builtin:tiny", prompts=prompts, adapter=None, cfg=BenchConfig(**cfg)
    )


def test_error_lines_are_kept_and_retried_only_with_retry_errors(home, tmp_path, tok):
    h = Home.open(home)
    prompts = write_jsonl(
        tmp_path / "p.jsonl", [batch_line(f"q{i}", f"question {i}") for i in range(6)]
    )
    out = BenchRunner(h, spec(home, prompts, "e"), log=lambda m: None).run(
        lambda s: (ScriptedBackend(fail={"q2", "q4"}), tok)
    )
    assert out.info.state.value == "completed" and out.info.progress.errors == 2
    errs = {x["custom_id"]: x["error"] for x in results(home, "e") if x["error"]}
    assert errs == {
        "q2": {"code": "generation_failed", "message": "boom"},
        "q4": {"code": "generation_failed", "message": "boom"},
    }
    # A plain resume has nothing to redo: error lines are results too.
    again = ScriptedBackend()
    out = BenchRunner(h, spec(home, prompts, "e"), resume=True, log=lambda m: None).run(
        lambda s: (again, tok)
    )
    assert again.seen == [] and out.written == 0
    # --retry-errors redoes exactly those two, and each prompt still has exactly one line.
    retry = ScriptedBackend()
    out = BenchRunner(
        h, spec(home, prompts, "e"), resume=True, retry_errors=True, log=lambda m: None
    ).run(lambda s: (retry, tok))
    assert sorted(retry.seen) == ["q2", "q4"] and out.info.progress.errors == 0
    rows = results(home, "e")
    assert Counter(x["custom_id"] for x in rows) == Counter(f"q{i}" for i in range(6))
    assert all(x["error"] is None for x in rows)


def test_vllm_backend_keeps_the_engine_full_and_writes_results_as_they_finish(home, tmp_path, tok):
    h = Home.open(home)
    n = 40
    prompts = write_jsonl(
        tmp_path / "p.jsonl",
        [batch_line(f"r{i:02d}", f"prompt number {i}") for i in range(n)]
        + [batch_line("toolong", "x")],
    )
    engine = StandInEngine(max_num_seqs=6, fail_ids={"toolong"})
    order: list[str] = []
    backend = VllmBackend(engine, max_in_flight=6, sampling_params=StandInSamplingParams)
    orig = backend.run

    def run(reqs):
        for c in orig(reqs):
            # When a result is yielded the runner writes it before asking for the next one.
            order.append(c.custom_id)
            yield c

    backend.run = run  # type: ignore[method-assign]
    s = spec(home, prompts, "v", backend="vllm", max_tokens=12, temperature=0.8, seed=5)
    out = BenchRunner(h, s, log=lambda m: None).run(lambda sp: (backend, tok))
    rows = results(home, "v")
    assert out.info.state.value == "completed" and len(rows) == n + 1
    assert [x["custom_id"] for x in rows] == order  # written in finishing order, one by one
    assert order[:n] != sorted(order[:n])  # requests finish out of submission order
    assert engine.max_running == 6  # the engine was kept full
    seeds = {rid: p.seed for rid, p in engine.added}
    assert seeds["r07"] == request_seed(5, "r07") and len(set(seeds.values())) == n
    assert all(p.temperature == 0.8 and p.max_tokens == 12 for _, p in engine.added)
    failed = next(x for x in rows if x["custom_id"] == "toolong")
    assert (
        failed["error"]["code"] == "generation_failed" and "context" in failed["error"]["message"]
    )
    first = {
        x["custom_id"]: x["response"]["body"]["choices"][0]["message"]["content"]
        for x in rows
        if not x["error"]
    }

    # A second run of the same prompts under another name samples exactly the same answers
    # (per-request seeds).
    engine2 = StandInEngine(max_num_seqs=3)
    s2 = spec(home, prompts, "v2", backend="vllm", max_tokens=12, temperature=0.8, seed=5)
    BenchRunner(h, s2, log=lambda m: None).run(
        lambda sp: (VllmBackend(engine2, 3, StandInSamplingParams), tok)
    )
    second = {
        x["custom_id"]: x["response"]["body"]["choices"][0]["message"]["content"]
        for x in results(home, "v2")
        if not x["error"]
    }
    # (this stand-in engine accepts the long prompt)
    assert second.pop("toolong") and second == first


def _bench_cmd(home: Path, prompts: Path, name: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "cli",
        "bench",
        "run",
        "--home",
        str(home),
        "--prompts",
        str(prompts),
        "--name",
        name,
        "--max-tokens",
        "24",
        "--batch-size",
        "4",
        "--temperature",
        "0.9",
        *extra,
    ]


@pytest.mark.slow
def test_kill_9_at_random_points_then_resume_loses_and_duplicates_nothing(home, tmp_path):
    # Four sessions, each killed at most ~1.5 s after its first result, wrote 137-148 answers here:
    # 320 prompts keep the run unfinished at the fourth kill on a faster machine too (160 sometimes
    # finished before it).
    n = 320
    prompts = write_jsonl(
        tmp_path / "p.jsonl",
        [batch_line(f"id-{i:03d}", f"tell me about item {i} " * (1 + i % 4)) for i in range(n)],
    )
    res = Home(home).bench_root / "k" / "results.jsonl"
    rng = random.Random(1)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    kills = 0
    for attempt in range(4):
        extra = ("--resume",) if attempt else ()
        proc = subprocess.Popen(
            _bench_cmd(home, prompts, "k", *extra),
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        before = res.stat().st_size if res.exists() else 0
        # Kill at a random moment once this session has written something (model loading is not
        # interesting).
        wait_for(
            lambda before=before, proc=proc: (
                res.exists() and res.stat().st_size > before or proc.poll() is not None
            ),
            120,
            "first results of the session",
        )
        time.sleep(rng.uniform(0.0, 1.5))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(30)
        if attempt == 1:
            with open(res, "ab") as fh:  # a torn last line, as a kill in mid-write leaves it
                fh.write(b'{"id": "batch_req_x", "custom_id": "id-0')
    assert kills >= 3
    killed = runner.invoke(app, ["bench", "list", "--home", str(home), "--json"])
    assert json.loads(killed.output)[0]["state"] == "killed"
    done = subprocess.run(
        _bench_cmd(home, prompts, "k", "--resume"),
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    rows = results(home, "k")
    ids = Counter(x["custom_id"] for x in rows)
    assert ids == Counter(f"id-{i:03d}" for i in range(n))  # every prompt exactly once, none lost
    assert all(x["error"] is None for x in rows)
    info = json.loads((Home(home).bench_root / "k" / "run.json").read_text())
    assert info["state"] == "completed" and info["sessions"] == 5 and info["progress"]["done"] == n


@pytest.mark.slow
def test_sigterm_stops_cleanly_after_flushing_and_resume_finishes(home, tmp_path):
    prompts = write_jsonl(
        tmp_path / "p.jsonl", [batch_line(f"s{i}", f"question {i} " * 3) for i in range(120)]
    )
    res = Home(home).bench_root / "t" / "results.jsonl"
    proc = subprocess.Popen(
        _bench_cmd(home, prompts, "t"),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    wait_for(lambda: res.exists() and res.stat().st_size > 0, 120, "first results")
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    assert "resume with: trainctl bench --resume t" in out
    raw = res.read_bytes()
    assert raw.endswith(b"\n")  # flushed whole lines only
    stopped = len(raw.splitlines())
    assert 0 < stopped < 120
    info = json.loads((Home(home).bench_root / "t" / "run.json").read_text())
    assert info["state"] == "stopped" and info["progress"]["done"] == stopped
    done = subprocess.run(
        _bench_cmd(home, prompts, "t", "--resume"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{120 - stopped} this session, {stopped} from before" in done.stdout
    assert Counter(x["custom_id"] for x in results(home, "t")) == Counter(
        f"s{i}" for i in range(120)
    )


def test_compare_joins_runs_marks_disagreements_and_measures_agreement(home, tmp_path, tok):
    h = Home.open(home)
    rows = [
        dict(
            batch_line(f"c{i}", f"Candidate: person{i}\nShould we hire?"),
            body={
                "messages": [
                    {"role": "user", "content": f"Candidate: person{i}\nShould we hire?"}
                ],
                "metadata": {"name": f"P{i}"},
            },
        )
        for i in range(10)
    ]
    prompts = write_jsonl(tmp_path / "p.jsonl", rows)
    labels_a = [
        "Strong Yes",
        "Yes",
        "No",
        "Strong No",
        "Yes",
        "Yes",
        "No",
        "No",
        "Yes",
        "Strong Yes",
    ]
    # 2 differ
    labels_b = ["Strong Yes", "Yes", "No", "No", "Yes", "No", "No", "No", "Yes", "Strong Yes"]
    for name, labels in (("a", labels_a), ("b", labels_b)):

        def answer(cid, labels=labels, name=name):
            return f"Model {name} thinks for a while. Recommendation: {labels[int(cid[1:])]}."

        BenchRunner(h, spec(home, prompts, name), log=lambda m: None).run(
            lambda s, answer=answer: (ScriptedBackend(answer=answer), tok)
        )

    # Whole answers differ everywhere (the wording names the model); labels disagree on exactly c3
    # and c5.
    r = runner.invoke(app, ["bench", "compare", "a", "b", "--home", str(home), "--json"])
    doc = json.loads(r.output)
    assert doc["pairs"][0]["agree"] == 0 and doc["pairs"][0]["both"] == 10
    args = [
        "bench",
        "compare",
        "a",
        "b",
        "--home",
        str(home),
        "--label-regex",
        r"Recommendation: (Strong Yes|Strong No|Yes|No)",
    ]
    doc = json.loads(runner.invoke(app, [*args, "--json", "--diff-only"]).output)
    assert [x["custom_id"] for x in doc["rows"]] == ["c3", "c5"]
    assert doc["rows"][0]["a"]["value"] == "Strong No" and doc["rows"][0]["b"]["value"] == "No"
    (pair,) = doc["pairs"]
    assert (pair["both"], pair["agree"], pair["agreement"]) == (10, 8, 0.8)
    # 0.8 observed, 0.31 expected by chance
    assert pair["kappa"] == pytest.approx(0.7101, abs=1e-4)
    r = runner.invoke(
        app, [*args, "--diff-only", "--name-field", "name", "--export", "diff.jsonl"]
    )
    assert r.exit_code == 0, r.output
    assert (
        "2 with disagreement" in r.output
        and "P3" in r.output
        and "P5" in r.output
        and "P4" not in r.output
    )
    assert "80.0%" in r.output and "0.710" in r.output
    exported = [json.loads(x) for x in (home / "diff.jsonl").read_text().splitlines()]
    assert [x["name"] for x in exported] == ["P3", "P5"]
    r = runner.invoke(app, [*args, "--name-regex", r"Candidate: (\w+)", "--json"])
    assert [x["name"] for x in json.loads(r.output)["rows"]][:2] == ["person0", "person1"]

    r = runner.invoke(app, ["bench", "compare", "a", "zzz", "--home", str(home)])
    assert (
        r.exit_code == 1 and "no bench run named 'zzz'" in r.output and "Traceback" not in r.output
    )
    r = runner.invoke(
        app, ["bench", "compare", "a", "b", "--home", str(home), "--label-regex", "(unclosed"]
    )
    assert r.exit_code == 1 and "invalid regular expression" in r.output
    r = runner.invoke(
        app, ["bench", "compare", "a", "b", "--home", str(home), "--export", "../out.jsonl"]
    )
    assert r.exit_code == 1 and "outside the home folder" in r.output


def all_results(home: Path, name: str) -> list[dict]:
    """Every result line of a run, from results.jsonl and each data-parallel rank's
    results.rank-R.jsonl."""
    from daemon.bench.state import results_files

    return [
        json.loads(line)
        for f in results_files(Home(home).bench_root / name)
        for line in f.read_text().splitlines()
        if line.strip()
    ]


@pytest.mark.slow
def test_data_parallel_ranks_share_the_prompts_exactly_once_through_kills_and_a_change_of_size(
    home, tmp_path
):
    """Two engines side by side (two hf processes here), each on the prompts whose custom_id hashes
    to it, each writing its own file. Kill -9 of the coordinator takes the ranks with it; resumes
    (with two ranks, then with one) leave every prompt with exactly one line; list and compare read
    the files as one run."""
    from daemon.bench.state import shard_of

    n = 160
    prompts = write_jsonl(
        tmp_path / "p.jsonl",
        [batch_line(f"d{i:03d}", f"tell me about item {i} " * (1 + i % 3)) for i in range(n)],
    )
    run_dir = Home(home).bench_root / "dp"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    dp = ("--data-parallel-size", "2")
    proc = subprocess.Popen(
        _bench_cmd(home, prompts, "dp", *dp),
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for(
        lambda: all(
            (run_dir / f"results.rank-{r}.jsonl").exists()
            and (run_dir / f"results.rank-{r}.jsonl").stat().st_size > 0
            for r in (0, 1)
        ),
        180,
        "both ranks writing",
    )
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    wait_for(
        lambda: (
            not any(
                b"daemon.bench.shards" in Path(f"/proc/{p}/cmdline").read_bytes()
                for p in os.listdir("/proc")
                if p.isdigit() and os.path.exists(f"/proc/{p}/cmdline")
            )
        ),
        60,
        "the ranks to die with their coordinator",
    )
    first = all_results(home, "dp")
    assert 0 < len(first) < n
    for r in (0, 1):  # each rank answered only its own share
        rows = (run_dir / f"results.rank-{r}.jsonl").read_text().splitlines()
        assert all(shard_of(json.loads(x)["custom_id"], 2) == r for x in rows if x.endswith("}"))
    listed = json.loads(
        runner.invoke(app, ["bench", "list", "--home", str(home), "--json"]).output
    )
    assert listed[0]["state"] == "killed" and listed[0]["done"] == len(first)
    # Resume with two ranks, stopped by one Ctrl-C on its terminal (SIGINT to its process group)
    # after some progress: each rank finishes the requests in flight (it is not taken as a second
    # press), then finish with one rank
    proc = subprocess.Popen(
        _bench_cmd(home, prompts, "dp", "--resume", *dp),
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    wait_for(
        lambda: len(all_results(home, "dp")) > len(first) + 10 or proc.poll() is not None,
        180,
        "progress",
    )
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(120) in (0, 130)
    from daemon.bench.state import BenchState, load_run

    for r in (0, 1):
        rank = load_run(run_dir, f"run.rank-{r}.json")
        assert rank.state is BenchState.COMPLETED or (
            rank.state is BenchState.STOPPED
            and rank.message == "stopped by a signal; `--resume` continues"
        ), rank
    done = subprocess.run(
        _bench_cmd(home, prompts, "dp", "--resume"),
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    ids = Counter(x["custom_id"] for x in all_results(home, "dp"))
    # every prompt exactly once, across three files
    assert ids == Counter(f"d{i:03d}" for i in range(n))
    assert json.loads((run_dir / "run.json").read_text())["state"] == "completed"
    from daemon.bench.compare import compare_runs

    # the run against itself: every row agrees
    joined = compare_runs(Home(home).bench_root, ["dp", "dp"])
    assert len(joined.rows) == n and joined.per_run[0]["results"] == n


def _stop_midway(home: Path, name: str, keep: int) -> None:
    """Leave a finished run as a stopped one would be: its first `keep` result lines, state
    stopped."""
    from daemon.bench.state import BenchState, load_run

    d = Home(home).bench_root / name
    lines = (d / "results.jsonl").read_text().splitlines(keepends=True)
    (d / "results.jsonl").write_text("".join(lines[:keep]))
    info = load_run(d)
    info.state = BenchState.STOPPED
    info.progress.done = keep
    info.save(d / "run.json")


def test_bench_resume_picks_the_unfinished_run_and_a_resume_of_a_new_run_starts_it(home, tmp_path):
    """`trainctl bench --resume` as on the product card: the one unfinished run, or NAME; a refusal
    when there is none or several; and `bench run ... --resume` on a run that does not exist yet
    starts it."""
    prompts = write_jsonl(
        tmp_path / "p.jsonl", [batch_line(f"q{i}", f"question {i}") for i in range(8)]
    )
    r = runner.invoke(app, ["bench", "--resume", "--home", str(home)])
    assert (
        r.exit_code == 1
        and "no bench run to resume: none is stopped, killed or failed" in r.output
    )
    for name in ("a", "b"):
        r = runner.invoke(
            app,
            [
                "bench",
                "run",
                "--home",
                str(home),
                "--prompts",
                str(prompts),
                "--name",
                name,
                "--max-tokens",
                "6",
                "--resume",
            ],
        )
        assert r.exit_code == 0, r.output
        assert (
            f"there is no bench run {name!r} yet: starting it" in r.output
            and "completed: 8/8" in r.output
        )
    _stop_midway(home, "a", 3)
    r = runner.invoke(app, ["bench", "--resume", "--home", str(home)])
    assert r.exit_code == 0, r.output
    assert (
        "resuming bench run 'a' (stopped, 3/8)" in r.output
        and "5 this session, 3 from before" in r.output
    )
    assert Counter(x["custom_id"] for x in results(home, "a")) == Counter(
        f"q{i}" for i in range(8)
    )
    _stop_midway(home, "a", 2)
    _stop_midway(home, "b", 4)
    r = runner.invoke(app, ["bench", "--resume", "--home", str(home)])
    assert (
        r.exit_code == 1
        and "2 bench runs could be resumed" in r.output
        and "trainctl bench --resume" in r.output
    )
    assert "Traceback" not in r.output
    r = runner.invoke(app, ["bench", "--resume", "b", "--home", str(home)])
    assert r.exit_code == 0 and "4 this session, 4 from before" in r.output, r.output
    r = runner.invoke(app, ["bench", "--resume", "b", "--home", str(home)])
    assert r.exit_code == 0 and "already completed (8/8)" in r.output
    r = runner.invoke(app, ["bench", "--resume", "zzz", "--home", str(home)])
    assert r.exit_code == 1 and "there is no bench run 'zzz'" in r.output
