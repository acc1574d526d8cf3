"""Pilot tests of the probe key in the setup screen, the time line of the plan preview, and the monitor's
plan-against-actual line (from the plan.json a launch writes)."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from tui_fakes import RECORDED_RUN, FrozenTelemetry, fake_nvml, wait_for

from runners import spec as specmod
from runners.watch.sources import open_source
from tui.app import make_app
from tui.screens.monitor import MonitorScreen
from tui.screens.setup import SetupScreen

from tests.conftest import group_gone


def plain(widget) -> str:  # type: ignore[no-untyped-def]
    return str(widget.render())


async def test_setup_probe_key_runs_the_probe_in_subprocesses(tmp_path: Path, write_spec) -> None:  # type: ignore[no-untyped-def]
    torch_before = "torch" in sys.modules
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
    assert torch_before or "torch" not in sys.modules, "the probe imported torch into the UI process"


async def test_setup_preview_shows_time_on_the_telemetry_gpu() -> None:
    data = specmod.load(Path(__file__).resolve().parents[2] / "assets" / "specs" / "demo.yaml").to_dict()
    data["hardware"]["strategy"] = "single"
    app = make_app(runs_dir=RECORDED_RUN.parent, setup_spec=specmod.from_dict(data), start="setup",
                   telemetry=FrozenTelemetry(nvml=fake_nvml(1)), clock=lambda: 0.0)
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
        await wait_for(lambda: monitor.polls > 0)(pilot)
        await pilot.pause(0.2)
        text = plain(monitor.query_one("#progress"))
        assert "vs plan 0.05s" in text and "planned run 20s" in text
        h = monitor.history
        actual = (h.last_event_at - h.started_at) / h.step
        assert f"step {actual:.3g}s" in text
