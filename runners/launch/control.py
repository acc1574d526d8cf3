"""Controlling a launched run: graceful stop, checkpoint now, kill with escalation, resume.

Graceful stop and checkpoint go through request files that the training callback reads (so any
viewer can ask); kill signals the job's process group and every descendant of it (torchrun starts
each rank in a session of its own), so no orphan rank keeps holding a GPU. A Slurm run (runners/launch/slurm.py)
is killed with scancel, and a stop while it is still queued takes it out of the queue. Only ftui-launched runs
have request files; see runners/watch/procs.py for jobs ftui did not start.
"""
from __future__ import annotations

import os
import signal
import socket
import time
from dataclasses import replace
from pathlib import Path

from runners import events as ev
from runners import rundir, runstate
from runners import spec as specmod
from runners.errors import UserError


def _alive(pgid: int | None) -> bool:
    return runstate.group_alive(pgid)


def is_running(run_dir: Path) -> bool:
    """Pending or running, with its supervisor or (orphaned) its job still alive; or, in a multi-node run,
    any other node still live."""
    status = runstate.effective_status(run_dir) or {}
    if status.get("slurm_job_id"):  # Slurm's word (runstate asked it), wherever the job runs
        return status.get("state") in runstate.LIVE_STATES
    others = [s for n, s in (status.get("node_states") or {}).items() if n and s in runstate.LIVE_STATES]
    return status.get("state") in runstate.LIVE_STATES and (
        _alive(status.get("pgid")) or runstate.pid_alive(status.get("pid"), status.get("pid_started_at")) or bool(others))


