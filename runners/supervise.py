"""The detached supervisor of one run: ``python -m runners.supervise RUN_DIR``.

Started by ftui in a new session (``setsid``), it runs ``launch.sh`` in a process group of its own,
records pids and times in ``status.json``, forwards SIGTERM/SIGINT to the job's group, and when the
job ends records its final state: finished, stopped (a stop request was honoured), crashed (with
the error from the event stream or the log's last line) or killed (ended by a signal).
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from runners import events as ev
from runners import rundir


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


def final_state(run_dir: Path, code: int) -> str:
    records = ev.read_all(run_dir / ev.EVENTS_FILE)
    kinds = {r.get("type") for r in records}
    if code == 0:
        return "stopped" if ev.STOP in kinds else "finished"
    if code < 0 or code in (128 + signal.SIGTERM, 128 + signal.SIGKILL, 128 + signal.SIGINT) or \
            (rundir.read_status(run_dir) or {}).get("kill_requested"):
        return "killed" if ev.CRASH not in kinds else "crashed"
    return "crashed"


def main(run_dir_arg: str) -> int:
    run_dir = Path(run_dir_arg).resolve()
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    job = subprocess.Popen(["bash", str(run_dir / "launch.sh")], cwd=run_dir, process_group=0,
                           stdin=subprocess.DEVNULL)
    rundir.update_status(run_dir, state="running", pid=os.getpid(), job_pid=job.pid, pgid=job.pid,
                         host=socket.gethostname(), started_at=time.time())

    def forward(signum: int, _frame: object) -> None:
        try:
            os.killpg(job.pid, signum)
        except ProcessLookupError:
            pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    code = job.wait()
    try:  # leave no orphan ranks behind if the launcher died first
        os.killpg(job.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    state = final_state(run_dir, code)
    rundir.update_status(run_dir, state=state, exit_code=code, ended_at=time.time(),
                         error=error_summary(run_dir, code) if state in ("crashed", "killed") else None)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
