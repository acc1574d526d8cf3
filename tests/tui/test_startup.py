"""The UI process never imports torch, transformers or deepspeed: start the dashboard in a fresh
interpreter, open a monitor and the setup screen (plan computed), then look at sys.modules.
"""
from __future__ import annotations

import json
import subprocess
import sys

from tui_fakes import RECORDED_RUN, ROOT

SCRIPT = """
import asyncio, json, sys, time
from pathlib import Path
from runners.watch.sources import open_source
from tui.app import make_app
from tui.screens.monitor import MonitorScreen
from tui.screens.setup import SetupScreen

async def until(pilot, condition):
    for _ in range(300):
        if condition():
            return
        await pilot.pause(0.1)
    raise SystemExit("timed out")

async def main():
    app = make_app(runs_dir=Path(sys.argv[2]), source=open_source(sys.argv[1]))
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, MonitorScreen) and app.screen.polls > 0)
        app.action_new_run()
        await until(pilot, lambda: isinstance(app.screen, SetupScreen) and app.screen.plan is not None)
        await pilot.press("q")
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers", "deepspeed", "pandas"))
    print(json.dumps({"heavy": heavy, "textual": "textual" in sys.modules}))

asyncio.run(main())
"""


def test_dashboard_never_imports_training_libraries(tmp_path) -> None:  # type: ignore[no-untyped-def]
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(RECORDED_RUN), str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["textual"] is True  # the app really ran in that interpreter
    assert result["heavy"] == [], f"the UI process imported {result['heavy']}"