def wait(run_dir: Path, timeout: float) -> bool:
    """True once the run has a terminal state (recorded by its supervisor, or reconciled without one)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if (runstate.effective_status(run_dir) or {}).get("state") in rundir.TERMINAL_STATES:
            return True
        time.sleep(0.2)
    return False


def kill(run_dir: Path, grace: float = 10.0) -> str:
    """SIGTERM to the job's process group, SIGKILL after ``grace`` seconds; returns what was done.

    When the supervisor is gone (the job was orphaned), nobody else records the end: kill does. In a
    multi-node run every node on this machine is killed; a node on another machine loses its peers, and its
    launcher ends it (or run ``ftui kill`` there).
    """
    job = (rundir.read_status(run_dir) or {}).get("slurm_job_id")
    if job:
        return _cancel(run_dir, str(job), grace)
    nodes = (rundir.read_status(run_dir) or {}).get("nodes")
    if not isinstance(nodes, int) or nodes < 2:
        return _kill_node(run_dir, 0, grace)
    done = []
    for node in range(nodes):
        status = runstate.node_status(run_dir, node) or {}
        if status and status.get("host") not in (None, socket.gethostname()):
            done.append(f"node {node}: on {status.get('host')}, not this machine")
        elif status:
            done.append(f"node {node}: {_kill_node(run_dir, node, grace)}")
    return "; ".join(done)


def _cancel(run_dir: Path, job: str, grace: float) -> str:
    """A Slurm run's kill: scancel, which signals every node's tasks (SIGKILL after Slurm's KillWait)."""
    from runners.launch import slurm

    if not is_running(run_dir):
        return "not running"
    try:
        rundir.update_status(run_dir, kill_requested=time.time())
    except OSError:
        pass
    done = slurm.cancel(job)
    if wait(run_dir, grace + slurm.KILL_WAIT_SECONDS):
        return f"{done}: {(runstate.effective_status(run_dir) or {}).get('state')}"
    return f"{done}; Slurm ends it after its KillWait (squeue -j {job} shows it until then)"


def _kill_node(run_dir: Path, node: int, grace: float) -> str:
    """kill for one node's job (node 0: the run's own)."""
    where = rundir.node_dir(run_dir, node)
    status = runstate.node_status(run_dir, node) or {}
    pgid = status.get("pgid")
    if status.get("state") not in runstate.LIVE_STATES or not isinstance(pgid, int) or not _alive(pgid):
        return "not running"
    try:
        rundir.update_status(where, kill_requested=time.time())
    except OSError:
        pass
    tree = runstate.job_processes(pgid)  # ranks in sessions of their own are reached too

    def alive() -> bool:
        return _alive(pgid) or runstate.any_alive(tree)

    try:
        os.killpg(pgid, signal.SIGTERM)  # the launcher forwards it to its ranks
    except ProcessLookupError:  # ended in the meantime
        pass
    deadline = time.time() + grace
    while time.time() < deadline and alive():
        time.sleep(0.2)
    how = "terminated (SIGTERM)"
    if alive():
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        runstate.signal_all(tree, signal.SIGKILL)
        how = "killed (SIGKILL after SIGTERM was ignored)"
        deadline = time.time() + 5
        while time.time() < deadline and alive():
            time.sleep(0.1)
    _record_end_if_unsupervised(where, "killed", "killed by ftui kill while its supervisor was gone")
    return how


def _record_end_if_unsupervised(where: Path, state: str, error: str | None) -> None:
    """Write the final state (of the run dir, or a node's dir) when no supervisor is alive to do it (best effort)."""
    status = rundir.read_status(where) or {}
    if status.get("state") not in runstate.LIVE_STATES:
        return
    deadline = time.time() + 5  # a live supervisor records the end itself, within moments
    while time.time() < deadline and runstate.pid_alive(status.get("pid"), status.get("pid_started_at")):
        time.sleep(0.1)
        status = rundir.read_status(where) or {}
        if status.get("state") not in runstate.LIVE_STATES:
            return
    if runstate.pid_alive(status.get("pid"), status.get("pid_started_at")):
        return  # a live (if slow) supervisor records the end itself
    try:
        rundir.update_status(where, state=state, ended_at=time.time(), error=error, reconciled=True)
    except OSError:
        pass


def stop(run_dir: Path, timeout: float | None = None, escalate: bool = False) -> str:
    """Ask for a graceful stop; optionally wait, and kill if it has not stopped within ``timeout``."""
    if not is_running(run_dir):
        return "not running"
    status = runstate.effective_status(run_dir) or {}
    if (status.get("slurm") or {}).get("phase") == "queued":  # nothing runs yet: take it out of the queue
        from runners.launch import slurm

        rundir.update_status(run_dir, stop_requested=time.time())
        return f"Slurm job {status['slurm_job_id']} was still queued, so nothing had run: {slurm.cancel(status['slurm_job_id'])}"
    rundir.request(run_dir, rundir.STOP_REQUEST)
    if timeout is None:
        return "stop requested: the run saves a checkpoint at its next step and stops"
    if wait(run_dir, timeout):
        return f"stopped ({(runstate.effective_status(run_dir) or {}).get('state')})"
    if escalate:
        return f"did not stop within {timeout:.0f}s: " + kill(run_dir)
    return f"stop requested; still running after {timeout:.0f}s"


def checkpoint(run_dir: Path) -> str:
    if not is_running(run_dir):
        return "not running"
    rundir.request(run_dir, rundir.CHECKPOINT_REQUEST)
    return "checkpoint requested: saved at the next step"


def incomplete_checkpoints(run_dir: Path) -> list[Path]:
    return [p for p in rundir.numbered_checkpoints(run_dir) if rundir.checkpoint_problem(p) is not None]


def last_checkpoint(run_dir: Path, notes: list[str] | None = None) -> Path | None:
    """The newest complete ``checkpoint-N`` (not simpletransformers' weightless ``checkpoint-N-epoch-E``).

    Newer incomplete ones (a save cut short by a full disk or a kill) are skipped, each with a line
    in ``notes`` when given.
    """
    for path in reversed(rundir.numbered_checkpoints(run_dir)):
        problem = rundir.checkpoint_problem(path)
        if problem is None:
            return path
        if notes is not None:
            notes.append(f"skipping {path.name}: incomplete, {problem}")
    return None


def _progress(run_dir: Path) -> tuple[int, float | None]:
    """(last step, last epoch) the run's events tell."""
    step, epoch = 0, None
    for chunk in ev.iter_chunks(run_dir / ev.EVENTS_FILE):
        for r in chunk:
            if isinstance(r.get("step"), int) and r.get("type") in (ev.LOG, ev.EVAL, ev.CHECKPOINT, ev.STOP, ev.FINISH):
                step = max(step, r["step"])
            if isinstance(r.get("epoch"), (int, float)):
                epoch = float(r["epoch"])
    return step, epoch


def resume_spec(run_dir: Path, num_train_epochs: float | None = None, max_steps: int | None = None,
                notes: list[str] | None = None) -> specmod.RunSpec:
    """The old run's spec, continuing from its newest complete checkpoint.

    A finished run has nothing left to train: that is an error unless ``num_train_epochs`` or
    ``max_steps`` (applied to the spec's training section) asks for more.
    """
    if is_running(run_dir):
        raise UserError(f"Run {run_dir.name} is still running: stop it first (ftui stop {run_dir.name}).")
    spec = specmod.load(run_dir / rundir.SPEC_FILE)
    state = (runstate.effective_status(run_dir) or {}).get("state")
    step, epoch = _progress(run_dir)
    training = dict(spec.training)
    if state == "finished":
        epochs = training.get("num_train_epochs", 3)
        more = f"--num_train_epochs {int(epochs) + 1 if float(epochs).is_integer() else float(epochs) + 1}"
        if num_train_epochs is None and max_steps is None:
            raise UserError(f"Run {run_dir.name} finished at step {step}: there is nothing left to resume. To train it "
                            f"further, give the new total: ftui resume {run_dir.name} {more} (it trained "
                            f"{epochs} epoch(s)) or --max_steps N with N > {step}.")
        if max_steps is not None and max_steps <= step:
            raise UserError(f"Run {run_dir.name} finished at step {step}: --max_steps {max_steps} trains nothing more. "
                            f"Give --max_steps above {step}.")
        if max_steps is None and num_train_epochs is not None and epoch is not None and num_train_epochs <= epoch + 1e-9 \
                and int(training.get("max_steps", -1) or -1) <= 0:
            raise UserError(f"Run {run_dir.name} finished after {epoch:g} epoch(s): --num_train_epochs {num_train_epochs:g} "
                            f"trains nothing more. Give more epochs than {epoch:g}, e.g. {more}.")
    if num_train_epochs is not None:
        if num_train_epochs <= 0:
            raise UserError(f"--num_train_epochs must be positive, got {num_train_epochs:g}.")
        training["num_train_epochs"] = num_train_epochs
        if max_steps is None:
            training.pop("max_steps", None)  # max_steps would override the epochs
    if max_steps is not None:
        if max_steps <= 0:
            raise UserError(f"--max_steps must be positive, got {max_steps}.")
        training["max_steps"] = max_steps
    ckpt = last_checkpoint(run_dir, notes)
    if ckpt is None:
        raise UserError(f"Run {run_dir.name} has no complete checkpoint to resume from (no complete "
                        f"{run_dir / 'output'}/checkpoint-*). Start it again with ftui run instead.")
    return replace(spec, training={**training, "resume_from_checkpoint": str(ckpt)})
