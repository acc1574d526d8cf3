"""The detached supervisor of one run: ``python -m runners.launch.supervise RUN_DIR``.

Started by ftui in a new session (``setsid``), it runs ``launch.sh`` in a process group of its own,
records pids and times in ``status.json``, forwards SIGTERM/SIGINT to the job's group, and when the
job ends records its final state: finished, stopped (a stop request was honoured), crashed (with
the error from the event stream or the log's last line) or killed (ended by a signal).
On node K > 0 of a multi-node run (``FTUI_NODE_RANK=K``, set by ``ftui join``) it runs the same launch.sh and
records its node's facts in ``nodes/K/status.json``: node 0's status.json stays the run's own.

It must outlive a full disk: a failed status write is retried in place (rundir.write_json_atomic),
and if even that fails the supervisor still waits for the job and exits; readers then reconcile
the state from the job's events (runners/runstate.py). A crash while the disk is full is reported
as "No space left on device while saving checkpoint-N" when a checkpoint was left incomplete.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from runners import events as ev
from runners import rundir, runstate


def error_summary(run_dir: Path, exit_code: int) -> str | None:
    """The crash record's error, else the last non-empty log line that looks like an error."""
    crashes = [r for r in ev.read_all(run_dir / ev.EVENTS_FILE) if r.get("type") == ev.CRASH]
    if crashes:
        return str(crashes[0].get("error"))
    try:
        lines = (run_dir / rundir.LOG_FILE).read_text(errors="replace").splitlines()[-200:]
    except FileNotFoundError:
        return None
    for line in reversed(lines):
        if "Error" in line or "error" in line or "Exception" in line:
            return line.strip()[:500]
    return f"exit code {exit_code}" if exit_code else None


def disk_full_reason(run_dir: Path, error: str | None) -> str | None:
    """'No space left on device while saving checkpoint-N' when the disk filled up during a save."""
    from runners.launch import control

    text = error or ""
    try:
        free = shutil.disk_usage(run_dir).free
    except OSError:
        free = None
    full = "No space left" in text or "Errno 28" in text or "StorageFull" in text or (free is not None and free < 64 * 1024)
    if not full:
        return None
    incomplete = control.incomplete_checkpoints(run_dir)
    where = f" while saving {incomplete[-1].name}" if incomplete else ""
    return f"No space left on device{where}" + (f" ({text[:300]})" if text else "")


def record(where: Path, **changes: object) -> bool:
    """update_status (of the run dir, or of a node's dir) that never raises: a full or vanished disk must not
    kill the supervisor."""
    try:
        rundir.update_status(where, **changes)
        return True
    except OSError as exc:
        print(f"ftui supervisor: could not write {rundir.STATUS_FILE}: {exc}", file=sys.stderr, flush=True)
        return False


def final_state(run_dir: Path, code: int, where: Path | None = None) -> str:
    """The job's end from its exit code and the run's events; ``where``: the node's status dir (kill requests)."""
    records = ev.read_all(run_dir / ev.EVENTS_FILE)
    kinds = {r.get("type") for r in records}
    if code == 0:
        return "stopped" if ev.STOP in kinds else "finished"
    if code < 0 or code in (128 + signal.SIGTERM, 128 + signal.SIGKILL, 128 + signal.SIGINT) or \
            (rundir.read_status(where or run_dir) or {}).get("kill_requested"):
        return "killed" if ev.CRASH not in kinds else "crashed"
    return "crashed"


def become_subreaper() -> None:
    """Ranks orphaned by a dying launcher are re-parented here instead of to init (Linux), so the
    supervisor can end them: torchrun starts each rank in a session of its own, out of the job's group."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass


def reap_orphans(pgid: int) -> None:
    """Leave no rank behind once the launcher has ended: its group, then any child re-parented here."""
    import psutil

    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    left = psutil.Process().children(recursive=True)
    for proc in left:
        try:
            proc.kill()
        except psutil.Error:
            continue
    psutil.wait_procs(left, timeout=5)


def main(run_dir_arg: str) -> int:
    run_dir = Path(run_dir_arg).resolve()
    node = int(os.environ.get("FTUI_NODE_RANK") or 0)
    where = rundir.node_dir(run_dir, node)
    if node:
        try:
            where.mkdir(parents=True, exist_ok=True)
        except OSError:
            pass  # record() reports what it cannot write; the job runs all the same
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    become_subreaper()
    job = subprocess.Popen(["bash", str(run_dir / "launch.sh")], cwd=run_dir, process_group=0,
                           stdin=subprocess.DEVNULL)
    record(where, state="running", pid=os.getpid(), job_pid=job.pid, pgid=job.pid, host=socket.gethostname(),
           started_at=time.time(), pid_started_at=runstate.process_start_time(os.getpid()),
           job_started_at=runstate.process_start_time(job.pid))

    def forward(signum: int, _frame: object) -> None:
        try:
            os.killpg(job.pid, signum)
        except ProcessLookupError:
            pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    code = job.wait()
    reap_orphans(job.pid)
    try:
        state = final_state(run_dir, code, where)
        error = error_summary(run_dir, code) if state in ("crashed", "killed") else None
        if state == "crashed":
            error = disk_full_reason(run_dir, error) or error
    except Exception as exc:  # noqa: BLE001 - record something rather than nothing
        state, error = "crashed", f"ftui supervisor could not read the run's end: {type(exc).__name__}: {exc}"
    if not record(where, state=state, exit_code=code, ended_at=time.time(), error=error):
        # not even an in-place rewrite worked: readers reconcile from the events (runners/runstate.py)
        print(f"ftui supervisor: the run ended {state}" + (f": {error}" if error else ""), file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
