"""The processes screen finds a real Trainer job started outside ftui and attaches the monitor to it."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from scripts.watch import ENV, SCRIPTS
from tui_fakes import wait_for

from tui.app import make_app
from tui.screens.monitor import MonitorScreen
from tui.screens.processes import ProcessesScreen


async def test_processes_screen_attaches_to_a_job_ftui_did_not_start(tmp_path: Path) -> None:
    log = open(tmp_path / "train.log", "w")
    job = subprocess.Popen([sys.executable, str(SCRIPTS / "train_trainer.py"), "--output_dir", "out", "--max_steps",
                            "400", "--step_delay", "0.2"], cwd=tmp_path, env=ENV, stdout=log,
                           stderr=subprocess.STDOUT, start_new_session=True)
    try:
        app = make_app(runs_dir=tmp_path / "runs")
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.press("p")
            screen = app.screen
            assert isinstance(screen, ProcessesScreen)
            await wait_for(lambda: any(j.pid == job.pid for j in screen.jobs), timeout=120)(pilot)
            row = next(i for i, j in enumerate(screen.jobs) if j.pid == job.pid)
            assert screen.jobs[row].output_dir == str(tmp_path / "out")
            screen.query_one("#jobs").move_cursor(row=row)
            await pilot.press("enter")
            await wait_for(lambda: isinstance(app.screen, MonitorScreen), timeout=30)(pilot)
            monitor = app.screen
            assert monitor.source.kind == "pid"
            await wait_for(lambda: monitor.history.step > 0, timeout=120)(pilot)
            await pilot.press("escape")
    finally:
        os.killpg(job.pid, signal.SIGKILL)
        job.wait()
        log.close()
