"""The JSON the browser views read: the same readers the terminal commands use (cli/status,
cli/bench, cli/evolution, daemon/flags, daemon/curation/rejects), never a second copy of the
parsing.

Every name that comes in a URL (a job, a run, a dataset, a flag) is looked up among what exists and
never joined into a path, so no request reaches a file outside the home folder. No torch here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from daemon.errors import TrainctlError
from daemon.home import Home

MAX_METRIC_BYTES = 4 << 20
"""One metrics answer carries at most this much of the file; the page asks again from the new
offset."""


class NotFound(TrainctlError):
    """A name that is not there: 404."""


class BadRequest(TrainctlError):
    """A parameter that cannot be used: 400."""


def _int(params: dict[str, str], key: str, default: int | None = None) -> int | None:
    raw = params.get(key)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError:
        raise BadRequest(f"{key} must be a whole number, not {raw!r}") from None


def _job_exists(home: Home, job_id: int) -> bool:
    from daemon.jobs import JobQueue

    if not home.jobs_db.exists():
        return False
    with JobQueue(home.jobs_db, readonly=True) as q:
        try:
            q.get(job_id)
        except TrainctlError:
            return False
    return True


# -- live monitor
# -------------------------------------------------------------------------------------------------


def status(home: Home) -> dict[str, Any]:
    from cli.status import gather

    doc = gather(home)
    doc["devices"] = devices()
    return doc


def queue(home: Home, params: dict[str, str]) -> list[dict[str, Any]]:
    from daemon.jobs import JobQueue

    if not home.jobs_db.exists():
        return []
    with JobQueue(home.jobs_db, readonly=True) as q:
        return [j.to_dict() for j in q.newest(limit=_int(params, "limit", 50) or 50)]


def _run_dir(home: Home, params: dict[str, str]) -> tuple[int, Path]:
    """The job named by ?job=N (looked up in the queue), else the one training_status.json is
    about."""
    from daemon.runs.training_status import read_training_status

    job = _int(params, "job")
    if job is None:
        job = read_training_status(home.training_status).get("job_id")
        if job is None:
            raise NotFound("no job has trained yet")
    if not _job_exists(home, job):
        raise NotFound(f"no job {job}")
    return job, home.run_dir(job)


def metrics(home: Home, params: dict[str, str]) -> dict[str, Any]:
    """metrics.jsonl rows from byte `offset` on (complete lines only) and the offset to ask from
    next time. A file shorter than the offset (a new run of the job) starts again from 0
    (`reset`)."""
    job, run = _run_dir(home, params)
    offset = _int(params, "offset", 0) or 0
    path = run / "metrics.jsonl"
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return {"job": job, "rows": [], "offset": 0, "reset": offset > 0}
    reset = offset > size
    if reset:
        offset = 0
    with open(path, "rb") as fh:
        fh.seek(offset)
        data = fh.read(MAX_METRIC_BYTES)
    complete = data[: data.rfind(b"\n") + 1]
    rows = []
    for line in complete.splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return {
        "job": job,
        "rows": rows,
        "offset": offset + len(complete),
        "reset": reset,
        "more": offset + len(complete) < size,
    }


def job(home: Home, params: dict[str, str]) -> dict[str, Any]:
    """The job page's document (cli/web/job_page.py) for ?id=N."""
    from cli.web.job_page import job_doc
    from daemon.jobs import JobQueue

    job_id = _int(params, "id")
    if job_id is None:
        raise BadRequest("id is missing")
    if not _job_exists(home, job_id):
        raise NotFound(f"no job {job_id}")
    with JobQueue(home.jobs_db, readonly=True) as q:
        found = q.get(job_id)
    doc = job_doc(home, found)
    doc["flags"] = _flags(home).stats(job=job_id)
    return doc


def overlay(home: Home, params: dict[str, str]) -> dict[str, Any]:
    """Curves of ?jobs=1,2,... (each looked up in the queue) to lay over each other."""
    from cli.web.job_page import overlay as curves

    raw = [x for x in (params.get("jobs") or "").split(",") if x]
    if not raw or not all(x.isdigit() for x in raw) or len(raw) > 8:
        raise BadRequest("jobs must be one to eight job numbers, e.g. jobs=1,2")
    ids = [int(x) for x in raw]
    missing = [i for i in ids if not _job_exists(home, i)]
    if missing:
        raise NotFound(f"no job {missing[0]}")
    return curves(home, ids)


def alerts(home: Home, params: dict[str, str]) -> dict[str, Any]:
    """A job's alert firings and resolutions (alerts.jsonl), oldest first."""
    from daemon.atomic import iter_jsonl

    job, run = _run_dir(home, params)
    path = run / "alerts.jsonl"
    return {"job": job, "events": list(iter_jsonl(path)) if path.exists() else []}


