"""The honest state of an ftui run: ``status.json`` reconciled with the processes and the event stream.

``status.json`` is written by the supervisor. When the supervisor dies without writing a final
state (SIGKILL, OOM killer, a full disk, a reboot) it keeps saying ``running``. Every reader (``ftui
runs``, the runs list, the monitor, ``ftui attach``, stop/kill/resume) asks :func:`effective_status`
instead, which checks the supervisor's pid and the job's process group (with their start times, so
a reused pid is not taken for the run) and, when both are gone, derives the state from the job's
own final event: ``finish`` -> finished, ``stop`` -> stopped, ``crash`` -> crashed with its error,
none -> crashed ("supervisor and job gone without a final state"). That state is written back (best
effort, atomically) so every later reader agrees. A job whose supervisor died but which is still
running is ``running`` with ``orphaned: true`` and a ``note`` saying so.

A multi-node run is one run: node 0's ``status.json`` and each other node's ``nodes/K/status.json`` are
reconciled the same way (processes are checked on the node's own host only; another host's file is taken
as written), and the run is live while any node is (``node_states`` says which).

A Slurm run (``slurm_job_id``) is asked of Slurm first (runners/slurm.py): queued is ``pending`` with the
reason in ``slurm``, and a job Slurm has ended is never shown live, whichever host its supervisor was on.
"""
from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

from runners import events as ev
from runners import rundir

LIVE_STATES = ("pending", "running")
START_TIME_SLACK = 2.0  # seconds: a recorded start time and the live process's must agree this well


