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

    Adds ``orphaned`` (the supervisor is gone, the job is not) and ``note`` (what was reconciled).
    """
    run_dir = Path(run_dir)
    status = dict(status if status is not None else (rundir.read_status(run_dir) or {}))
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
    current = rundir.read_status(run_dir) or {}
    if current.get("state") in rundir.TERMINAL_STATES:
        return current  # the supervisor recorded its end after all, while we looked
    if write_back and current:
        try:
            rundir.write_json_atomic(run_dir / rundir.STATUS_FILE, {**current, **changes})
        except OSError:
            pass  # a read-only or full disk: every reader reconciles the same way
    return status


def state(run_dir: Path) -> str:
    return (effective_status(run_dir) or {}).get("state") or "unknown"


def is_live(run_dir: Path) -> bool:
    return state(run_dir) in LIVE_STATES
