"""Pilot tests of the probe key in the setup screen, the time line of the plan preview, and the monitor's
plan-against-actual line (from the plan.json a launch writes)."""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

from tui_fakes import RECORDED_RUN, FrozenTelemetry, h100_nvml, wait_for

from runners import spec as specmod
from runners.watch.sources import open_source
from tests.conftest import group_gone
from tui.app import make_app
from tui.screens.monitor import MonitorScreen
from tui.screens.setup import SetupScreen


def plain(widget) -> str:  # type: ignore[no-untyped-def]
    return str(widget.render())


async def test_setup_probe_key_runs_the_probe_in_subprocesses(tmp_path: Path, write_spec, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # `import torch` fails in this (the UI) process from here on, whatever earlier tests imported: a probe that
    # imported it here instead of in its workers could not come back "ok"
    for name in {"torch", *(m for m in sys.modules if m.startswith("torch."))}:
        monkeypatch.setitem(sys.modules, name, None)
    spec = specmod.load(write_spec(training={"per_device_train_batch_size": 8, "per_device_eval_batch_size": 8}))
    app = make_app(runs_dir=tmp_path / "runs", setup_spec=spec, start="setup")
    async with app.run_test(size=(120, 40)) as pilot:
        setup = app.screen
        assert isinstance(setup, SetupScreen)
        await wait_for(lambda: setup.plan is not None and not setup.is_planning)(pilot)
        assert "CPU training: no step-time estimate" in plain(setup.query_one("#plan"))
        setup.probe_steps = 2
        await pilot.press("ctrl+p")
        assert setup.probing and "running a few real training steps" in plain(setup.query_one("#probe"))
        await wait_for(lambda: setup.probe is not None, timeout=500)(pilot)
        assert setup.probe["status"] == "ok", setup.probe
        text = plain(setup.query_one("#probe"))
        assert "probe:" in text and "measured step time on the CPU" in text and "(CPU, probe)" in text
        assert all(group_gone(pid) for pid in setup.probe["pids"])
        assert setup.probe["pids"] and os.getpid() not in setup.probe["pids"]  # it ran in processes of its own


async def test_setup_preview_shows_time_on_the_telemetry_gpu() -> None:
    data = specmod.load(Path(__file__).resolve().parents[2] / "assets" / "specs" / "demo.yaml").to_dict()
    data["hardware"]["strategy"] = "single"
    app = make_app(runs_dir=RECORDED_RUN.parent, setup_spec=specmod.from_dict(data), start="setup",
                   telemetry=FrozenTelemetry(nvml=h100_nvml(1)), clock=lambda: 0.0)
    async with app.run_test(size=(120, 40)) as pilot:
        setup = app.screen
        await wait_for(lambda: setup.plan is not None and not setup.is_planning)(pilot)
        assert setup.plan["time"]["gpu"] == "H100-SXM"  # the fake NVML's "NVIDIA H100 80GB HBM3"
        assert setup.plan["host_ram_capacity_bytes"] == 128 * 2**30  # the telemetry's RAM, not this machine's
        text = plain(setup.query_one("#plan"))
        assert "time:" in text and "/step ±30%" in text and "H100-SXM, estimate" in text


async def test_monitor_shows_step_time_and_eta_against_the_plan(tmp_path: Path) -> None:
    run = tmp_path / RECORDED_RUN.name
    shutil.copytree(RECORDED_RUN, run)
    (run / "plan.json").write_text(json.dumps({"step_s": 0.05, "step_s_band": [0.035, 0.065], "total_steps": 272,
                                               "wall_s": 20.0, "strategy": "cpu", "peak_allocated_bytes": 1,
                                               "device_used_bytes": 1}))
    app = make_app(runs_dir=tmp_path, source=open_source(str(run)))
    async with app.run_test(size=(120, 40)) as pilot:
        monitor = app.screen
        assert isinstance(monitor, MonitorScreen)
        await wait_for(lambda: monitor.polls > 0 and "vs plan" in plain(monitor.query_one("#progress")))(pilot)
        text = plain(monitor.query_one("#progress"))
        assert "vs plan 0.05s" in text and "planned run 20s" in text
        # the recorded run: start record at t=1795354543.230, finish at t=1795354619.889, 272 steps:
        # 76.659 s / 272 = 0.2818 s a step
        assert "step 0.282s" in text, text
