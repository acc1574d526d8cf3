"""Ingesting a 1,000,000-step run: time, memory, UI responsiveness, and redraw cost against a short run.

Writes an events.jsonl with N log records (every step), an evaluation every 1000 steps and a memory
record every 100, opens the dashboard's monitor on it in this process (headless driver, 120x40) and
measures: the time until everything is read and drawn, the RSS growth, the longest stall of the UI
event loop while the poll worker reads (a 10 ms ticker), and the time of a full redraw (charts
downsampled to their width, tables, panels) plus the loss chart's render, averaged over repeats.
The same redraw is timed on a 1,000-step run: bounded series make the two costs alike.
Run: .venv/bin/python bench/ui_ingest.py [steps]
"""
from __future__ import annotations

import asyncio
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from ui_startup import write_section  # noqa: E402

from runners.watch.sources import open_path  # noqa: E402
from tui.app import make_app  # noqa: E402
from tui.screens.monitor import MonitorScreen  # noqa: E402
from tui.widgets.chart import LineChart  # noqa: E402


def write_run(root: Path, steps: int) -> Path:
    run = root / f"run-{steps}"
    run.mkdir(parents=True)
    (run / "status.json").write_text(json.dumps({"state": "finished", "started_at": 1.0e9, "ended_at": 1.0e9 + steps}))
    with (run / "events.jsonl").open("w") as fh:
        fh.write(json.dumps({"v": 1, "t": 1.0e9, "type": "start", "total_steps": steps, "num_epochs": 3}) + "\n")
        for step in range(1, steps + 1):
            loss = 2.0 * math.exp(-step / (steps / 4)) + 0.05 * math.sin(step / 37.0) + (3.0 if step == steps // 3 else 0)
            fh.write(f'{{"v":1,"t":{1.0e9 + step},"type":"log","step":{step},"epoch":{3 * step / steps:.5f},'
                     f'"loss":{loss:.6f},"learning_rate":{1e-4 * (1 - step / steps):.8f},'
                     f'"samples_per_second":812.5,"tokens_per_second":104000.0}}\n')
            if step % 100 == 0:
                fh.write(f'{{"v":1,"t":{1.0e9 + step},"type":"memory","step":{step},"rank":0,"rss":{2**31}}}\n')
            if step % 1000 == 0:
                fh.write(f'{{"v":1,"t":{1.0e9 + step},"type":"eval","step":{step},"epoch":{3 * step / steps:.5f},'
                         f'"metrics":{{"eval_loss":{loss * 1.1:.6f},"eval_accuracy":{min(0.99, step / steps):.4f}}}}}\n')
    return run


async def measure(run: Path, redraws: int = 20) -> dict[str, float]:
    me = psutil.Process()
    rss0 = me.memory_info().rss
    app = make_app(runs_dir=run.parent, source=open_path(run, "ftui"))
    stalls: list[float] = []

    async def ticker() -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            stalls.append(now - last - 0.01)
            last = now

    async with app.run_test(size=(120, 40)) as pilot:
        t0 = time.perf_counter()
        tick = asyncio.create_task(ticker())
        while not (isinstance(app.screen, MonitorScreen) and app.screen.polls > 0):
            await pilot.pause(0.01)
        await pilot.pause(0)
        ingest = time.perf_counter() - t0
        tick.cancel()
        monitor = app.screen
        chart = monitor.query_one("#loss", LineChart)
        times = []
        for _ in range(redraws):
            s = time.perf_counter()
            monitor.redraw()
            chart.render()
            times.append(time.perf_counter() - s)
        rss1 = me.memory_info().rss
        buckets = sum(len(s.buckets) for s in monitor.history.series.values())
        return {"ingest_s": ingest, "rss_growth_mib": (rss1 - rss0) / 2**20, "max_stall_ms": max(stalls) * 1000,
                "p50_stall_ms": statistics.median(stalls) * 1000, "redraw_ms": statistics.median(times) * 1000,
                "records": monitor.history.records_seen, "buckets": buckets,
                "evals": len(monitor.history.evals)}


def main() -> None:
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    root = Path(tempfile.mkdtemp(prefix="ftui-bench-ingest-"))
    small, big = write_run(root, 1000), write_run(root, steps)
    size_mib = (big / "events.jsonl").stat().st_size / 2**20
    s = asyncio.run(measure(small))
    b = asyncio.run(measure(big))
    lines = [
        f"## Ingesting {steps:,} steps ({b['records']:,} records, {size_mib:.0f} MiB events.jsonl)",
        "",
        f"- read, folded and drawn in **{b['ingest_s']:.1f} s** (poll worker thread; "
        f"{b['records'] / b['ingest_s'] / 1000:.0f}k records/s)",
        f"- UI event loop while ingesting: median stall {b['p50_stall_ms']:.1f} ms, longest {b['max_stall_ms']:.0f} ms "
        "(a 10 ms ticker)",
        f"- memory: RSS grew {b['rss_growth_mib']:.0f} MiB (history keeps {b['buckets']:,} series buckets, "
        f"{b['evals']:,} evaluations)",
        f"- full redraw (charts downsampled to width, tables, panels): **{b['redraw_ms']:.1f} ms** after "
        f"{steps:,} steps vs {s['redraw_ms']:.1f} ms after 1,000 steps",
        "",
    ]
    print("\n".join(lines))
    write_section("ingest", "\n".join(lines))


if __name__ == "__main__":
    main()
