"""CPU used by the dashboard process while it watches a live run.

Launches the real demo (`ftui demo --detach`, CPU training), then runs the dashboard in a separate
interpreter (headless driver, 120x40) on that run for DURATION seconds and reads that process's own
CPU time (psutil) over the window: polling the events file every 0.5 s, telemetry every 1 s, and
redrawing charts, tables and panels as records arrive. The training process is not counted.
Run: .venv/bin/python bench/ui_cpu.py [seconds]
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ui_startup import ROOT, write_section  # noqa: E402

CHILD = """
import asyncio, json, sys, time
import psutil
from pathlib import Path
from runners.watch.sources import open_path
from tui.app import make_app
from tui.screens.monitor import MonitorScreen

async def main():
    duration = float(sys.argv[2])
    app = make_app(runs_dir=Path(sys.argv[1]).parent, source=open_path(Path(sys.argv[1]), "ftui"))
    me = psutil.Process()
    async with app.run_test(size=(120, 40)) as pilot:
        while not (isinstance(app.screen, MonitorScreen) and app.screen.polls > 0):
            await pilot.pause(0.05)
        monitor = app.screen
        start_records, c0, t0 = monitor.history.records_seen, me.cpu_times(), time.monotonic()
        while time.monotonic() - t0 < duration:
            await pilot.pause(0.5)
        c1, t1 = me.cpu_times(), time.monotonic()
        used = (c1.user + c1.system) - (c0.user + c0.system)
        print(json.dumps({"seconds": t1 - t0, "cpu_seconds": used, "cpu_percent": 100 * used / (t1 - t0),
                          "records": monitor.history.records_seen - start_records, "polls": monitor.polls,
                          "rss_mib": me.memory_info().rss / 2**20, "state": monitor.history.state}))

asyncio.run(main())
"""


def main() -> None:
    duration = float(sys.argv[1]) if len(sys.argv) > 1 else 20.0
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "WANDB_MODE": "offline"}
    runs = Path(tempfile.mkdtemp(prefix="ftui-bench-cpu-"))
    done = subprocess.run([sys.executable, "-m", "tui", "demo", "--detach", "--runs-dir", str(runs)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    run_dir = next(p for p in runs.iterdir() if p.is_dir())
    if done.returncode:
        sys.exit(done.stderr)
    watch = subprocess.run([sys.executable, "-c", CHILD, str(run_dir), str(duration)], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=duration + 120)
    if watch.returncode:
        sys.exit(watch.stderr[-2000:])
    r = json.loads(watch.stdout.strip().splitlines()[-1])
    subprocess.run([sys.executable, "-m", "tui", "stop", str(run_dir), "--runs-dir", str(runs)], cwd=ROOT, env=env,
                   capture_output=True, timeout=60)
    lines = [
        f"## UI CPU while watching a live run ({r['seconds']:.0f} s, headless driver, 120x40)",
        "",
        f"- dashboard process: {r['cpu_seconds']:.2f} CPU-seconds over {r['seconds']:.1f} s = "
        f"**{r['cpu_percent']:.1f}% of one core**, while {r['records']} new records arrived "
        f"({r['records'] / r['seconds']:.0f}/s, the demo logs every step) and {r['polls']} polls ran",
        f"- its RSS at the end: {r['rss_mib']:.0f} MiB; run state at the end: {r['state']}",
        "",
    ]
    print("\n".join(lines))
    write_section("cpu", "\n".join(lines))


if __name__ == "__main__":
    main()
