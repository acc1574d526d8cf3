"""Test doubles of the dashboard tests: a recorded run, a replaying source, and telemetry that is real
code over the suite's one fake NVML (tests/fakes.py: the boundary that cannot exist without a GPU) with
frozen host numbers.
"""
from __future__ import annotations

import time
import types
from pathlib import Path
from typing import Any

from runners import events as ev
from runners.watch.telemetry import Telemetry
from tests.fakes import GIB, FakeGPU, fake_nvml

DATA = Path(__file__).resolve().parent / "data"
RECORDED_RUNS = DATA / "runs"
RECORDED_RUN = RECORDED_RUNS / "20261122-133534-demo-1116"  # a real `ftui demo` run, recorded
ROOT = Path(__file__).resolve().parents[2]


def h100_nvml(gpus: int) -> types.ModuleType:
    """The suite's fake NVML (tests/fakes.py) with ``gpus`` busy H100s (0: no GPU, init fails like on a
    machine without one). The numbers are in the snapshots: change them and the SVGs change."""
    devices = [FakeGPU(used=(3 + 2 * h) * GIB, utilization=97 - h, temperature=64 + h, power_mw=612_000 - 1000 * h)
               for h in range(gpus)]
    return fake_nvml(devices, init_error=None if gpus else "NVML Shared Library Not Found")


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