def devices() -> dict[str, Any]:
    """GPU memory and utilisation from nvidia-smi where there is one; CPU load and RAM
    otherwise."""
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(
                [
                    "nvidia-smi",
                    "--query-gpu=index,name,memory.used,memory.total,utilization.gpu",
                    "--format=csv,noheader,nounits",
                ],
                capture_output=True,
                text=True,
                timeout=5,
            )
            gpus = []
            for line in out.stdout.strip().splitlines():
                i, name, used, total, util = (x.strip() for x in line.split(","))
                gpus.append(
                    {
                        "index": int(i),
                        "name": name,
                        "memory_used_mib": float(used),
                        "memory_total_mib": float(total),
                        "utilization_pct": float(util),
                    }
                )
            if gpus:
                return {"kind": "gpu", "gpus": gpus}
        except (OSError, ValueError, subprocess.SubprocessError):
            pass
    mem: dict[str, int] = {}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, value = line.split(":", 1)
            mem[key] = int(value.split()[0]) * 1024
    except (OSError, ValueError):
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {
        "kind": "cpu",
        "cpus": os.cpu_count(),
        "load_1m": round(load[0], 2),
        "memory_total": mem.get("MemTotal"),
        "memory_available": mem.get("MemAvailable"),
    }


# -- flagged examples
# -----------------------------------------------------------------------------------------------


def _flags(home: Home) -> Any:
    from daemon.runs.flag_store import FlagStore

    return FlagStore(home.flagged_file)


def flags(home: Home, params: dict[str, str]) -> dict[str, Any]:
    """Flags filtered by reason, file, job, text (`q`) and state (open / resolved / all), sorted
    like `trainctl flags --sort`."""
    store = _flags(home)
    state = params.get("state") or "open"
    if state not in ("open", "resolved", "all"):
        raise BadRequest("state must be open, resolved or all")
    reason = params.get("reason") or None
    sort = (params.get("sort") or "recent").replace("-", "_")
    job = params.get("job") or None
    if job is not None and not job.isdigit():
        raise BadRequest("job must be a job number")
    all_flags = store.load()  # one read of the file for every part of the answer
    if params.get("count"):  # the navigation's badge: the counts alone
        return {"stats": store.stats(all_flags)}
    try:
        rows = store.query(
            reason,
            sort,
            None,
            include_resolved=state != "open",
            flags=all_flags,
            job=int(job) if job else None,
            search=params.get("q") or None,
        )
    except TrainctlError as exc:
        raise BadRequest(str(exc)) from None
    if state == "resolved":
        rows = [f for f in rows if f.get("resolved")]
    if params.get("file"):
        rows = [f for f in rows if f.get("file") == params["file"]]
    return {
        "stats": store.stats(all_flags),
        "flags": rows,
        "files": sorted({f["file"] for f in all_flags if f.get("file")}),
        "reasons": sorted({f["reason"] for f in all_flags}),
    }


FLAG_WRITES = ("resolve", "notes", "reopen")
"""What the UI may do to a flag (its only writes): resolve it (with notes), add notes, reopen a
resolved one."""


def flag_write(home: Home, flag_id: int, body: dict[str, Any], action: str) -> dict[str, Any]:
    """One of FLAG_WRITES on flag `flag_id`."""
    store = _flags(home)
    if not any(f["id"] == flag_id for f in store.load()):
        raise NotFound(f"no flag {flag_id}")
    notes = body.get("notes")
    if notes is not None and not isinstance(notes, str):
        raise BadRequest("notes must be text")
    if action == "reopen":
        return store.reopen(flag_id)
    if action == "resolve":
        return store.resolve(flag_id, (notes or "").strip() or None)
    if not (notes or "").strip():
        raise BadRequest("notes are empty")
    return store.note(flag_id, (notes or "").strip())


# -- bench comparison
# -----------------------------------------------------------------------------------------------


def bench_runs(home: Home) -> list[dict[str, Any]]:
    from cli.bench import runs_doc

    return runs_doc(home)