def _proc_stat(pid: int) -> list[bytes] | None:
    """Fields of /proc/PID/stat after the command name (state, ppid, pgrp, ...); None when gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[-1].split()
    except OSError:
        return None


def process_start_time(pid: int) -> float | None:
    """Unix time the process started (psutil), or None when it does not exist."""
    try:
        import psutil

        return psutil.Process(pid).create_time()
    except Exception:  # noqa: BLE001 - gone, no permission, no psutil: unknown
        return None


def pid_alive(pid: Any, started: Any = None) -> bool:
    """A live (non-zombie) process with this pid, and the same one when its start time was recorded."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    stat = _proc_stat(pid)
    if stat is not None and stat and stat[0] == b"Z":
        return False
    if isinstance(started, (int, float)):
        actual = process_start_time(pid)
        if actual is not None and abs(actual - started) > START_TIME_SLACK:
            return False  # the pid was reused by another process
    return True


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in the process group (a /proc scan; killpg where there is none)."""
    if not os.path.isdir("/proc"):
        try:
            os.killpg(pgid, 0)
            return [pgid]
        except (ProcessLookupError, PermissionError):
            return []
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        stat = _proc_stat(int(name))
        if stat and len(stat) > 2 and stat[0] != b"Z" and stat[2] == str(pgid).encode():
            out.append(int(name))
    return out


def job_processes(pgid: Any) -> list[int]:
    """The job's group and every descendant of it. torchrun and accelerate start each rank in a
    session of its own (torch elastic's subprocess handler), so the group alone misses the ranks."""
    if not isinstance(pgid, int) or pgid <= 0:
        return []
    import psutil

    found = set(group_members(pgid))
    for pid in list(found):
        try:
            found.update(child.pid for child in psutil.Process(pid).children(recursive=True))
        except psutil.Error:
            continue
    return sorted(found)


def any_alive(pids: list[int]) -> bool:
    """Whether any of ``pids`` is a live (non-zombie) process."""
    return any((stat := _proc_stat(pid)) is not None and stat[0] != b"Z" for pid in pids)


def signal_all(pids: list[int], signum: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, signum)
        except (ProcessLookupError, PermissionError):
            continue


def group_alive(pgid: Any, leader_started: Any = None) -> bool:
    """Whether any process of the job's group lives. A leader whose start time is not the recorded
    one means the pgid was reused: Linux never reuses a pid while a group of that id exists."""
    if not isinstance(pgid, int) or pgid <= 0:
        return False
    if not group_members(pgid):
        return False
    if isinstance(leader_started, (int, float)):
        actual = process_start_time(pgid)
        if actual is not None and abs(actual - leader_started) > START_TIME_SLACK:
            return False
    return True


def state_from_events(run_dir: Path) -> tuple[str, str | None, float | None]:
    """(state, error, time) from the job's last finish/stop/crash record."""
    last = ev.final_record(Path(run_dir) / ev.EVENTS_FILE)
    if last is None:
        return "crashed", "supervisor and job gone without a final state (no finish, stop or crash event)", None
    kind = last.get("type")
    if kind == ev.CRASH:
        return "crashed", str(last.get("error") or "crashed"), last.get("t")
    if kind == ev.STOP or last.get("stopped"):
        return "stopped", None, last.get("t")
    return "finished", None, last.get("t")


def _job_pgid(status: dict[str, Any], run_dir: Path) -> int | None:
    pgid = status.get("pgid")
    if isinstance(pgid, int):
        return pgid
    if status.get("node"):
        return None  # the start record is node 0's job
    for chunk in ev.iter_chunks(Path(run_dir) / ev.EVENTS_FILE):  # the job's own start record
        for r in chunk:
            if r.get("type") == ev.START and isinstance(r.get("pgid"), int):
                return r["pgid"]
    return None


def liveness(status: dict[str, Any], run_dir: Path) -> tuple[bool, bool]:
    """(supervisor alive, job group alive) on this host."""
    supervisor = pid_alive(status.get("pid"), status.get("pid_started_at"))
    job = group_alive(_job_pgid(status, run_dir), status.get("job_started_at"))
    return supervisor, job


def effective_status(run_dir: Path, status: dict[str, Any] | None = None, write_back: bool = True) -> dict[str, Any] | None:
    """``status.json`` with ``state`` made true (see the module doc); None when there is no status.

    Adds ``orphaned`` (the supervisor is gone, the job is not) and ``note`` (what was reconciled); for a
    multi-node run ``node_states`` (node -> state) too, and the state is ``running`` while any node runs.
    """
    run_dir = Path(run_dir)
    queued = _in_slurm(run_dir, status, write_back)
    status = queued if queued is not None else _reconcile(run_dir, run_dir, status, write_back)
    if status is None or not isinstance(status.get("nodes"), int) or status["nodes"] < 2:
        return status
    return _over_nodes(run_dir, status, write_back)


def _in_slurm(run_dir: Path, status: dict[str, Any] | None, write_back: bool) -> dict[str, Any] | None:
    """A Slurm run's state from its queue (runners/slurm.py), with ``slurm`` (the job's queue state) added:
    queued is ``pending``, in Slurm's hands is ``running``, and a job Slurm ended whose supervisor recorded no end
    takes it from the events, else from Slurm's end (written back, also into the nodes' files still live).
    None, so the local checks apply, when the run is no Slurm job or Slurm does not answer here."""
    status = dict(status if status is not None else (rundir.read_status(run_dir) or {}))
    if not status.get("slurm_job_id"):
        return None
    nodes = status["nodes"] if isinstance(status.get("nodes"), int) else 1
    live_nodes = [rundir.node_dir(run_dir, k) for k in range(1, nodes)
                  if (rundir.read_status(rundir.node_dir(run_dir, k)) or {}).get("state") in LIVE_STATES]
    if status.get("state") not in LIVE_STATES and not live_nodes:
        return None
    from runners import slurm

    job = slurm.job_state(status["slurm_job_id"])
    if job is None:
        return None
    status["slurm"] = job.to_json()
    if job.phase != "ended":
        return status if status.get("state") not in LIVE_STATES else \
            {**status, "state": "pending" if job.phase == "queued" else "running"}
    if status.get("state") in LIVE_STATES and status.get("host") in (None, socket.gethostname()) and \
            pid_alive(status.get("pid"), status.get("pid_started_at")):
        return status  # its supervisor is recording the end right now
    state, error, when = state_from_events(run_dir)
    if when is None:
        state, error = slurm.ended_as(job, started=bool(status.get("started_at")),
                                      stop_requested=bool(status.get("stop_requested")))
    changes = {"state": state, "ended_at": when or time.time(), "reconciled": True, "slurm": job.to_json(),
               "note": f"Slurm job {job.job_id} ended {job.state} without a final state recorded; {state} was read "
                       f"from " + ("the events" if when else "Slurm")}
    if error:
        changes["error"] = error
    for where in live_nodes:  # nodes Slurm killed before their supervisor wrote anything
        if write_back:
            _write_changes(where, changes if status.get("state") in LIVE_STATES else {**changes, "state": status["state"]})
    if status.get("state") not in LIVE_STATES:
        return None  # node 0 recorded its end; the nodes' files now agree
    current = rundir.read_status(run_dir) or {}
    if current.get("state") in rundir.TERMINAL_STATES:
        return current
    if write_back:
        _write_changes(run_dir, changes)
    return {**status, **changes}


def _write_changes(where: Path, changes: dict[str, Any]) -> None:
    current = rundir.read_status(where) or {}
    if current and current.get("state") in LIVE_STATES:
        try:
            rundir.write_json_atomic(where / rundir.STATUS_FILE, {**current, **changes})
        except OSError:
            pass  # a read-only or full disk: every reader reconciles the same way


def node_status(run_dir: Path, node: int, write_back: bool = True) -> dict[str, Any] | None:
    """One node's own status, reconciled (node 0: the run's status.json as written by its supervisor)."""
    return _reconcile(Path(run_dir), rundir.node_dir(Path(run_dir), node), None, write_back)


def _over_nodes(run_dir: Path, status: dict[str, Any], write_back: bool) -> dict[str, Any]:
    """The run's state over all its nodes: live while one is; else node 0's, unless another node failed."""
    states: dict[int, str] = {0: str(status.get("state"))}
    failed: list[tuple[int, dict[str, Any]]] = []
    for node in range(1, status["nodes"]):
        other = node_status(run_dir, node, write_back)
        states[node] = str(other.get("state")) if other else "not joined"
        if other and other.get("state") in ("crashed", "killed"):
            failed.append((node, other))
    status["node_states"] = states
    live = [n for n, s in states.items() if s in LIVE_STATES]
    if status.get("state") not in LIVE_STATES and live:
        status.update(state="running", note=f"node 0 ended {states[0]}; node(s) {', '.join(map(str, live))} still running")
    elif not live and status.get("state") in ("finished", "stopped") and failed:
        node, other = failed[0]
        status.update(state=other["state"], error=f"node {node}: {other.get('error') or other['state']}")
    return status


def _reconcile(run_dir: Path, where: Path, status: dict[str, Any] | None, write_back: bool) -> dict[str, Any] | None:
    """One status file (``where``/status.json) made true; the events are always the run dir's."""
    status = dict(status if status is not None else (rundir.read_status(where) or {}))
    if not status:
        return None
    if status.get("state") not in LIVE_STATES or status.get("host") not in (None, socket.gethostname()):
        return status
    if not status.get("pid") and _job_pgid(status, run_dir) is None:
        return status  # pending: neither the supervisor nor the job has recorded itself yet
    supervisor, job = liveness(status, run_dir)
    if supervisor:
        return status
    if job:
        status.update(state="running", orphaned=True,
                      note=f"the supervisor (pid {status.get('pid')}) is gone; the job (process group "
                           f"{status.get('pgid')}) is still running, so its end will be read from its events")
        return status
    state, error, when = state_from_events(run_dir)
    if status.get("kill_requested") and state == "crashed" and error and error.startswith("supervisor"):
        state, error = "killed", None
    changes = {"state": state, "ended_at": when or time.time(), "reconciled": True,
               "note": f"the supervisor (pid {status.get('pid')}) and the job ended without recording a final state; "
                       f"{state} was read from " + ("the events" if when else "their absence")}
    if error:
        changes["error"] = error
    status.update(changes)
    current = rundir.read_status(where) or {}
    if current.get("state") in rundir.TERMINAL_STATES:
        return current  # the supervisor recorded its end after all, while we looked
    if write_back and current:
        try:
            rundir.write_json_atomic(where / rundir.STATUS_FILE, {**current, **changes})
        except OSError:
            pass  # a read-only or full disk: every reader reconciles the same way
    return status


def shown_state(status: dict[str, Any]) -> str:
    """The state as a state column shows it: ``running (orphaned)``, ``pending (Resources)`` for a queued Slurm job."""
    from runners import slurm

    state = str(status.get("state") or "unknown")
    extra = "orphaned" if status.get("orphaned") else slurm.describe(status)
    return f"{state} ({extra})" if extra else state


def state(run_dir: Path) -> str:
    return (effective_status(run_dir) or {}).get("state") or "unknown"


def is_live(run_dir: Path) -> bool:
    return state(run_dir) in LIVE_STATES
