"""One job as several processes (torchrun, gloo on CPU), several jobs at once, and a job that
cannot be placed.

These train builtin:tiny for real: rank 0 alone reports, every rank trains, a killed rank or daemon
loses nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.app import app
from daemon.home import Home
from daemon.jobs import JobQueue, JobState
from tests.helpers import DEMO, ROOT, TINY_SETTINGS, wait_for

runner = CliRunner()


def jobs(home: Path):
    if not Home(home).jobs_db.exists():
        return []
    with JobQueue(Home(home).jobs_db, readonly=True) as q:
        return sorted(q.newest(), key=lambda j: j.id)


def result(home: Path, job: int = 1) -> dict:
    return json.loads((Home(home).run_dir(job) / "result.json").read_text())


def metric_rows(home: Path, job: int = 1) -> list[dict]:
    path = Home(home).run_dir(job) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def step_rows(home: Path) -> list[int]:
    """The step of each per-step metrics row (not the end-of-training summary)."""
    return [
        row["current_step"]
        for row in metric_rows(home)
        if row.get("loss") is not None and "train_loss" not in row
    ]


def rank_pids(home: Path) -> list[int]:
    """The job's training processes (daemon.distributed.rank) for this home."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            # `python -u -m daemon.distributed.rank ...` (the torchrun agent's own command line
            # names it too)
            if (
                b"-m" in cmd
                and cmd[cmd.index(b"-m") + 1] == b"daemon.distributed.rank"
                and str(home).encode() in cmd
            ):
                out.append(int(d.name))
    return out


