"""Test doubles of the dashboard tests: a recorded run, a replaying source, and telemetry that is real
code over a fake NVML (the one boundary that cannot exist without a GPU) with frozen host numbers.
"""
from __future__ import annotations

import time
import types
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from runners import events as ev
from runners.watch.telemetry import Telemetry

DATA = Path(__file__).resolve().parent / "data"
RECORDED_RUNS = DATA / "runs"
RECORDED_RUN = RECORDED_RUNS / "20261122-133534-demo-1116"  # a real `ftui demo` run, recorded
ROOT = Path(__file__).resolve().parents[2]


class FakeNVMLError(Exception):
    pass


def fake_nvml(gpus: int) -> types.ModuleType:
    """A pynvml stand-in with ``gpus`` 80 GiB GPUs (0: no GPU, init fails like on this machine)."""
    m = types.ModuleType("pynvml")
    m.NVMLError = FakeNVMLError
    m.NVML_TEMPERATURE_GPU = 0

    def init() -> None:
        if not gpus:
            raise FakeNVMLError("NVML Shared Library Not Found")

    m.nvmlInit = init
    m.nvmlShutdown = lambda: None
    m.nvmlDeviceGetCount = lambda: gpus
    m.nvmlDeviceGetHandleByIndex = lambda i: i
    m.nvmlDeviceGetName = lambda h: b"NVIDIA H100 80GB HBM3"
    m.nvmlDeviceGetMemoryInfo = lambda h: SimpleNamespace(used=(3 + 2 * h) * 2**30, total=80 * 2**30,
                                                          free=(77 - 2 * h) * 2**30)
    m.nvmlDeviceGetUtilizationRates = lambda h: SimpleNamespace(gpu=97 - h, memory=40)
    m.nvmlDeviceGetTemperature = lambda h, sensor: 64 + h
    m.nvmlDeviceGetPowerUsage = lambda h: 612_000 - 1000 * h
    m.nvmlDeviceGetEnforcedPowerManagementLimit = lambda h: 700_000
    m.nvmlDeviceGetComputeRunningProcesses = lambda h: []
    m.nvmlDeviceGetGraphicsRunningProcesses = lambda h: []
    return m


class FrozenTelemetry(Telemetry):
    """The real Telemetry over a fake NVML, with CPU and RAM pinned so frames are reproducible."""

    def sample(self) -> dict[str, Any]:
        sample = super().sample()
        sample.update(t=0.0, cpu_percent=12.5, cpu_count=16, ram_used=24 * 2**30, ram_total=128 * 2**30,
                      ram_percent=18.8)
        if sample["gpu_error"]:
            sample["gpu_error"] = "NVMLError_LibraryNotFound"
        return sample


class ReplaySource:
    """A test feed: the first ``limit`` records of a recorded events file, as if the run were live."""

    kind = "ftui"
    can_control = False

    def __init__(self, run_dir: Path, limit: int | None = None, state: str = "running") -> None:
        self.run_dir = run_dir
        self.label = run_dir.name
        self.records = ev.read_all(run_dir / ev.EVENTS_FILE)[:limit]
        self.state = state
        self.warnings: list[str] = []
        self._sent = False

    @property
    def last_t(self) -> float:
        return float(self.records[-1]["t"])

    def poll(self) -> list[dict[str, Any]]:
        if self._sent:
            return []
        self._sent = True
        return list(self.records)

    def status(self) -> dict[str, Any]:
        return {"state": self.state, "pids": [], "run_dir": str(self.run_dir)}



def wait_for(condition, timeout: float = 30.0):  # type: ignore[no-untyped-def]
    """An awaitable polling ``condition`` every 0.1 s (AssertionError after ``timeout``)."""
    async def waiter(pilot) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {condition}")
            await pilot.pause(0.1)
    return waiter
