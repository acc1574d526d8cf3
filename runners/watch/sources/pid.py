"""A PID as a source: find its job (launcher and workers), locate the output dir, attach to that.

The output dir comes from the command line (``--output_dir``, ftui's ``--run-dir`` or supervisor
argument) or, failing that, from the newest training output under the process's working dir. A
dir named on the command line may not exist yet (the Trainer creates it at its first save or
log): the source keeps looking at each poll until it can open it. The state follows the
processes: alive means running; gone without a final record means it crashed (or was killed).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from runners.errors import UserError
from runners.watch import procs
from runners.watch.sources.records import ThroughSource


class PidSource(ThroughSource):
    kind = "pid"
    can_control = False

    def __init__(self, pid: int) -> None:
        job = procs.job_for_pid(pid)
        if job is None:
            raise UserError(
                f"No training process with PID {pid} on this machine (it is not running, or it is not a "
                f"torchrun/accelerate/deepspeed launcher or a Python process running transformers). Run "
                f"'ftui ps' to list training jobs, or attach to the job's output dir instead.")
        if job.output_dir is None:
            raise UserError(
                f"Found PID {pid} ({job.processes[0].command[:120]}) but not its output dir: the command line "
                f"has no --output_dir and its working dir {job.processes[0].cwd} holds no trainer_state.json, "
                f"checkpoint-*, TensorBoard or wandb files yet. Attach to the output dir by path instead.")
        self.job = job
        self.pid = pid
        self.label = f"pid {job.pid} ({job.launcher})"
        self.output_dir = Path(job.run_dir or job.output_dir)
        self.inner = None
        self._own_warnings = [f"output dir {job.output_dir} found from {job.output_dir_from}"] \
            if job.output_dir_from == "cwd scan" else []
        self._open_inner()

    def _open_inner(self) -> None:
        from runners.watch.sources import detect_kind, open_path

        kind = detect_kind(self.output_dir)
        if kind is None and self.job.run_dir is None:
            kind = self._wandb_in_cwd()
        if kind is None:
            return
        self.inner = open_path(self.output_dir if kind != "wandb" else self._wandb_target(), kind)
        self.inner.pids = self.job.pids
        self.can_control = bool(self.inner.can_control)

    def _wandb_in_cwd(self) -> str | None:
        cwd = self.job.processes[0].cwd
        return "wandb" if cwd and (Path(cwd) / "wandb").is_dir() else None

    def _wandb_target(self) -> Path:
        cwd = self.job.processes[0].cwd
        return Path(cwd) / "wandb" if cwd and (Path(cwd) / "wandb").is_dir() else self.output_dir

    @property
    def warnings(self) -> list[str]:
        return self._own_warnings + self.inner_warnings()

    def status(self) -> dict[str, Any]:
        from runners.runstate import pid_alive

        alive = [p for p in self.job.pids if pid_alive(p)]
        inner = self.inner.status() if self.inner is not None else {}
        state = inner.get("state", "unknown")
        if state in ("unknown", "running"):
            # we saw the processes: alive is running, gone before a final record is a crash or a kill
            state = "running" if alive else "crashed"
        return {**inner, "state": state, "pids": alive, "job_pid": self.job.pid, "launcher": self.job.launcher,
                "output_dir": self.job.output_dir, "output_dir_from": self.job.output_dir_from,
                "inner_kind": getattr(self.inner, "kind", None)}