def bench_compare(home: Home, params: dict[str, str]) -> dict[str, Any]:
    """Runs (?runs=a,b — looked up among the runs) joined by custom_id; rows paged with
    ?offset=&limit=."""
    from cli.bench import compare_doc, comparison
    from daemon.bench.state import list_runs

    # (runs_doc would also count every result)
    known = {info.name for _, info in list_runs(home.bench_root)}
    runs = [r for r in (params.get("runs") or "").split(",") if r]
    if len(runs) < 2:
        raise BadRequest("pick two or more runs")
    missing = [r for r in runs if r not in known]
    if missing:
        raise NotFound(f"no bench run {missing[0]}")
    for key in ("label_regex", "name_regex"):
        if params.get(key):
            from daemon.config import regex_problem

            problem = regex_problem(params[key])
            if problem:
                raise BadRequest(f"{key} is not a valid regular expression: {problem}")
    c = comparison(
        home, runs, params.get("label_regex"), params.get("name_field"), params.get("name_regex")
    )
    doc = compare_doc(c, params.get("diff_only") in ("1", "true"))
    search = (params.get("q") or "").strip().lower()
    if search:  # rows whose name, reference or any answer holds the text
        doc["rows"] = [
            r
            for r in doc["rows"]
            if search
            in json.dumps(
                [
                    r.get("name"),
                    r.get("reference"),
                    *((r[run] or {}).get("answer") for run in runs),
                ],
                ensure_ascii=False,
            ).lower()
        ]
    offset, limit = _int(params, "offset", 0) or 0, _int(params, "limit", 200) or 200
    doc["total_rows"] = len(doc["rows"])
    doc["disagreements"] = c.disagreements
    doc["rows"] = doc["rows"][offset : offset + limit]
    doc["offset"] = offset
    prompts = _prompts(home, runs, {r["custom_id"] for r in doc["rows"]})
    for r in doc["rows"]:
        r["prompt"] = prompts.get(r["custom_id"])
    return doc


def _prompts(home: Home, runs: list[str], ids: set[str]) -> dict[str, str]:
    """The conversation each of `ids` asked, as `role: text` lines, from the prompt file of the
    first run that still has one (a run keeps the path of the file it answered)."""
    from daemon.bench.prompts import iter_prompts
    from daemon.bench.state import load_run
    from daemon.chat.answers import answer_of_message

    for name in runs:
        info = load_run(home.bench_dir(name))
        path = Path(info.prompts_path) if info is not None and info.prompts_path else None
        if path is None or not path.is_file():
            continue
        out = {}
        for p in iter_prompts(path):
            if p.custom_id in ids:
                out[p.custom_id] = "\n".join(
                    f"{m.get('role')}: "
                    f"{answer_of_message(m) if m.get('role') == 'assistant' else m.get('content')}"
                    for m in p.messages
                )
        return out
    return {}


# -- evolution
# -------------------------------------------------------------------------------------------------


def evolution(home: Home, params: dict[str, str]) -> dict[str, Any]:
    """The snapshot curve, the cartography of every training example, the probe examples (?class=,
    ?sort=)."""
    from cli.evolution import CLASSES, default_sort, pick_sources, show_doc
    from daemon.runs.dynamics import SORTS

    cls = params.get("class") or None
    sort = params.get("sort") or None
    if cls is not None and cls not in CLASSES:
        raise BadRequest(f"class must be one of {', '.join(CLASSES)}")
    if sort is not None and sort not in SORTS:
        raise BadRequest(f"sort must be one of {', '.join(SORTS)}")
    dataset = params.get("dataset") or None
    try:
        dyn, evo = pick_sources(home, dataset)
    except TrainctlError as exc:
        raise NotFound(str(exc)) from None
    return show_doc(dyn, evo, cls, sort or default_sort(dyn), _int(params, "limit", 0) or 0)


def evolution_example(home: Home, params: dict[str, str]) -> dict[str, Any]:
    from cli.evolution import example_doc, find_example, pick_sources

    if not params.get("id"):
        raise BadRequest("id is missing")
    try:
        dyn, evo = pick_sources(home, params.get("dataset") or None)
        return example_doc(*find_example(dyn, evo, params["id"]))
    except TrainctlError as exc:
        raise NotFound(str(exc)) from None


# -- rejections
# -------------------------------------------------------------------------------------------------


def datasets(home: Home) -> list[str]:
    """Curated datasets, newest first."""
    if not home.datasets.is_dir():
        return []
    found = [d for d in home.datasets.iterdir() if d.is_dir() and (d / "stats.json").exists()]
    return [d.name for d in sorted(found, key=lambda d: d.stat().st_mtime, reverse=True)]


def rejected(home: Home, params: dict[str, str]) -> dict[str, Any]:
    """`trainctl rejected --json` for ?dataset=NAME (one of `datasets`), default the newest."""
    from daemon.curation.rejects import analyse

    names = datasets(home)
    if not names:
        raise NotFound("no curated dataset yet")
    name = params.get("dataset") or names[0]
    if name not in names:
        raise NotFound(f"no dataset {name}")
    doc = analyse(home.datasets / name, params.get("reason") or None).to_dict()
    doc["dataset_name"] = name
    return doc
