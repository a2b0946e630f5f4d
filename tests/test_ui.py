"""`trainctl ui`: every endpoint over a fixture home, the incremental metrics offset, unknown
names, traversal attempts, the tokens; then the pages in a real headless Chromium over a home where
a real job trains."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from daemon.home import Home
from daemon.jobs import JobQueue
from daemon.runs.flag_store import FlagStore
from tests.helpers import (
    DEMO,
    ROOT,
    bench_run_on_disk,
    wait_for,
    write_dynamics,
    write_probe_snapshots,
)

XSS = '<img src=x onerror="window.pwned=1"><script>window.pwned=1</script>'


def _metric_row(step: int) -> str:
    return (
        json.dumps(
            {
                "current_step": step,
                "loss": 2.0 / step,
                "learning_rate": 1e-3,
                "grad_norm": 1.0,
                "tokens_per_sec": 100.0,
                "fixed_eval_step": step - step % 2,
                "fixed_eval_em": 0.5,
                "fixed_eval_ece": 0.1,
            }
        )
        + "\n"
    )


@pytest.fixture
def ui_home(curated_home):  # noqa: F811 - the imported fixture
    h: Home = curated_home
    bench_run_on_disk(h, "a", ["Yes", "No", XSS])
    bench_run_on_disk(h, "b", ["Yes", "Yes", XSS])
    with JobQueue(h.jobs_db) as q:
        job = q.enqueue("mixed.jsonl", h.inbox_processing / "x", "sha")
    run = h.run_dir(job.id)
    run.mkdir(parents=True)
    (run / "metrics.jsonl").write_text("".join(_metric_row(s) for s in (1, 2, 3)))
    (run / "alerts.jsonl").write_text(
        json.dumps(
            {
                "event": "fired",
                "step": 2,
                "id": "loss_spike",
                "severity": "warning",
                "message": "m",
                "recommendation": "r",
            }
        )
        + "\n"
    )
    (h.status_dir / "training_status.json").write_text(
        json.dumps({"job_id": job.id, "state": "training", "current_step": 3, "total_steps": 10})
    )
    # Probe snapshots and per-example dynamics of the curated dataset
    (ds,) = h.datasets.iterdir()
    write_probe_snapshots(h, ds.name, XSS)
    write_dynamics(run, ds)
    FlagStore(h.flagged_file).add(
        [
            {
                "reason": "mismatch",
                "step": 2,
                "loss": 1.5,
                "file": "mixed.jsonl",
                "prompt": XSS,
                "golden": "abc",
                "output": "abd",
                "job": 1,
            },
            {
                "reason": "high_loss",
                "step": 2,
                "loss": 3.0,
                "file": "other.jsonl",
                "prompt": "p",
                "golden": "x",
                "output": "x",
            },
        ]
    )
    return h


@pytest.fixture
def server(ui_home):
    from cli.web.server import serve

    s = serve(ui_home, "127.0.0.1", 0, None)
    yield s
    s.shutdown()
    s.server_close()


def _req(url: str, method: str = "GET", body: dict | None = None, headers: dict | None = None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


def _json(url: str, **kw):
    status, body, _ = _req(url, **kw)
    return status, json.loads(body)


def test_every_endpoint_answers_from_the_same_readers_as_the_cli(server, ui_home):
    base = server.url
    st, doc = _json(base + "api/status")
    assert (
        st == 200 and doc["training"]["job_id"] == 1 and doc["devices"]["kind"] in ("cpu", "gpu")
    )
    assert _json(base + "api/queue")[1][0]["file_name"] == "mixed.jsonl"
    assert [e["id"] for e in _json(base + "api/alerts?job=1")[1]["events"]] == ["loss_spike"]
    flags = _json(base + "api/flags")[1]
    assert [f["id"] for f in flags["flags"]] == [2, 1] and flags["files"] == [
        "mixed.jsonl",
        "other.jsonl",
    ]
    assert [f["id"] for f in _json(base + "api/flags?reason=high_loss")[1]["flags"]] == [2]
    assert [f["id"] for f in _json(base + "api/flags?file=mixed.jsonl")[1]["flags"]] == [1]
    assert [f["id"] for f in _json(base + "api/flags?sort=lowest-loss")[1]["flags"]] == [1, 2]
    assert {r["name"] for r in _json(base + "api/bench/runs")[1]} == {"a", "b"}
    cmp = _json(base + "api/bench/compare?runs=a,b")[1]
    assert cmp["total_rows"] == 3 and cmp["disagreements"] == 1 and cmp["pairs"][0]["agree"] == 2
    assert [
        r["custom_id"] for r in _json(base + "api/bench/compare?runs=a,b&diff_only=1")[1]["rows"]
    ] == ["q1"]
    paged = _json(base + "api/bench/compare?runs=a,b&offset=1&limit=1")[1]
    assert [r["custom_id"] for r in paged["rows"]] == ["q1"] and paged["total_rows"] == 3
    evo = _json(base + "api/evolution")[1]
    assert [c["step"] for c in evo["curve"]] == [0, 10] and evo["examples"] and evo["classes"]
    assert _json(base + "api/evolution?class=hard")[1]["examples"] == [
        e for e in evo["examples"] if e["class"] == "hard"
    ]
    one = _json(base + "api/evolution/example?id=ex_000")[1]
    assert [c["model_output"] for c in one["probe"]["curve"]] == ["b", "a"]
    assert one["probe"]["input"] == XSS
    assert _req(base + "api/evolution/example?id=nope")[0] == 404
    assert _req(base + "api/evolution?class=weird")[0] == 400
    (ds,) = _json(base + "api/datasets")[1]
    rej = _json(base + "api/rejected?dataset=" + ds)[1]
    assert rej["total_rejected"] > 0 and rej["by_reason"] and rej["recommendations"]
    # The same numbers as the terminal command's --json
    from typer.testing import CliRunner

    from cli.app import app

    out = (
        CliRunner()
        .invoke(app, ["rejected", "--latest", "--json", "--home", str(ui_home.root)])
        .output
    )
    assert json.loads(out)["by_reason"] == rej["by_reason"]
    # The job page's document: its evaluations, figures with their sets, checkpoints; curves to lay
    # over
    job = _json(base + "api/job?id=1")[1]
    assert [e["step"] for e in job["evaluations"]] == [0, 2] and job["flags"]["total"] == 1
    assert (
        job["figures"][0]["set"].endswith("val examples (the fixed set)")
        and job["checkpoints"] == []
    )
    curves = _json(base + "api/overlay?jobs=1")[1]
    assert [s for s, _ in curves["1"]["loss"]] == [1, 2, 3] and curves["1"]["exact_match"] == [
        [0, 0.5],
        [2, 0.5],
    ]
    assert _req(base + "api/job?id=7")[0] == 404 and _req(base + "api/overlay?jobs=1,x")[0] == 400
    searched = _json(base + "api/bench/compare?runs=a,b&q=no")[1]
    assert [r["custom_id"] for r in searched["rows"]] == ["q1"]  # "No" in run a's answer
    assert _json(base + "api/flags?count=1")[1] == {"stats": flags["stats"]}
    for page in (
        "",
        "flags",
        "compare",
        "evolution",
        "rejected",
        "jobs/1",
        "static/app.js",
        "static/job.js",
        "static/uPlot.iife.min.js",
    ):
        status, body, headers = _req(base + page)
        assert status == 200 and body, page
        assert "script-src 'self'" in headers["Content-Security-Policy"]


def test_metrics_come_incrementally_from_an_offset(server, ui_home):
    base = server.url
    first = _json(base + "api/metrics?job=1")[1]
    assert [r["current_step"] for r in first["rows"]] == [1, 2, 3] and not first["more"]
    metrics = ui_home.run_dir(1) / "metrics.jsonl"
    with open(metrics, "a") as fh:
        # a row being written
        fh.write(_metric_row(4) + _metric_row(5) + '{"current_step": 6, "lo')
    second = _json(base + f"api/metrics?job=1&offset={first['offset']}")[1]
    assert [r["current_step"] for r in second["rows"]] == [4, 5]  # only the new complete rows
    with open(metrics, "a") as fh:
        fh.write('ss": 0.3}\n')
    third = _json(base + f"api/metrics?job=1&offset={second['offset']}")[1]
    assert [r["current_step"] for r in third["rows"]] == [6]
    assert third["offset"] == metrics.stat().st_size
    # A new run of the job (the file started again, shorter): the page is told to start over
    metrics.write_text(_metric_row(1))
    again = _json(base + f"api/metrics?job=1&offset={third['offset']}")[1]
    assert again["reset"] and [r["current_step"] for r in again["rows"]] == [1]
    assert _json(base + "api/metrics")[1]["job"] == 1  # the job training_status.json is about


def test_unknown_names_and_traversal_attempts_are_404(server, ui_home):
    base = server.url
    secret = ui_home.root.parent / "secret.txt"
    secret.write_text("do not serve")
    for path in (
        "api/metrics?job=99",
        "api/alerts?job=99",
        "api/rejected?dataset=nope",
        "api/rejected?dataset=../../secret.txt",
        "api/bench/compare?runs=a,zzz",
        "api/bench/compare?runs=a,../b",
        "static/../server.py",
        "static/%2e%2e/server.py",
        "static/..%2fapi.py",
        "..%2f..%2fsecret.txt",
        "static/",
        "nothing",
        "api/nothing",
    ):
        status, body, _ = _req(base + path)
        assert status == 404, (path, status, body)
        assert b"do not serve" not in body and b"import" not in body
    assert _req(base + "api/metrics?job=abc")[0] == 400
    assert _req(base + "api/flags?state=weird")[0] == 400
    assert _req(base + "api/bench/compare?runs=a")[0] == 400
    assert _req(base + "api/bench/compare?runs=a,b&label_regex=(")[0] == 400
    # Not on loopback by name: refused (DNS rebinding)
    assert _req(base + "api/status", headers={"Host": "evil.example:80"})[0] == 403


def test_writes_need_the_session_token_and_persist(server, ui_home):
    base = server.url
    token = _json(base + "api/session")[1]["write_token"]
    assert _req(base + "api/flags/1/resolve", "POST", {"notes": "n"})[0] == 403
    assert _req(base + "api/flags/1/resolve", "POST", {}, {"X-Trainctl-Write": "wrong"})[0] == 403
    cross = {"X-Trainctl-Write": token, "Origin": "http://evil.example"}
    assert _req(base + "api/flags/1/resolve", "POST", {}, cross)[0] == 403
    ok = {"X-Trainctl-Write": token, "Content-Type": "application/json"}
    assert _req(base + "api/flags/9/resolve", "POST", {}, ok)[0] == 404
    assert _req(base + "api/flags/1/notes", "POST", {"notes": ""}, ok)[0] == 400
    assert _req(base + "api/flags/1/notes", "POST", {"notes": "looked at it"}, ok)[0] == 200
    assert _req(base + "api/flags/1/resolve", "POST", {"notes": "fixed the label"}, ok)[0] == 200
    (flag,) = [f for f in FlagStore(ui_home.flagged_file).load() if f["id"] == 1]
    assert flag["resolved"] and flag["notes"] == "looked at it; fixed the label"
    assert _req(base + "api/flags/1/reopen", "POST", {}, ok)[0] == 200
    assert not next(f for f in FlagStore(ui_home.flagged_file).load() if f["id"] == 1)["resolved"]
    assert _req(base + "api/status", "POST", {}, ok)[0] == 404  # nothing else is writable


def test_an_access_token_guards_every_request_when_set(ui_home):
    from cli.web.server import serve

    s = serve(ui_home, "127.0.0.1", 0, "s3cret")
    try:
        assert _req(s.url + "api/status")[0] == 401
        assert _req(s.url)[0] == 401
        assert _req(s.url + "api/status", headers={"Authorization": "Bearer wrong"})[0] == 401
        assert _req(s.url + "api/status", headers={"Authorization": "Bearer s3cret"})[0] == 200
        # The first visit with ?token= puts it in the cookie and sends the page to its address
        # without it
        status, headers = _first_hop(s.url + "flags?token=s3cret&state=all")
        assert status == 303 and headers["Location"] == "/flags?state=all"
        assert "trainctl_token=s3cret" in headers["Set-Cookie"]
        assert "HttpOnly" in headers["Set-Cookie"] and "SameSite=Strict" in headers["Set-Cookie"]
        assert (
            _req(s.url + "flags?state=all", headers={"Cookie": "trainctl_token=s3cret"})[0] == 200
        )
        assert _req(s.url + "api/status", headers={"Cookie": "trainctl_token=s3cret"})[0] == 200
        # an API call is answered, not redirected
        assert _req(s.url + "api/status?token=s3cret")[0] == 200
    finally:
        s.shutdown()
        s.server_close()


def _first_hop(url: str) -> tuple[int, dict]:
    """The status and headers of one request, a redirect not followed."""

    class Stay(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    try:
        with urllib.request.build_opener(Stay).open(url, timeout=10) as r:
            return r.status, dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers)


def _start_ui(home: Path, *args: str) -> tuple[subprocess.Popen, str]:
    p = subprocess.Popen(
        [sys.executable, "-m", "cli", "ui", "--home", str(home), "--port", "0", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    line = p.stdout.readline()
    m = re.search(r"(http://\S+)", line)
    assert m, line + (p.stdout.read() if p.poll() is not None else "")
    return p, m.group(1)


def test_ui_refuses_a_busy_port_in_one_line_and_needs_a_token_beyond_loopback(home):
    p, url = _start_ui(home)
    try:
        port = url.rsplit(":", 1)[1].strip("/")
        r = subprocess.run(
            [sys.executable, "-m", "cli", "ui", "--home", str(home), "--port", port],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert r.returncode == 1 and "cannot listen" in r.stderr and "Traceback" not in r.stderr
    finally:
        p.send_signal(signal.SIGINT)
        p.wait(10)
    p, url = _start_ui(home, "--token", "t0ken")  # tests listen on loopback only
    try:
        assert url.endswith("/?token=t0ken")
        assert _req(url.split("?")[0] + "api/status")[0] == 401
        assert (
            _req(url.split("?")[0] + "api/status", headers={"Authorization": "Bearer t0ken"})[0]
            == 200
        )
    finally:
        p.send_signal(signal.SIGINT)
        p.wait(10)


def test_network_mode_prints_addresses_another_machine_can_open():
    """`--host 0.0.0.0` prints this machine's reachable addresses with the token, never 0.0.0.0."""
    from cli.ui import machine_addresses, usable_urls

    urls = usable_urls("0.0.0.0", 8080, "abc")
    assert (
        urls
        and all(u.endswith(":8080/?token=abc") for u in urls)
        and not any("0.0.0.0" in u for u in urls)
    )
    if machine_addresses():  # a machine with no network but loopback has nothing else to print
        assert not any("127.0.0.1" in u or "[::1]" in u for u in urls)
    assert usable_urls("192.168.1.7", 9000, None) == ["http://192.168.1.7:9000/"]


