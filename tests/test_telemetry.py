"""Telemetry: the real no-GPU path on this machine, and the GPU path through the fake pynvml module.

NVML cannot exist without an NVIDIA GPU, so the fake (tests/fakes.py) replaces the pynvml module only
(the boundary); everything above it (Telemetry, gpu_processes) is the real code.
"""
from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import time

import psutil

from runners.watch.telemetry import Telemetry, pid_namespace_matches
from tests.fakes import fake_nvml, two_gpus


def _nvidia_gpu_here() -> bool:
    return bool(shutil.which("nvidia-smi")) and subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode == 0


def test_real_nvml_on_this_machine_never_raises() -> None:
    tel = Telemetry()
    sample = tel.sample()
    if _nvidia_gpu_here():  # a GPU machine: the real devices, read through the real pynvml
        assert sample["gpu_state"] == "ok" and sample["gpu_error"] is None, sample["gpu_error"]
        assert sample["gpus"] and all(g["memory_total"] > 0 for g in sample["gpus"])
    else:
        assert sample["gpu_state"] == "no GPU"
        assert sample["gpus"] == []
        assert sample["gpu_error"]  # says why (library not found)
        assert tel.gpu_processes() == {}
    assert 0 < sample["ram_used"] <= sample["ram_total"] == psutil.virtual_memory().total
    assert 0.0 <= sample["cpu_percent"] <= 100.0
    tel.close()


def test_cpu_percent_sees_a_busy_process() -> None:
    """The machine-wide CPU share since the last sample is at least what a busy child burnt in that time
    (other processes on the machine can only add to it, so the bound holds on a busy machine too)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    tel = Telemetry()
    busy = subprocess.Popen([sys.executable, "-c", "import time\nend=time.time()+1.5\nwhile time.time()<end: pass"])
    try:
        busy.wait()
    finally:
        busy.kill()
    sample = tel.sample()
    elapsed = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    burnt = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)  # the busy child's CPU seconds
    assert burnt > 1.0, burnt
    share = 100.0 * burnt / (elapsed * psutil.cpu_count())  # its percent of all cores over the sampled interval
    assert 0.8 * share <= sample["cpu_percent"] <= 100.0, (share, sample["cpu_percent"])


def test_fake_gpus_are_sampled_and_failed_queries_are_none() -> None:
    me = os.getpid()
    tel = Telemetry(nvml=fake_nvml(two_gpus(pids=(me,))))
    sample = tel.sample()
    assert sample["gpu_state"] == "ok"
    g0, g1 = sample["gpus"]
    assert g0["name"] == "Fake H000" and g0["memory_used"] == 2**30 and g0["memory_total"] == 80 * 2**30
    assert g0["utilization"] == 90 and g0["temperature"] == 60
    assert g0["power_watts"] == 250.5 and g0["power_limit_watts"] == 700.0
    assert g1["power_watts"] is None  # "Not Supported" became N/A, not an exception
    assert g1["memory_used"] == 2 * 2**30 and g1["temperature"] == 61
    assert g0["processes"] == [{"pid": me, "used_memory": 512 * 2**20}]
    assert g1["processes"] == [{"pid": me, "used_memory": None}]  # no privileges: unknown, not 0
    assert tel.gpu_processes() == {me: {0: 512 * 2**20, 1: None}}
    tel.close()
    assert tel._nvml.calls == ["init", "shutdown"]


def test_driver_not_loaded_is_no_gpu() -> None:
    tel = Telemetry(nvml=fake_nvml(two_gpus(), init_error="Driver Not Loaded"))
    sample = tel.sample()
    assert sample["gpu_state"] == "no GPU" and "Driver Not Loaded" in sample["gpu_error"]
    assert sample["gpus"] == []


def test_pid_namespace_check() -> None:
    assert pid_namespace_matches({os.getpid()})
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert not pid_namespace_matches({dead.pid})
    assert pid_namespace_matches(set())
