"""Controlling a launched run: graceful stop, checkpoint now, kill with escalation, resume.

Graceful stop and checkpoint go through request files that the training callback reads (so any
viewer can ask); kill signals the job's whole process group (the launcher and every rank), so no
orphan rank keeps holding a GPU. Only ftui-launched runs have request files; see runners/procs.py
for jobs ftui did not start.
"""
from __future__ import annotations

import os
import re
import signal
import time
from dataclasses import replace
from pathlib import Path

from runners import rundir
from runners import spec as specmod
from runners.errors import UserError


def _alive(pgid: int | None) -> bool:
    if not pgid:
        return False
    try:
        os.killpg(pgid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def is_running(run_dir: Path) -> bool:
    status = rundir.read_status(run_dir) or {}
    return status.get("state") in ("pending", "running") and _alive(status.get("pgid"))


def wait(run_dir: Path, timeout: float) -> bool:
    """True once the supervisor has recorded a terminal state."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if (rundir.read_status(run_dir) or {}).get("state") in rundir.TERMINAL_STATES:
            return True
        time.sleep(0.2)
    return False


def kill(run_dir: Path, grace: float = 10.0) -> str:
    """SIGTERM to the job's process group, SIGKILL after ``grace`` seconds; returns what was done."""
    status = rundir.read_status(run_dir) or {}
    pgid = status.get("pgid")
    if not _alive(pgid):
        return "not running"
    rundir.update_status(run_dir, kill_requested=time.time())
    os.killpg(pgid, signal.SIGTERM)
    deadline = time.time() + grace
    while time.time() < deadline and _alive(pgid):
        time.sleep(0.2)
    if _alive(pgid):
        os.killpg(pgid, signal.SIGKILL)
        return "killed (SIGKILL after SIGTERM was ignored)"
    return "terminated (SIGTERM)"


def stop(run_dir: Path, timeout: float | None = None, escalate: bool = False) -> str:
    """Ask for a graceful stop; optionally wait, and kill if it has not stopped within ``timeout``."""
    if not is_running(run_dir):
        return "not running"
    rundir.request(run_dir, rundir.STOP_REQUEST)
    if timeout is None:
        return "stop requested: the run saves a checkpoint at its next step and stops"
    if wait(run_dir, timeout):
        return f"stopped ({(rundir.read_status(run_dir) or {}).get('state')})"
    if escalate:
        return f"did not stop within {timeout:.0f}s: " + kill(run_dir)
    return f"stop requested; still running after {timeout:.0f}s"


def checkpoint(run_dir: Path) -> str:
    if not is_running(run_dir):
        return "not running"
    rundir.request(run_dir, rundir.CHECKPOINT_REQUEST)
    return "checkpoint requested: saved at the next step"


def last_checkpoint(run_dir: Path) -> Path | None:
    """The newest ``checkpoint-N`` (not simpletransformers' weightless ``checkpoint-N-epoch-E``)."""
    output = run_dir / rundir.OUTPUT_DIR
    found = [p for p in output.glob("checkpoint-*") if p.is_dir() and re.fullmatch(r"checkpoint-\d+", p.name)]
    return max(found, key=lambda p: int(p.name.split("-")[1])) if found else None


def resume_spec(run_dir: Path) -> specmod.RunSpec:
    """The old run's spec, continuing from its last checkpoint."""
    if is_running(run_dir):
        raise UserError(f"Run {run_dir.name} is still running: stop it first (ftui stop {run_dir.name}).")
    ckpt = last_checkpoint(run_dir)
    if ckpt is None:
        raise UserError(f"Run {run_dir.name} has no checkpoint to resume from (no {run_dir / 'output'}/checkpoint-*). "
                        "Start it again with ftui run instead.")
    spec = specmod.load(run_dir / rundir.SPEC_FILE)
    return replace(spec, training={**spec.training, "resume_from_checkpoint": str(ckpt)})
