"""Telemetry: the real no-GPU path on this machine, and the GPU path through a fake pynvml module.

NVML cannot exist without an NVIDIA GPU, so the fake replaces the pynvml module only (the
boundary); everything above it (Telemetry, gpu_processes) is the real code.
"""
from __future__ import annotations

import os
import subprocess
import sys
import types
from types import SimpleNamespace

import psutil

from runners.watch.telemetry import Telemetry, pid_namespace_matches


class FakeNVMLError(Exception):
    pass


def fake_pynvml(*, fail_init: bool = False, broken_power: bool = True, pids: tuple[int, ...] = ()) -> types.ModuleType:
    """A pynvml stand-in with two GPUs; GPU 1 does not support power readings (raises, like NVML)."""
    m = types.ModuleType("pynvml")
    m.NVMLError = FakeNVMLError
    m.NVML_TEMPERATURE_GPU = 0
    m.calls = []

    def init() -> None:
        if fail_init:
            raise FakeNVMLError("Driver Not Loaded")

    def power(h: int) -> int:
        if broken_power and h == 1:
            raise FakeNVMLError("Not Supported")
        return 250_500 + h

    m.nvmlInit = init
    m.nvmlShutdown = lambda: m.calls.append("shutdown")
    m.nvmlDeviceGetCount = lambda: 2
    m.nvmlDeviceGetHandleByIndex = lambda i: i
    m.nvmlDeviceGetName = lambda h: f"Fake H{h}00".encode()
    m.nvmlDeviceGetMemoryInfo = lambda h: SimpleNamespace(used=(h + 1) * 2**30, total=80 * 2**30, free=0)
    m.nvmlDeviceGetUtilizationRates = lambda h: SimpleNamespace(gpu=90 + h, memory=40)
    m.nvmlDeviceGetTemperature = lambda h, sensor: 60 + h
    m.nvmlDeviceGetPowerUsage = power
    m.nvmlDeviceGetEnforcedPowerManagementLimit = lambda h: 700_000
    m.nvmlDeviceGetComputeRunningProcesses = lambda h: [
        SimpleNamespace(pid=p, usedGpuMemory=(None if h == 1 else 512 * 2**20)) for p in pids]
    m.nvmlDeviceGetGraphicsRunningProcesses = lambda h: []
    return m


def test_real_nvml_on_this_machine_reports_no_gpu_without_raising() -> None:
    tel = Telemetry()
    sample = tel.sample()
    assert sample["gpu_state"] == "no GPU"
    assert sample["gpus"] == []
    assert sample["gpu_error"]  # says why (library not found)
    assert 0 < sample["ram_used"] <= sample["ram_total"] == psutil.virtual_memory().total
    assert 0.0 <= sample["cpu_percent"] <= 100.0 * (sample["cpu_count"] or 1)
    assert tel.gpu_processes() == {}


def test_cpu_percent_sees_a_busy_process() -> None:
    tel = Telemetry()
    busy = subprocess.Popen([sys.executable, "-c", "import time\nend=time.time()+1.5\nwhile time.time()<end: pass"])
    try:
        busy.wait()
    finally:
        busy.kill()
    assert tel.sample()["cpu_percent"] > 10.0


def test_fake_gpus_are_sampled_and_failed_queries_are_none() -> None:
    me = os.getpid()
    tel = Telemetry(nvml=fake_pynvml(pids=(me,)))
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
    assert tel._nvml.calls == ["shutdown"]


def test_driver_not_loaded_is_no_gpu() -> None:
    tel = Telemetry(nvml=fake_pynvml(fail_init=True))
    sample = tel.sample()
    assert sample["gpu_state"] == "no GPU" and "Driver Not Loaded" in sample["gpu_error"]
    assert sample["gpus"] == []


def test_pid_namespace_check() -> None:
    assert pid_namespace_matches({os.getpid()})
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert not pid_namespace_matches({dead.pid})
    assert pid_namespace_matches(set())
