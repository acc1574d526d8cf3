"""An ftui run dir: ``events.jsonl`` tailed by byte offset, state from ``status.json`` reconciled with
the processes and the final events (runners/runstate.py), so it agrees with ``ftui runs``.

The only source that can be controlled gracefully (stop / checkpoint requests land in
``control/``, honoured by the training callback), hence ``can_control = True``.
"""
from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from runners import events as ev
from runners import rundir, runstate

pid_alive = runstate.pid_alive  # the sources share one liveness rule (zombies and reused pids count as gone)


class FtuiRunSource:
    kind = "ftui"
    can_control = True

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.label = self.run_dir.name
        self._reader = ev.TailReader(self.run_dir / ev.EVENTS_FILE)
        self._own_warnings: list[str] = []

    @property
    def warnings(self) -> list[str]:
        return self._own_warnings + self._reader.warnings

    def poll(self) -> list[dict[str, Any]]:
        return self._reader.poll()

    def status(self) -> dict[str, Any]:
        status = rundir.read_status(self.run_dir)
        if status is None:
            missing = f"{self.run_dir / rundir.STATUS_FILE} is missing or not valid JSON; state unknown"
            if missing not in self._own_warnings:
                self._own_warnings.append(missing)
            status = {}
        if status:
            status = runstate.effective_status(self.run_dir, status) or status
        state = status.get("state") or "unknown"
        pids = [p for p in (status.get("pid"), status.get("job_pid"), *(status.get("child_pids") or []))
                if isinstance(p, int)]
        same_host = status.get("host") in (None, socket.gethostname())
        note = status.get("note")
        if note and (status.get("orphaned") or status.get("reconciled")):
            note = f"run {self.label}: {note}"
            if note not in self._own_warnings:
                self._own_warnings.append(note)
        return {
            "state": state,
            "pids": [p for p in dict.fromkeys(pids) if pid_alive(p)] if same_host else pids,
            "pgid": status.get("pgid"),
            "run_dir": str(self.run_dir),
            "output_dir": str(self.run_dir / rundir.OUTPUT_DIR),
            "exit_code": status.get("exit_code"),
            "error": status.get("error"),
            "started_at": status.get("started_at"),
            "ended_at": status.get("ended_at"),
            "orphaned": bool(status.get("orphaned")),
            # a Slurm run: its job and queue state (runners/slurm.py), and its script before it is submitted
            **{k: status[k] for k in ("slurm_job_id", "slurm", "slurm_script") if status.get(k)},
        }