def listening_addresses(port: int) -> set[str]:
    """The local addresses a TCP socket listens on at `port` (from /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A = LISTEN
                if len(addr) == 8:
                    found.add(".".join(str(b) for b in reversed(bytes.fromhex(addr))))
                else:
                    found.add("::" if set(addr) == {"0"} else addr)
    return found


def complete_checkpoints(home: Path) -> list[int]:
    ckpt = Home(home).run_dir(1) / "checkpoints"
    return sorted(
        int(d.name.split("-")[1])
        for d in ckpt.glob("checkpoint-*")
        if (d / "TRAINCTL_COMPLETE").exists()
    )


@pytest.mark.slow
def test_two_processes_learn_the_demo_like_one_on_the_same_global_batch(home, tmp_path):
    """batch 8 in one process against batch 4 in each of two: held-out and training exact match
    within one example of each other, a training loss within a few percent, one status file and one
    metrics row per step (rank 0 alone writes)."""
    other = tmp_path / "one"
    (other / "data").mkdir(parents=True)
    os.symlink(Home(home).models, Home(other).models)
    Home(other).settings_file.write_text(TINY_SETTINGS)
    one = runner.invoke(
        app, ["train", str(DEMO), "--home", str(other), "--epochs", "6", "--batch-size", "8"]
    )
    assert one.exit_code == 0, one.output
    two = runner.invoke(
        app,
        [
            "train",
            str(DEMO),
            "--home",
            str(home),
            "--epochs",
            "6",
            "--batch-size",
            "4",
            "--nproc",
            "2",
        ],
    )
    assert two.exit_code == 0, two.output
    r1, r2 = result(other), result(home)
    # One process runs the output layer on the labelled positions only; under DDP the model's own
    # forward runs (its wrapper must see the call). The same function to float rounding, which six
    # epochs under bf16 autocast may turn into one example's difference, no more.
    for split in ("test_eval", "train_eval"):
        one_example = 1 / r1[split]["count"]
        assert abs(r2[split]["exact_match"] - r1[split]["exact_match"]) <= one_example + 1e-9, (
            split,
            r1,
            r2,
        )
    assert min(r1["test_eval"]["exact_match"], r2["test_eval"]["exact_match"]) >= 0.8
    assert abs(r2["train_loss"] - r1["train_loss"]) / r1["train_loss"] < 0.05, (
        r1["train_loss"],
        r2["train_loss"],
    )
    config = json.loads((Home(home).run_dir(1) / "config.json").read_text())
    assert config["placement"]["world_size"] == 2 and config["placement"]["nproc"] == 2
    assert config["placement"]["devices"] == "cpu"
    steps = step_rows(home)
    assert steps == list(range(1, r2["steps"] + 1))  # one row per step: not one per rank
    assert sorted(p.name for p in (home / "status").rglob("*.json")) == [
        "job-00001.json",
        "training_status.json",
    ]
    status = json.loads(Home(home).training_status.read_text())
    assert status["state"] == "done" and status["world_size"] == 2
    ranks = list((Home(home).run_dir(1) / "ranks").rglob("stdout.log"))
    assert len(ranks) == 2  # each rank's output kept


@pytest.mark.slow
def test_kill_9_of_one_rank_and_of_the_daemon_lose_nothing(home, daemons):
    """A killed rank takes its group down and torchrun restarts it from the newest complete
    checkpoint; a killed daemon makes the ranks checkpoint and stop; the next start resumes, and
    the job trains its steps exactly."""
    Home(home).settings_file.write_text(
        TINY_SETTINGS + "nproc = 2\nbatch_size = 4\nsave_steps = 20\n"
    )
    d = daemons(home, "--epochs", "12")
    (Home(home).inbox / "demo.jsonl").write_bytes(DEMO.read_bytes())
    wait_for(lambda: len(rank_pids(home)) == 2, 120, "two training processes")
    wait_for(lambda: complete_checkpoints(home), 180, "a complete checkpoint")
    planned = json.loads(Home(home).training_status.read_text())["total_steps"]
    placement = jobs(home)[0].devices_dict
    assert placement["nproc"] == 2 and 29600 <= placement["port"] <= 29699
    # The rendezvous store of the job listens on the loopback interface only
    assert listening_addresses(placement["port"]) == {"127.0.0.1"}
    first = rank_pids(home)
    os.kill(first[-1], signal.SIGKILL)
    wait_for(
        lambda: len(rank_pids(home)) == 2 and set(rank_pids(home)).isdisjoint(first),
        120,
        "torchrun to restart the group",
    )
    wait_for(lambda: max(complete_checkpoints(home)) >= 40, 240, "progress after the restart")
    worker = jobs(home)[0].worker_pid
    d.kill(signal.SIGKILL)
    d.wait(10)
    # The kernel sends the worker its parent-death SIGTERM once for each thread of the killed
    # daemon it passes through on the way to a new parent: a few, within milliseconds, and when
    # they come far enough apart not to merge into one, each used to reach torchrun's agent, which
    # then left its ranks and hung. Send more, apart, so the test never depends on how many this
    # daemon's threads happen to give
    for _ in range(4):
        time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker, signal.SIGTERM)
    wait_for(lambda: not rank_pids(home), 120, "the ranks to checkpoint and leave")
    # the worker records the interruption once torchrun has returned
    wait_for(
        lambda: jobs(home)[0].state != JobState.TRAINING, 60, "the worker to record the outcome"
    )
    (job,) = jobs(home)
    kept = max(complete_checkpoints(home))
    # recorded from rank 0's outcome: the worker waited for the ranks' checkpoint at the step they
    # stopped at
    assert job.state == JobState.INTERRUPTED and job.message.startswith(
        f"stopped at step {kept};"
    ), (job, kept)
    d2 = daemons(home, "--once")
    assert d2.wait(600) == 0, d2.output()
    (job,) = jobs(home)
    assert job.state == JobState.DONE, (job, d2.output())
    assert f"resumed from checkpoint-{kept}" in job.message
    done = result(home)
    steps = step_rows(home)
    # Every planned step trained. The ranks checkpointed where the daemon's death stopped them, so
    # the steps after that checkpoint were trained exactly once, by the resumed run (the killed
    # rank's group redid the few steps after its checkpoint before that)
    assert done["steps"] == planned and set(steps) == set(range(1, planned + 1))
    after = [s for s in steps if s > kept]
    assert after == list(range(kept + 1, planned + 1))


@pytest.mark.slow
def test_two_slots_train_two_files_at_once_on_their_own_ports(home, daemons):
    Home(home).settings_file.write_text(
        TINY_SETTINGS + "nproc = 2\nbatch_size = 4\n[daemon]\nslots = 2\n"
    )
    for name in ("a.jsonl", "b.jsonl"):
        lines = DEMO.read_text().splitlines()
        # different content: not skipped as a duplicate
        body = lines if name == "a.jsonl" else lines[::-1]
        (Home(home).inbox / name).write_text("\n".join(body) + "\n")
    d = daemons(home, "--once", "--epochs", "2")
    both = wait_for(
        lambda: (
            [j for j in jobs(home) if j.state == JobState.TRAINING]
            if len([j for j in jobs(home) if j.state == JobState.TRAINING]) == 2
            else None
        ),
        240,
        "both jobs training at once",
    )
    ports = {j.devices_dict["port"] for j in both}
    slots = {j.devices_dict["slot"] for j in both}
    assert len(ports) == 2 and slots == {0, 1}
    daemon_doc = json.loads(Home(home).daemon_status.read_text())
    assert len(daemon_doc["running_jobs"]) == 2
    assert d.wait(600) == 0, d.output()
    done = jobs(home)
    assert [j.state for j in done] == [JobState.DONE, JobState.DONE], d.output()
    # overlapped
    assert done[0].started_at < done[1].finished_at and done[1].started_at < done[0].finished_at
    for j in done:
        assert Home(home).job_status(j.id).exists()
    # cells unfolded
    q = runner.invoke(app, ["queue", "--home", str(home)], env={"COLUMNS": "250"})
    assert "cpu slot 0 x2" in q.output and "cpu slot 1 x2" in q.output


STOP_TWICE = """
import os, signal, sys
from daemon.stop_signals import StopSignals
asked = []
with StopSignals(asked.append):
    if sys.argv[1] == "stop":
        for _ in range(3):
            # the same stop, three times (a killed daemon's threads)
            os.kill(os.getpid(), signal.SIGTERM)
