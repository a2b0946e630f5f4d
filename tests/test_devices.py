"""Devices as a resource of the queue: GPU sets, CPU slots and rendezvous ports handed to jobs (no
GPU needed: the ledger is given GPU indices as `daemon.gpus` would list them)."""

from __future__ import annotations

import socket

import pytest

from daemon.config import load_settings
from daemon.devices import Devices, Placement, visible_gpus
from daemon.errors import PlacementError


def settings(**sections):
    return load_settings(None, sections)


def test_jobs_get_disjoint_gpu_sets_and_wait_for_a_free_one():
    s = settings(train={"gpus_per_job": 2}, daemon={"gpus": [0, 1, 2, 3]})
    devices = Devices(s.daemon, port_check=lambda port: True)
    a, b = devices.take(1, s), devices.take(2, s)
    assert a.gpus == [0, 1] and b.gpus == [2, 3] and a.nproc == b.nproc == 2
    assert a.port != b.port and {a.port, b.port} <= set(range(29600, 29700))
    assert a.env() == {"CUDA_VISIBLE_DEVICES": "0,1"} and a.describe() == f"gpu 0,1 x2 :{a.port}"
    assert devices.take(3, s) is None  # waits: every GPU is held
    devices.release(1)
    c = devices.take(3, s)
    assert c.gpus == [0, 1] and c.port == a.port  # the released port is free again


def test_one_gpu_jobs_need_no_port_and_all_takes_every_gpu():
    one = settings(daemon={"gpus": [0, 1]})
    devices = Devices(one.daemon, port_check=lambda port: True)
    p = devices.take(1, one)
    assert p.gpus == [0] and p.nproc == 1 and p.port is None
    every = settings(train={"gpus_per_job": "all"}, daemon={"gpus": [0, 1]})
    assert devices.take(2, every) is None  # GPU 0 is held
    devices.release(1)
    assert devices.take(2, every).gpus == [0, 1]


def test_impossible_requests_fail_with_a_clear_message():
    s = settings(train={"gpus_per_job": 4}, daemon={"gpus": [0, 1]})
    with pytest.raises(PlacementError, match="asks for 4 GPUs .* offers 2"):
        Devices(s.daemon).take(1, s)
    cpu = settings(train={"gpus_per_job": 2}, daemon={"gpus": []})
    with pytest.raises(PlacementError, match="no(ne)? to hand out"):
        Devices(cpu.daemon).take(1, cpu)
    fsdp = settings(train={"fsdp": True}, daemon={"gpus": []})
    with pytest.raises(PlacementError, match="fsdp"):
        Devices(fsdp.daemon).take(1, fsdp)


def test_cpu_slots_and_processes():
    s = settings(
        train={"nproc": 2}, daemon={"gpus": [], "slots": 2, "rendezvous_ports": [29650, 29651]}
    )
    devices = Devices(s.daemon, port_check=lambda port: True)
    a, b = devices.take(1, s), devices.take(2, s)
    assert (a.slot, b.slot, a.nproc, a.gpus) == (0, 1, 2, []) and {a.port, b.port} == {
        29650,
        29651,
    }
    assert a.env() == {} and a.describe() == "cpu slot 0 x2 :29650"
    assert devices.take(3, s) is None  # both slots held


def test_a_port_in_use_by_another_program_is_skipped_and_an_exhausted_range_is_an_error():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        s = settings(
            train={"nproc": 2},
            daemon={"gpus": [], "slots": 3, "rendezvous_ports": [port, port + 1]},
        )
        devices = Devices(s.daemon)
        assert devices.take(1, s).port == port + 1
        with pytest.raises(PlacementError, match="no free rendezvous port"):
            devices.take(2, s)


def test_settings_are_checked_together():
    with pytest.raises(Exception) as err:
        settings(
            train={"gpus_per_job": 0, "nproc": -1},
            daemon={"gpus": "some", "slots": 0},
            bench={"tensor_parallel_size": 2, "backend": "hf"},
            distributed={"backend": "slurm"},
        )
    msg = str(err.value)
    for part in (
        "gpus_per_job",
        "train.nproc",
        "daemon.gpus",
        "daemon.slots",
        "need bench.backend = 'vllm'",
        "distributed.backend",
    ):
        assert part in msg, part


def test_visible_gpus_reads_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert visible_gpus("all") == [2, 3] and visible_gpus([5]) == [5]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert visible_gpus("all") == []
    assert Placement.from_dict(Placement(gpus=[1], nproc=1).to_dict()).gpus == [1]
