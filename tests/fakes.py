"""The one fake of the test suite: NVML, the boundary that cannot exist on a machine without an NVIDIA GPU.

``fake_nvml`` builds a stand-in for the ``pynvml`` module (nvidia-ml-py) from a list of ``FakeGPU``;
everything above it (runners/watch/telemetry.py, runners/plan/planner.py, runners/plan/timing.py, the
dashboard) is the real code. Pass it to ``Telemetry(nvml=...)``, or put it in ``sys.modules["pynvml"]``
(monkeypatch.setitem) for the code that imports pynvml itself.
"""
from __future__ import annotations

import types
from collections.abc import Sequence
from dataclasses import dataclass
from types import SimpleNamespace

GIB = 2**30


class FakeNVMLError(Exception):
    """pynvml.NVMLError: what a failed NVML call raises."""


@dataclass(frozen=True)
class FakeGPU:
    """One device as NVML reports it (power in milliwatts, like NVML)."""

    name: str = "NVIDIA H100 80GB HBM3"
    total: int = 80 * GIB
    used: int = 3 * GIB
    utilization: int = 97
    temperature: int = 64
    power_mw: int | None = 612_000  # None: the device cannot report it (NVML raises "Not Supported")
    power_limit_mw: int = 700_000
    processes: tuple[tuple[int, int | None], ...] = ()  # (pid, bytes used; None when NVML will not say)


def fake_nvml(gpus: Sequence[FakeGPU] = (), *, init_error: str | None = None) -> types.ModuleType:
    """A pynvml stand-in over ``gpus``; ``init_error``: nvmlInit raises it (no driver, no library).

    ``calls`` records nvmlInit and nvmlShutdown, so a test can check that NVML is shut down."""
    devices = list(gpus)
    m = types.ModuleType("pynvml")
    m.NVMLError = FakeNVMLError
    m.NVML_TEMPERATURE_GPU = 0
    m.calls = []

    def init() -> None:
        m.calls.append("init")
        if init_error is not None:
            raise FakeNVMLError(init_error)

    def power(h: int) -> int:
        if devices[h].power_mw is None:
            raise FakeNVMLError("Not Supported")
        return devices[h].power_mw

    m.nvmlInit = init
    m.nvmlShutdown = lambda: m.calls.append("shutdown")
    m.nvmlDeviceGetCount = lambda: len(devices)
    m.nvmlDeviceGetHandleByIndex = lambda i: i
    m.nvmlDeviceGetName = lambda h: devices[h].name.encode()  # older pynvml returns bytes; the code takes both
    m.nvmlDeviceGetMemoryInfo = lambda h: SimpleNamespace(used=devices[h].used, total=devices[h].total,
                                                          free=devices[h].total - devices[h].used)
    m.nvmlDeviceGetUtilizationRates = lambda h: SimpleNamespace(gpu=devices[h].utilization, memory=40)
    m.nvmlDeviceGetTemperature = lambda h, sensor: devices[h].temperature
    m.nvmlDeviceGetPowerUsage = power
    m.nvmlDeviceGetEnforcedPowerManagementLimit = lambda h: devices[h].power_limit_mw
    m.nvmlDeviceGetComputeRunningProcesses = lambda h: [SimpleNamespace(pid=pid, usedGpuMemory=used)
                                                        for pid, used in devices[h].processes]
    m.nvmlDeviceGetGraphicsRunningProcesses = lambda h: []
    return m


def two_gpus(pids: Sequence[int] = ()) -> list[FakeGPU]:
    """Two GPUs running ``pids``: GPU 0 says 512 MiB each; GPU 1 cannot report power, nor (no privileges)
    what a process uses."""
    return [FakeGPU(name="Fake H000", used=1 * GIB, utilization=90, temperature=60, power_mw=250_500,
                    processes=tuple((pid, 512 * 2**20) for pid in pids)),
            FakeGPU(name="Fake H100", used=2 * GIB, utilization=91, temperature=61, power_mw=None,
                    processes=tuple((pid, None) for pid in pids))]