print(asked, flush=True)
# after the block: ignored once a stop came, the default action otherwise
os.kill(os.getpid(), signal.SIGTERM)
print("still here", flush=True)
"""


@pytest.mark.parametrize("case", ["stop", "none"])
def test_a_worker_takes_a_repeated_stop_once_and_lives_to_record_it(case):
    """A job's worker passes one stop to its launcher however often it comes, and a late repeat
    does not kill it before it records how the job ended; without a stop, the handlers it put in
    place are undone."""
    run = subprocess.run(
        [sys.executable, "-c", STOP_TWICE, case],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    if case == "stop":
        assert run.returncode == 0 and run.stdout.split("\n")[:2] == [
            "['SIGTERM']",
            "still here",
        ], run
    else:
        assert run.returncode == -signal.SIGTERM and run.stdout.strip() == "[]", run


SAVING_RANK = """
import os, signal, sys, time
def stop(signum, frame):
    time.sleep(3)  # finishing its step and saving a checkpoint
    open(os.path.join(sys.argv[1], "saved-" + os.environ["RANK"]), "w").close()
    os._exit(0)
signal.signal(signal.SIGTERM, stop)
open(os.path.join(sys.argv[1], "ready-" + os.environ["RANK"]), "w").close()
time.sleep(120)  # never reached in a passing test: stopped long before
"""


def test_the_agent_waits_for_its_ranks_to_save_however_often_it_is_asked_to_stop(tmp_path):
    """The same stop three times (Ctrl-C on the terminal and the worker passing it on; a killed
    daemon's repeats): torchrun's agent still waits for every rank to save and leave, and only then
    exits."""
    (tmp_path / "rank.py").write_text(SAVING_RANK)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    agent = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "daemon.distributed.agent",
            "--nnodes",
            "1",
            "--nproc-per-node",
            "2",
            "--master-addr",
            "127.0.0.1",
            "--master-port",
            str(port),
            "--max-restarts",
            "0",
            "--shutdown-timeout",
            "60",
            str(tmp_path / "rank.py"),
            str(tmp_path),
        ],
        cwd=ROOT,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: len(list(tmp_path.glob("ready-*"))) == 2, 120, "both ranks to start")
        for _ in range(3):
            agent.send_signal(signal.SIGTERM)
            time.sleep(0.3)
        agent.wait(60)
        saved = sorted(p.name for p in tmp_path.glob("saved-*"))
        assert saved == ["saved-0", "saved-1"], agent.stderr.read()[-3000:]
    finally:
        if agent.poll() is None:
            os.killpg(agent.pid, signal.SIGKILL)


def test_a_job_that_cannot_be_placed_fails_with_the_reason_and_the_daemon_goes_on(home, daemons):
    Home(home).settings_file.write_text(TINY_SETTINGS + "gpus_per_job = 2\n[daemon]\ngpus = []\n")
    (Home(home).inbox / "demo.jsonl").write_bytes(DEMO.read_bytes())
    d = daemons(home, "--once")
    assert d.wait(120) == 0, d.output()
    (job,) = jobs(home)
    assert job.state == JobState.FAILED and "asks for GPUs" in job.error
    error = (Home(home).inbox_failed / "demo.jsonl.error.txt").read_text()
    assert "train.gpus_per_job" in error


RAY_CLUSTER = """
import os, sys, time
# a one-machine cluster: every node on 127.0.0.1
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
from ray.cluster_utils import Cluster
cluster = Cluster(
    initialize_head=True,
    head_node_args={"num_cpus": 1, "node_ip_address": "127.0.0.1", "include_dashboard": False},
)
cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
cluster.wait_for_nodes()
print(cluster.address, flush=True)
while not os.path.exists(sys.argv[1]):
    time.sleep(0.5)
cluster.shutdown()
"""


@pytest.mark.slow
def test_a_job_trains_across_two_nodes_of_a_ray_cluster(home, tmp_path):
    """Two "boxes": a local Ray cluster of two nodes (one CPU each) on 127.0.0.1. One worker on
    each; rank 0 on the daemon's node writes the home's status and adapter; the dataset copy and
    every checkpoint go to the shared storage_path."""
    import importlib.util
    import subprocess
    import sys

    # (not imported here: the job's worker imports Ray itself, after choosing the loopback for a
    # 127.0.0.1 cluster)
    if importlib.util.find_spec("ray") is None:
        pytest.skip("the ray extra is not installed")
    script, done_flag, shared = tmp_path / "cluster.py", tmp_path / "done", tmp_path / "shared"
    script.write_text(RAY_CLUSTER)
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    cluster = subprocess.Popen(
        [sys.executable, str(script), str(done_flag)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        address = cluster.stdout.readline().strip()
        assert address.startswith("127.0.0.1:"), address
        Home(home).settings_file.write_text(
            TINY_SETTINGS
            + f'[distributed]\nbackend = "ray"\naddress = "{address}"\nnum_workers = 2\n'
            f'storage_path = "{shared}"\n'
        )
        r = runner.invoke(
            app, ["train", str(DEMO), "--home", str(home), "--epochs", "2", "--batch-size", "4"]
        )
        assert r.exit_code == 0, r.output
        nodes = r.output.split("ranks on nodes", 1)[1].splitlines()[0]
        # two nodes
        assert len({part.split(":")[1].split()[0] for part in nodes.split(",")}) == 2, nodes
        (job,) = jobs(home)
        assert job.state == JobState.DONE and job.devices_dict["backend"] == "ray"
        assert (Home(home).run_dir(1) / "adapter" / "adapter_model.safetensors").exists()
        assert json.loads(Home(home).training_status.read_text())["world_size"] == 2
        assert list((shared / "job-00001" / "dataset").glob("*/train.jsonl"))
        ckpts = list((shared / "job-00001" / "checkpoints").glob("checkpoint-*"))
        # rank 1 wrote its part there
        assert ckpts and all((c / "rng_state_1.pth").exists() for c in ckpts)
    finally:
        done_flag.touch()
        cluster.wait(60)