# -- in a real browser
# ------------------------------------------------------------------------------------------------


def _browser():
    """Debian's chromium driven by playwright (never `playwright install`). Skipped where neither
    is installed, except under CI (TRAINCTL_REQUIRE_BROWSER=1), where a missing browser fails."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    if exe is None or sync_playwright is None:
        if os.environ.get("TRAINCTL_REQUIRE_BROWSER") == "1":
            pytest.fail(
                "chromium and playwright are needed: apt-get "
                "install -y chromium; pip install playwright"
            )
        pytest.skip(
            "no chromium/playwright here (apt-get install -y chromium; pip install playwright)"
        )
    return sync_playwright, exe


class Page:
    """A headless Chromium tab that records every JavaScript error and console error."""

    def __init__(self, browser):
        self.page = browser.new_page(viewport={"width": 1300, "height": 900})
        self.errors: list[str] = []
        self.page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        self.page.on(
            "console",
            lambda m: self.errors.append(f"console: {m.text}") if m.type == "error" else None,
        )
        self.page.on("dialog", lambda d: (self.errors.append(f"dialog: {d.message}"), d.dismiss()))


def _loss_rows(run: Path) -> int:
    try:
        lines = run.joinpath("metrics.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return 0
    return sum(1 for x in lines if '"loss"' in x and json.loads(x).get("loss") is not None)


@pytest.mark.slow
@pytest.mark.browser
def test_pages_in_a_browser_while_a_real_job_trains(home, daemons):
    sync_playwright, exe = _browser()
    from tests.helpers import bench_run_on_disk as bench_run

    h = Home.open(home)
    golden = ["Yes", "Yes", "No", "Maybe"]
    bench_run(h, "base", ["Yes", "No", XSS, "Maybe"], golden)
    bench_run(h, "tuned", ["Yes", "Yes", XSS, "Maybe"], golden, cut=frozenset({2}))
    d = daemons(home, "--epochs", "12", "--save-steps", "500")
    (Home(home).inbox / "demo.jsonl").write_bytes(DEMO.read_bytes())
    run = h.run_dir(1)
    wait_for(lambda: _loss_rows(run) >= 5, 120, "training to log steps")
    ui, url = _start_ui(home)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=exe, args=["--no-sandbox"])
            tab = Page(browser)
            p = tab.page
            p.goto(url)
            # The loss chart: one point per metrics row with a loss, and it grows while the job
            # trains
            p.wait_for_function(
                "() => +document.getElementById('loss-chart').dataset.points > 0", timeout=20_000
            )
            before = int(p.get_attribute("#loss-chart", "data-points"))
            assert before <= _loss_rows(run)
            p.wait_for_function(
                f"() => +document.getElementById('loss-chart').dataset.points > {before + 5}",
                timeout=30_000,
            )
            assert p.locator("#loss-chart canvas").count() >= 1
            # Every axis has its title; steps are whole numbers; EM and ECE have an axis each
            axes = p.evaluate(
                "() => Object.fromEntries(Object.entries(trainctl.charts).map(([k, "
                "c]) => [k, c.axes.map((a) => a.label)]))"
            )
            assert axes["loss"] == ["step", "CE (nats/token)"], axes
            assert axes["ev"] == ["step", "exact match (%)", "calibration error (ECE)"], axes
            assert all(labels[0] == "step" and all(labels) for labels in axes.values()), axes
            ticks = p.evaluate("() => trainctl.charts.loss.axes[0]._values")
            assert ticks and all(t.isdigit() for t in ticks), ticks
            wait_for(
                lambda: json.loads(Home(home).training_status.read_text())["state"] == "done",
                300,
                "the job to finish",
            )
            rows = _loss_rows(run)
            p.wait_for_function(
                f"() => +document.getElementById('loss-chart').dataset.points === {rows}",
                timeout=20_000,
            )
            p.wait_for_function(
                "() => document.getElementById('jobs').innerText.includes('done')", timeout=30_000
            )

            # Flagged examples: the job's open flags are its last evaluation's mistakes (the rest
            # resolved as the model learned them); the filter changes the rows; resolving persists
            # to the flags file
            store = FlagStore(h.flagged_file)
            status = json.loads(Home(home).training_status.read_text())
            wrong = round((1 - status["fixed_eval_em"]) * status["fixed_eval_examples"])
            assert (
                len(store.query("mismatch", job=1)) == wrong
                and store.stats(job=1)["total"] > wrong
            )
            store.add(
                [
                    {
                        "reason": "manual",
                        "prompt": XSS,
                        "golden": "the right answer",
                        "output": "the wrong answer",
                        "file": "demo.jsonl",
                    },
                    {
                        "reason": "high_loss",
                        "prompt": "q",
                        "golden": "a",
                        "output": "a",
                        "loss": 4.2,
                        "file": "demo.jsonl",
                    },
                ]
            )
            p.goto(url.rstrip("/") + "/flags")
            p.wait_for_selector("#flag-list table")
            everything = p.locator("#flag-list tbody tr").count()
            open_flags = [f for f in store.load() if not f.get("resolved")]
            assert everything == len(open_flags) > 1
            p.select_option("#reason", "manual")
            p.wait_for_function(
                "() => document.querySelectorAll('#flag-list tbody tr').length === 1"
            )
            assert XSS in p.locator("#flag-list tbody tr").inner_text()  # shown as text, not run
            # the differing words, marked: the output's in yellow, the golden answer's it lacks
            # struck through
            assert p.locator("#flag-list tbody mark:not(.del)").inner_text() == "wrong"
            assert p.locator("#flag-list tbody mark.del").inner_text() == "right"
            manual_id = next(f["id"] for f in store.load() if f["reason"] == "manual")
            p.fill(f"#notes-{manual_id}", "checked by hand")
            p.click("button.resolve")
            p.wait_for_function(
                "() => document.querySelector('#flag-list').innerText.includes('no flag matches')"
            )
            (flag,) = [f for f in FlagStore(h.flagged_file).load() if f["id"] == manual_id]
            assert flag["resolved"] and flag["notes"] == "checked by hand"
            p.select_option("#state", "resolved")  # ... and reopened from the page
            p.click(f'button.reopen[data-id="{manual_id}"]')
            p.wait_for_function(
                "() => !document.querySelector('#flag-list').innerText.includes('checked by hand')"
            )
            assert not next(f for f in FlagStore(h.flagged_file).load() if f["id"] == manual_id)[
                "resolved"
            ]

            # The job page: its figures name their set, and every kept checkpoint has a row and its
            # command
            p.goto(url.rstrip("/") + "/jobs/1")
            p.wait_for_selector("#checkpoints table")
            from daemon.runs.checkpoints import complete_checkpoint_steps

            kept = complete_checkpoint_steps(run / "checkpoints")
            rows = p.locator("#checkpoints tbody tr")
            assert rows.count() == len(kept) + 1 + (run / "adapter-best").is_dir()
            assert "trainctl export 1 --checkpoint" in rows.first.inner_text() if kept else True
            assert p.locator("#checkpoints .pill.best").count() >= 1
            assert "val examples" in p.locator("#figures").inner_text()

            # Comparison: disagreeing rows marked; diff-only hides the agreeing ones
            p.goto(url.rstrip("/") + "/compare")
            p.wait_for_selector("#rows table")
            assert p.locator("#rows tbody tr").count() == 4
            assert p.locator("#rows tbody tr.disagree").count() == 1
            # each run against the reference, matching cells marked, the cut answer marked
            summary = p.locator("#summary").inner_text()
            assert "2 of 4 (50.0%)" in summary and "3 of 4 (75.0%)" in summary, summary
            assert p.locator("#rows td.match").count() == 5
            assert p.locator("#rows .pill.warning").count() == 1
            p.check("#diff-only")
            p.wait_for_function("() => document.querySelectorAll('#rows tbody tr').length === 1")
            assert p.locator("#rows tbody tr.agree").count() == 0

            # Evolution and rejections render from this job's data
            p.goto(url.rstrip("/") + "/evolution")
            p.wait_for_function("() => +document.getElementById('cartography').dataset.points > 0")
            p.click("#examples tbody a >> nth=0")
            p.wait_for_selector("#example table")
            p.goto(url.rstrip("/") + "/rejected")
            p.wait_for_selector("#report .cards")

            assert p.evaluate("() => window.pwned") is None  # no payload ran on any page
            assert tab.errors == [], tab.errors

            # A phone: no page scrolls sideways at 390 px (tables scroll inside their box)
            phone = browser.new_page(viewport={"width": 390, "height": 844})
            for path in (
                "/",
                "/jobs/1",
                "/flags?state=all",
                "/compare",
                "/evolution",
                "/rejected",
            ):
                phone.goto(url.rstrip("/") + path)
                phone.wait_for_timeout(1500)
                width = phone.evaluate("() => document.documentElement.scrollWidth")
                assert width <= 390, (path, width)
            browser.close()
    finally:
        ui.send_signal(signal.SIGINT)
        ui.wait(10)
        d.kill(signal.SIGTERM)
        d.wait(60)
    time.sleep(0)
