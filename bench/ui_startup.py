"""Time to first frame of the dashboard, in fresh interpreters (imports included).

Each repeat starts `python -c CHILD` and measures, from just before the spawn: the runs screen's
first frame (app mounted, first screen composed and painted), and the monitor's first frame with
data (a recorded 577-record run read and drawn). Headless driver (App.run_test): the terminal's own
paint time is not included. Run: .venv/bin/python bench/ui_startup.py [repeats]
"""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / "tests" / "tui" / "data" / "runs" / "20261122-133534-demo-1116"

CHILD = """
import asyncio, json, sys, time
t0 = float(sys.argv[1])
from pathlib import Path
from runners.watch.sources import open_path
from tui.app import make_app
from tui.screens.monitor import MonitorScreen
from tui.screens.runs import RunsScreen
out = {}
async def main():
    app = make_app(runs_dir=Path(sys.argv[2]).parent, source=open_path(Path(sys.argv[2]), "ftui"))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause(0)
        out["first_frame_s"] = time.time() - t0
        while not (isinstance(app.screen, MonitorScreen) and app.screen.polls > 0):
            await pilot.pause(0.005)
        await pilot.pause(0)
        out["monitor_with_data_s"] = time.time() - t0
    out["heavy_modules"] = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers", "deepspeed"))
    print(json.dumps(out))
asyncio.run(main())
"""


def main() -> None:
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    runs = []
    for _ in range(repeats):
        t0 = time.time()
        done = subprocess.run([sys.executable, "-c", CHILD, str(t0), str(RUN)], cwd=ROOT, capture_output=True,
                              text=True, timeout=120)
        if done.returncode:
            sys.exit(done.stderr[-2000:])
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    first = [r["first_frame_s"] for r in runs]
    data = [r["monitor_with_data_s"] for r in runs]
    lines = [
        f"## Time to first frame ({repeats} fresh interpreters, headless driver, 120x40)",
        "",
        f"- first frame (process start -> first screen painted): median {statistics.median(first) * 1000:.0f} ms, "
        f"min {min(first) * 1000:.0f} ms, max {max(first) * 1000:.0f} ms",
        f"- monitor drawn with a recorded run's {sum(1 for _ in open(RUN / 'events.jsonl'))} records: median "
        f"{statistics.median(data) * 1000:.0f} ms, max {max(data) * 1000:.0f} ms",
        f"- torch/transformers/deepspeed imported by the UI process: {runs[0]['heavy_modules'] or 'none'}",
        "",
    ]
    print("\n".join(lines))
    write_section("startup", "\n".join(lines))


def write_section(name: str, text: str) -> None:
    """Replace this benchmark's section of bench/results/ui.md, keeping the others."""
    path = ROOT / "bench" / "results" / "ui.md"
    sections: dict[str, str] = {}
    if path.exists():
        for chunk in path.read_text().split("<!-- section: ")[1:]:
            key, _, body = chunk.partition(" -->\n")
            sections[key] = body
    sections[name] = text.rstrip() + "\n\n"
    order = ["startup", "cpu", "ingest"]
    head = ("# Dashboard benchmarks\n\nMeasured on the project's CPU-only machine (2 cores, shared with other "
            "work while measuring). Regenerate with bench/ui_startup.py, bench/ui_cpu.py, bench/ui_ingest.py.\n\n")
    body = "".join(f"<!-- section: {k} -->\n{sections[k]}" for k in sorted(sections, key=lambda k: order.index(k)
                                                                            if k in order else 99))
    path.write_text(head + body)


if __name__ == "__main__":
    main()
