"""A Slurm job id as a source: Slurm says where the job writes (runners/watch/slurm.py), that dir is read.

An ftui job is its run dir, opened as such (``open_source`` returns the ftui source itself: its state already
comes from the queue through runners/runstate.py). A foreign job's output dir (the script's ``--output_dir``,
or its work dir) may not exist while the job waits in the queue: the source keeps looking at each poll. Its
state is Slurm's while Slurm has one (pending while queued, running, then the output's final record or Slurm's end).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from runners import slurm
from runners.errors import UserError
from runners.watch import slurm as slurm_jobs
from runners.watch.sources.records import ThroughSource

STATES = {"queued": "pending", "running": "running"}


class SlurmJobSource(ThroughSource):
    kind = "slurm"
    can_control = False

    def __init__(self, job: slurm_jobs.SlurmJob) -> None:
        if job.output_dir is None:
            raise UserError(
                f"Found {job.label} ({job.state}) but not where it writes: its batch script has no --output_dir and "
                f"its work dir {job.work_dir} holds no trainer_state.json, checkpoint-*, TensorBoard or wandb files "
                f"written since it started. Attach to its output dir by path instead (stdout: "
                f"{slurm_jobs.stdout_file(job.job_id) or 'unknown'}).")
        self.job = job
        self.label = job.label
        self.output_dir = Path(job.output_dir)
        self.inner = None
        self._open_inner()

    def _open_inner(self) -> None:
        from runners.watch.sources import detect_kind, open_path

        kind = detect_kind(self.output_dir)
        if kind is not None:
            self.inner = open_path(self.output_dir, kind)

    @property
    def warnings(self) -> list[str]:
        return self.inner_warnings()

    def status(self) -> dict[str, Any]:
        inner = self.inner.status() if self.inner is not None else {}
        queue = slurm.job_state(self.job.job_id)
        state = inner.get("state", "unknown")
        if queue is not None and queue.phase in STATES and state not in ("finished", "stopped", "crashed"):
            state = STATES[queue.phase]
        elif queue is not None and queue.phase == "ended" and state in ("unknown", "running"):
            state = "finished" if queue.state == "COMPLETED" else slurm.ended_as(queue, True, False)[0]
        return {**inner, "state": state, "pids": inner.get("pids") or [], "slurm_job_id": self.job.job_id,
                "slurm": queue.to_json() if queue is not None else None, "output_dir": str(self.output_dir),
                "output_dir_from": self.job.output_dir_from, "work_dir": self.job.work_dir,
                "inner_kind": getattr(self.inner, "kind", None)}
