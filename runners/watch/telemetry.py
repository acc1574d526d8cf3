"""GPU and host telemetry for the dashboard: NVML through pynvml, CPU and RAM through psutil.

Cheap enough to call every second from the UI process: NVML is initialised once, device
handles are cached, psutil's CPU percentage is non-blocking. Every NVML query is wrapped so a
failure is ``None`` ("N/A" on screen), never an exception; a machine without a GPU (or without
the NVIDIA driver) is a normal state reported as ``gpu_state = "no GPU"``.

``nvml`` can be injected (tests pass a fake pynvml module, the one boundary that cannot be real on
a machine without a GPU); by default the real ``pynvml`` (nvidia-ml-py) is imported lazily.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

import psutil


def _load_pynvml() -> ModuleType | None:
    try:
        import pynvml
    except ImportError:
        return None
    return pynvml


class Telemetry:
    """One object per UI process; ``sample()`` returns a JSON-able dict."""

    def __init__(self, nvml: ModuleType | None = None) -> None:
        self._nvml = nvml
        self._handles: list[Any] = []
        self.gpu_state = "not initialised"
        self.gpu_error: str | None = None
        self._init_nvml(injected=nvml is not None)
        psutil.cpu_percent(interval=None)  # prime: the first non-blocking call always returns 0.0

    def _init_nvml(self, injected: bool) -> None:
        nvml = self._nvml if injected else _load_pynvml()
        self._nvml = nvml
        if nvml is None:
            self.gpu_state, self.gpu_error = "no GPU", "pynvml (nvidia-ml-py) is not installed"
            return
        try:
            nvml.nvmlInit()
            count = nvml.nvmlDeviceGetCount()
            self._handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        except Exception as exc:  # NVMLError_LibraryNotFound / DriverNotLoaded: no GPU here
            self._handles = []
            self.gpu_state, self.gpu_error = "no GPU", f"{type(exc).__name__}: {exc}"
            return
        self.gpu_state = "ok" if self._handles else "no GPU"
        self.gpu_error = None if self._handles else "NVML found no devices"

    def _query(self, fn: Callable[..., Any], *args: Any) -> Any:
        """One NVML call; any NVML (or driver) error becomes None."""
        try:
            return fn(*args)
        except Exception:
            return None

    def _processes(self, handle: Any) -> list[dict[str, Any]]:
        nvml = self._nvml
        seen: dict[int, int | None] = {}
        for name in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
            fn = getattr(nvml, name, None)
            for proc in (self._query(fn, handle) if fn else None) or []:
                pid = getattr(proc, "pid", None)
                used = getattr(proc, "usedGpuMemory", None)
                if isinstance(pid, int):
                    # NVML reports "not available" (no privileges, MIG) as None or a huge sentinel
                    seen[pid] = used if isinstance(used, int) and 0 <= used < 1 << 60 else seen.get(pid)
        return [{"pid": pid, "used_memory": used} for pid, used in seen.items()]

    def _gpu(self, index: int, handle: Any) -> dict[str, Any]:
        nvml = self._nvml
        assert nvml is not None, "device handles exist only once NVML is initialised"
        name = self._query(nvml.nvmlDeviceGetName, handle)
        mem = self._query(nvml.nvmlDeviceGetMemoryInfo, handle)
        util = self._query(nvml.nvmlDeviceGetUtilizationRates, handle)
        temp_sensor = getattr(nvml, "NVML_TEMPERATURE_GPU", 0)
        power_mw = self._query(nvml.nvmlDeviceGetPowerUsage, handle)
        limit_mw = self._query(getattr(nvml, "nvmlDeviceGetEnforcedPowerManagementLimit", None) or
                               nvml.nvmlDeviceGetPowerManagementLimit, handle)
        return {
            "index": index,
            "name": name.decode() if isinstance(name, bytes) else name,
            "memory_used": getattr(mem, "used", None),
            "memory_total": getattr(mem, "total", None),
            "utilization": getattr(util, "gpu", None),
            "memory_utilization": getattr(util, "memory", None),
            "temperature": self._query(nvml.nvmlDeviceGetTemperature, handle, temp_sensor),
            "power_watts": power_mw / 1000 if isinstance(power_mw, (int, float)) else None,
            "power_limit_watts": limit_mw / 1000 if isinstance(limit_mw, (int, float)) else None,
            "processes": self._processes(handle),
        }

    def gpus(self) -> list[dict[str, Any]]:
        return [self._gpu(i, h) for i, h in enumerate(self._handles)]

    def gpu_processes(self) -> dict[int, dict[int, int | None]]:
        """pid -> {gpu index: bytes used (None when NVML will not say)}, for `ftui ps` and attach.

        Inside a container NVML reports host PIDs, which may not match ours: callers check
        :func:`pid_namespace_matches` before trusting the mapping.
        """
        out: dict[int, dict[int, int | None]] = {}
        for index, handle in enumerate(self._handles):
            for proc in self._processes(handle):
                out.setdefault(proc["pid"], {})[index] = proc["used_memory"]
        return out

    def sample(self) -> dict[str, Any]:
        vm = psutil.virtual_memory()
        return {
            "t": round(time.time(), 3),
            "cpu_percent": psutil.cpu_percent(interval=None),
            "cpu_count": psutil.cpu_count(),
            "ram_used": vm.total - vm.available,
            "ram_total": vm.total,
            "ram_percent": vm.percent,
            "gpu_state": self.gpu_state,
            "gpu_error": self.gpu_error,
            "gpus": self.gpus(),
        }

    def close(self) -> None:
        if self._handles and self._nvml is not None:
            self._query(self._nvml.nvmlShutdown)
        self._handles = []


def pid_namespace_matches(gpu_pids: set[int]) -> bool:
    """False when NVML's PIDs are not ours (a container with its own PID namespace).

    NVML always reports host PIDs; if none of them exists here, the mapping cannot be trusted.
    An empty set tells nothing, so it matches.
    """
    if not gpu_pids:
        return True
    return any(psutil.pid_exists(pid) for pid in gpu_pids)
