"""The CLI through Typer's CliRunner: exit codes, one-line errors, and no torch in read-only
commands."""

import json
import re
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from cli.app import app
from daemon.home import Home
from daemon.jobs import JobQueue, JobState
from tests.helpers import ROOT, bench_run_on_disk, write_dynamics, write_probe_snapshots

# CliRunner has no terminal: a wide console keeps Rich from folding table cells mid-phrase
pytestmark = pytest.mark.usefixtures("wide_console")

runner = CliRunner()


def test_status_on_a_fresh_home(tmp_path):
    r = runner.invoke(app, ["status", "--home", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert "never started" in r.output and "queue" in r.output


def test_status_json_shows_training_fields(tmp_path):
    h = Home.open(tmp_path)
    h.training_status.write_text(
        json.dumps(
            {
                "state": "training",
                "job_id": 3,
                "current_step": 40,
                "total_steps": 100,
                "loss": 1.25,
                "learning_rate": 1e-3,
                "tokens_per_sec": 900.0,
                "eta_seconds": 61,
            }
        )
    )
    r = runner.invoke(app, ["status", "--home", str(tmp_path), "--json"])
    assert r.exit_code == 0
    doc = json.loads(r.output)
    assert doc["training"]["current_step"] == 40 and doc["daemon"]["status"] == "never started"
    r = runner.invoke(app, ["status", "--home", str(tmp_path)])
    assert "40/100" in r.output and "1.2500" in r.output and "1m01s" in r.output


def test_queue_lists_jobs_with_their_errors(tmp_path):
    h = Home.open(tmp_path)
    with JobQueue(h.jobs_db) as q:
        j = q.enqueue("bad.jsonl", h.inbox / "bad.jsonl", "s")
        q.transition(j.id, JobState.FAILED, error="bad.jsonl is empty")
        q.enqueue("good.jsonl", h.inbox / "good.jsonl", "t")
    r = runner.invoke(app, ["queue", "--home", str(tmp_path)])
    assert r.exit_code == 0
    assert "bad.jsonl is empty" in r.output and "queued" in r.output
    # At 80 columns: one line a job, nothing folded; the long error is cut with … in its row and
    # said whole under the table. --wide has every column.
    with JobQueue(h.jobs_db) as q:
        long = q.enqueue("customer_support_conversations_2026_q4.jsonl", h.inbox / "c.jsonl", "u")
        error = "curation failed: " + "a very long explanation of what went wrong " * 3
        q.transition(long.id, JobState.FAILED, error=error, dataset_dir=str(h.datasets / "c_1"))
    from cli.common import console

    was = console.width
    console.width = 80
    try:
        r = runner.invoke(app, ["queue", "--home", str(tmp_path)])
    finally:
        console.width = was
    lines = r.output.splitlines()
    assert r.exit_code == 0 and max(len(x) for x in lines) <= 80
    (row,) = [x for x in lines if x.strip().startswith("3 ")]
    assert "failed" in row and "customer_support" in row and row.rstrip().endswith("…")
    assert error.strip() in " ".join(r.output.split()) and "c_1" not in r.output
    wide = runner.invoke(app, ["queue", "--home", str(tmp_path), "--wide"])
    assert "datasets/c_1" in wide.output and "dataset / adapter" in wide.output
    rows = json.loads(runner.invoke(app, ["queue", "--home", str(tmp_path), "--json"]).output)
    assert [x["state"] for x in rows] == ["failed", "queued", "failed"]


def test_user_mistakes_are_one_red_line_and_exit_1(tmp_path):
    for args in (["train", str(tmp_path / "missing.jsonl")], ["stop"], ["curate", str(tmp_path)]):
        r = runner.invoke(app, [*args, "--home", str(tmp_path)])
        assert r.exit_code == 1, (args, r.output)
        assert r.output.strip().startswith("Error:"), r.output
        assert "Traceback" not in r.output and len(r.output.strip().splitlines()) <= 2


def test_bad_settings_are_reported_all_at_once_by_the_cli(tmp_path):
    Home(tmp_path).settings_file.write_text("[train]\nlr = -1\nbatch_size = 0\n")
    (tmp_path / "f.jsonl").write_text('{"text": "x"}\n')
    r = runner.invoke(app, ["train", str(tmp_path / "f.jsonl"), "--home", str(tmp_path)])
    assert r.exit_code == 1
    assert "2 problem(s)" in r.output and "train.lr" in r.output and "train.batch_size" in r.output


def test_any_setting_is_a_set_flag_and_bad_ones_are_all_reported(tmp_path):
    (tmp_path / "f.jsonl").write_text('{"text": "x"}\n')
    r = runner.invoke(
        app,
        [
            "train",
            str(tmp_path / "f.jsonl"),
            "--home",
            str(tmp_path),
            "--set",
            "train.warmup_ratio=2",
            "--set",
            "curation.val_fraction=0.99",
            "--lr",
            "-1",
        ],
    )
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "3 problem(s)" in r.output, r.output
    for name in ("train.warmup_ratio", "curation.val_fraction", "train.lr"):
        assert name in r.output, name
    for bad in ("train.warmup_ratio", "nosuch.key=1"):
        r = runner.invoke(
            app, ["train", str(tmp_path / "f.jsonl"), "--home", str(tmp_path), "--set", bad]
        )
        assert r.exit_code == 1 and r.output.startswith("Error:") and "--set" in r.output, r.output


def test_set_reaches_the_curation_a_command_runs(tmp_path):
    rows = [
        {"prompt": f"question number {i}", "completion": f"answer number {i} is here"}
        for i in range(40)
    ]
    (tmp_path / "f.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    r = runner.invoke(
        app,
        [
            "curate",
            str(tmp_path / "f.jsonl"),
            "--home",
            str(tmp_path),
            "--model",
            "builtin:tiny",
            "--set",
            "curation.val_fraction=0.5",
            "--set",
            "curation.test_fraction=0",
        ],
    )
    assert r.exit_code == 0, r.output
    split = re.search(r"train (\d+), val (\d+), test (\d+)", r.output)
    assert split and int(split[3]) == 0 and 10 <= int(split[2]) <= 30, r.output


def test_read_only_commands_and_the_ui_import_no_torch(curated_home):
    tmp_path = curated_home.root
    bench_run_on_disk(curated_home, "a", ["Yes", "No", "Yes"])
    bench_run_on_disk(curated_home, "b", ["Yes", "Yes", "Yes"])
    write_probe_snapshots(curated_home, "mixed_x", "q")
    # Per-example dynamics of a run over the curated dataset's train split
    (ds,) = curated_home.datasets.iterdir()
    curated_home.run_dir(1).mkdir(parents=True)
    write_dynamics(curated_home.run_dir(1), ds)
    curated_home.logs.mkdir(parents=True, exist_ok=True)
    curated_home.daemon_log.write_text("12:00:00 watching inbox\n")
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from cli.app import app\n"
        "for cmd in (['status'], ['status', '--json'], ['queue'], ['rejected', '--latest'],\n"
        "            ['rejected', '--latest', '--json'], ['flags'], ['flags', 'trend'],\n"
        "            ['flags', '--stats'], ['bench', 'list'], ['bench', 'list', '--json'],\n"
        "            ['bench', 'compare', 'a', 'b'],\n"
        "            ['bench', 'compare', 'a', 'b', '--label-regex', '(Yes|No)', '--json'],\n"
        "            ['evolution'], ['evolution', '--json'],\n"
        "            ['evolution', '--example', 'ex_000'], ['evolution', '--sort', 'aum'],\n"
        "            ['evolution', '--probe'], ['evolution', 'mixed', '--class', 'hard'],\n"
        "            ['evolution', 'export', '--out', 'clean.jsonl'], ['logs'],\n"
        "            ['service', 'install', '--print']):\n"
        f"    r = CliRunner().invoke(app, cmd + ['--home', {str(tmp_path)!r}])\n"
        "    assert r.exit_code == 0, r.output\n"
        # trainctl ui: the server and every page and endpoint it serves
        "import urllib.request\n"
        "from cli.web.server import PAGES, serve\n"
        "from daemon.home import Home\n"
        f"s = serve(Home.open({str(tmp_path)!r}), '127.0.0.1', 0, None)\n"
        "for path in [*PAGES, '/api/status', '/api/queue', '/api/flags', '/api/bench/runs',\n"
        "             '/api/datasets',\n"
        "             '/api/bench/compare?runs=a,b', '/api/evolution', '/api/rejected']:\n"
        "    urllib.request.urlopen(s.url.rstrip('/') + path, timeout=30).read()\n"
        "s.shutdown()\n"
        "heavy = [m for m in ('torch', 'transformers', 'peft') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert "HEAVY []" in out.stdout, out.stdout + out.stderr


def test_rejected_shows_reasons_closest_histogram_and_advice(curated_home):
    r = runner.invoke(app, ["rejected", "--latest", "--home", str(curated_home.root)])
    assert r.exit_code == 0, r.output
    out = r.output
    assert "4 of 10 records rejected (40.0%)" in out
    for piece in (
        "low_quality",
        "duplicate",
        "invalid_json",
        "closest to passing",
        "by domain",
        "junk",
        "recommendations",
        "0.0–0.1",
    ):
        assert piece in out, piece
    assert "trainctl rejected accept --min-score" in out or "weakest component" in out
    r = runner.invoke(
        app,
        [
            "rejected",
            "--latest",
            "--reason",
            "duplicate",
            "--json",
            "--home",
            str(curated_home.root),
        ],
    )
    data = json.loads(r.output)
    assert (
        data["by_reason"] == {"duplicate": 1}
        and data["shown"] == 1
        and data["total_rejected"] == 4
    )


def test_rejected_accept_recovers_into_the_inbox_and_they_pass_next_time(curated_home):
    from daemon.config import CurationConfig, TrainConfig
    from daemon.curation.curator import Curator

    h = curated_home
    r = runner.invoke(
        app,
        [
            "rejected",
            "accept",
            "--min-score",
            "0.3",
            "--latest",
            "--to-inbox",
            "--home",
            str(h.root),
        ],
    )
    assert r.exit_code == 0, r.output
    files = list(h.inbox.glob("*.jsonl"))
    assert len(files) == 1 and "recovered" in files[0].name
    recs = [json.loads(x) for x in files[0].read_text().splitlines()]
    assert recs and all(
        x["quality_override"] is True and "rejection_reason" not in x for x in recs
    )
    res = Curator(
        CurationConfig(min_quality=0.7, val_fraction=0, test_fraction=0), TrainConfig()
    ).run(files[0], h.datasets / "again")
    assert res.total_accepted == len(recs)
    # A second accept does not overwrite the first file.
    ds = h.datasets / "mixed_20260101_000000"
    r = runner.invoke(
        app,
        ["rejected", "accept", str(ds), "--min-score", "0.3", "--to-inbox", "--home", str(h.root)],
    )
    assert r.exit_code == 0, r.output
    assert len(list(h.inbox.glob("*.jsonl"))) == 2


@pytest.mark.parametrize(
    "args, says",
    [
        (["rejected", "accept", "--latest"], "needs --min-score"),
        (["rejected", "accept", "--min-score", "0.99", "--latest"], "no quality reject"),
        (["rejected", "--latest", "--min-score", "0.3"], "belong to `trainctl rejected accept`"),
        (["rejected", "nowhere"], "not a curated dataset"),
        (["rejected"], "pass its PATH or --latest"),
    ],
)
def test_rejected_mistakes_are_one_red_line(curated_home, args, says):
    r = runner.invoke(app, args + ["--home", str(curated_home.root)])
    assert r.exit_code == 1 and says in r.output and "Traceback" not in r.output, r.output


@pytest.mark.parametrize(
    "args, says",
    [
        (["evolution"], "no evolution yet"),
        (["evolution", "export", "--to-inbox"], "no per-example dynamics"),
        (["evolution", "export"], "give --out FILE or --to-inbox"),
        (["evolution", "export", "--to-inbox", "--without", "weird"], "unknown --without 'weird'"),
        (["evolution", "--sort", "size"], "unknown sort 'size'"),
    ],
)
def test_evolution_mistakes_are_one_red_line(curated_home, args, says):
    r = runner.invoke(app, args + ["--home", str(curated_home.root)])
    assert r.exit_code == 1 and says in r.output and "Traceback" not in r.output, r.output


def test_imports_run_one_way_app_to_commands_to_common():
    """cli/app.py registers the command modules; no command module imports the app (no import
    circle), and nothing under daemon/ imports cli/."""
    import ast

    from tests.helpers import ROOT

    def imported(path):
        tree = ast.parse(path.read_text())
        names = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
        return names

    for path in (ROOT / "cli").glob("*.py"):
        if path.name not in ("app.py", "__main__.py"):
            assert "cli.app" not in imported(path), f"{path.name} imports cli.app"
    for path in (ROOT / "daemon").rglob("*.py"):
        assert not any(n == "cli" or n.startswith("cli.") for n in imported(path)), (
            f"{path} imports cli"
        )
