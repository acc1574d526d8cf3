"""Sources: anything ftui can watch, turned into records of the events.jsonl schema.

``open_source(target)`` takes what a user typed (an ftui run dir or run id, a Trainer /
sentence-transformers / simpletransformers output dir, a TensorBoard log dir, a wandb run dir or
``.wandb`` file, a PID, or a Slurm job id) and returns a :class:`Source`. A viewer only ever does
``history.apply(source.poll())`` on a timer, so a live ftui run, an attached job and a finished
output dir look the same in the monitor. Each kind lives in its own module, imported only when a
target of that kind is opened (wandb and TensorBoard protobufs are heavy).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from runners import rundir
from runners.errors import UserError

KINDS = ("ftui", "trainer", "simpletransformers", "tensorboard", "wandb", "pid", "slurm")


@runtime_checkable
class Source(Protocol):
    """What the monitor needs from anything it watches."""

    kind: str
    label: str
    can_control: bool  # True only for ftui run dirs (graceful stop / checkpoint requests)

    @property
    def warnings(self) -> list[str]: ...

    def poll(self) -> list[dict[str, Any]]:
        """New records since the last poll (events.jsonl schema); never raises on bad files."""
        ...

    def status(self) -> dict[str, Any]:
        """``state`` (running/finished/crashed/stopped/unknown), ``pids`` when known, and paths."""
        ...


def _has_tfevents(path: Path, depth: int = 3) -> bool:
    """Any TensorBoard event file at most ``depth`` levels below ``path`` (bounded: dirs can be huge)."""
    if depth < 0 or not path.is_dir():
        return False
    try:
        entries = list(os.scandir(path))
    except OSError:
        return False
    if any(e.name.startswith("events.out.tfevents.") and e.is_file() for e in entries):
        return True
    return any(_has_tfevents(Path(e.path), depth - 1) for e in entries
               if e.is_dir(follow_symlinks=False) and not e.name.startswith("checkpoint-"))


def _is_wandb(path: Path) -> bool:
    if path.is_file():
        return path.suffix == ".wandb"
    if any(path.glob("run-*.wandb")):
        return True
    # a project's wandb/ dir or its parent: latest-run, offline-run-*, run-*
    wandb_dir = path if path.name == "wandb" else path / "wandb"
    return wandb_dir.is_dir() and any(wandb_dir.glob("*run-*/run-*.wandb"))


def detect_kind(path: Path) -> str | None:
    """The kind of source a directory (or file) is, or None when ftui cannot tell.

    Order matters: an ftui run dir also holds a Trainer output dir; a Trainer output dir may hold
    TensorBoard files under runs/; a simpletransformers dir also has checkpoint-* dirs.
    """
    if not path.exists():
        return None
    if path.is_dir() and rundir.is_run_dir(path):
        return "ftui"
    if path.is_file():
        if path.suffix == ".wandb":
            return "wandb"
        if path.name.startswith("events.out.tfevents."):
            return "tensorboard"
        if path.name == rundir.STATUS_FILE or path.name == "events.jsonl":
            return "ftui" if rundir.is_run_dir(path.parent) else None
        return None
    if (path / "training_progress_scores.csv").is_file() or (path / "model_args.json").is_file() or \
            any(path.glob("checkpoint-*/model_args.json")):
        return "simpletransformers"
    if (path / "trainer_state.json").is_file() or any(path.glob("checkpoint-*/trainer_state.json")):
        return "trainer"
    if (path / "runs").is_dir() and _has_tfevents(path / "runs", 1):
        return "trainer"  # the Trainer's default logging dir, before its first checkpoint
    if _is_wandb(path):
        return "wandb"
    if _has_tfevents(path):
        return "tensorboard"
    return None


def open_path(path: Path, kind: str | None = None) -> Source:
    """A source for a path whose kind is known or detected (UserError if it is none of them)."""
    path = path.resolve()
    kind = kind or detect_kind(path)
    if kind == "ftui":
        from runners.watch.sources.ftui_run import FtuiRunSource
        return FtuiRunSource(path if path.is_dir() else path.parent)
    if kind == "trainer":
        from runners.watch.sources.trainer import TrainerSource
        return TrainerSource(path)
    if kind == "simpletransformers":
        from runners.watch.sources.simpletransformers import SimpleTransformersSource
        return SimpleTransformersSource(path)
    if kind == "tensorboard":
        from runners.watch.sources.tensorboard import TensorBoardSource
        return TensorBoardSource(path)
    if kind == "wandb":
        from runners.watch.sources.wandb_run import WandbSource
        return WandbSource(path)
    raise UserError(
        f"'{path}' is not something ftui can watch: expected an ftui run dir (status.json), a Trainer "
        f"output dir (trainer_state.json or checkpoint-*/), a simpletransformers output dir "
        f"(training_progress_scores.csv), a TensorBoard log dir (events.out.tfevents.*), a wandb run dir "
        f"(run-*.wandb) or a PID. Point ftui attach at one of those, or run 'ftui ps' to find running jobs.")


def _number(target: str) -> Source:
    """A PID of a training process here, else a Slurm job id (``slurm:ID`` says which is meant)."""
    from runners.watch import slurm

    job_id = slurm.parse_job_id(target)
    if not target.startswith("slurm:"):
        from runners.watch.sources.pid import PidSource
        try:
            return PidSource(int(target))
        except UserError as exc:
            job = slurm.find_job(job_id) if job_id else None
            if job is None:
                raise UserError(f"{exc} Nor is {target} a Slurm job id here.") from exc
    else:
        job = slurm.find_job(job_id) if job_id else None
        if job is None:
            raise UserError(f"'{target}' is not a Slurm job Slurm knows here (squeue -j {job_id}): give the id from "
                            "'ftui ps' or squeue, or attach to the job's output dir by path.")
    if job.run_dir is not None:
        return open_path(Path(job.run_dir), "ftui")  # an ftui run: its state already comes from the queue
    from runners.watch.sources.slurm_job import SlurmJobSource
    return SlurmJobSource(job)


def open_source(target: str, runs_dir: str | None = None) -> Source:
    """Resolve what a user typed: a PID, a path, or an ftui run id / prefix / 'latest'."""
    target = target.strip()
    if target.startswith("slurm:") or (target.isdigit() and not Path(target).exists()):
        return _number(target)
    path = Path(target).expanduser()
    if path.exists():
        return open_path(path)
    run = rundir.find_run(rundir.default_runs_dir(runs_dir), target)
    if run is not None:
        return open_path(run, "ftui")
    raise UserError(
        f"'{target}' is neither a path, a PID nor a run id in {rundir.default_runs_dir(runs_dir)}. "
        f"Give a directory (run dir, output dir, TensorBoard or wandb dir), a PID from 'ftui ps', "
        f"or a run id from 'ftui runs'.")
