"""Snapshot tests of every screen at 120x40 and 80x24 (pytest-textual-snapshot).

Frames are made deterministic by a recorded run replayed through a test source, telemetry over a
fake NVML with pinned CPU/RAM numbers, a frozen clock, UTC, and an empty HF cache. Regenerate with
`pytest tests/tui/test_snapshots.py --snapshot-update` and look at the SVGs before committing.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import Input
from tui_fakes import RECORDED_RUN, RECORDED_RUNS, ROOT, FrozenTelemetry, ReplaySource, h100_nvml, wait_for

from runners import spec as specmod
from tui.app import make_app
from tui.screens.monitor import MonitorScreen
from tui.screens.runs import RunsScreen
from tui.screens.setup import SetupScreen

SIZES = [(120, 40), (80, 24)]
MID_RUN = 300  # records replayed: about half of the recorded demo


def monitor_app(run_dir: Path, gpus: int):  # type: ignore[no-untyped-def]
    source = ReplaySource(run_dir, limit=MID_RUN)
    return make_app(runs_dir=run_dir.parent, source=source, telemetry=FrozenTelemetry(nvml=h100_nvml(gpus)),
                    clock=lambda: source.last_t + 2)


def monitor_ready(app) -> bool:  # type: ignore[no-untyped-def]
    screen = app.screen
    return isinstance(screen, MonitorScreen) and screen.polls > 0 and screen.sample is not None


def setup_app(spec: specmod.RunSpec):  # type: ignore[no-untyped-def]
    return make_app(runs_dir=RECORDED_RUNS, setup_spec=spec, telemetry=FrozenTelemetry(nvml=h100_nvml(1)),
                    start="setup", clock=lambda: 0.0)


def setup_ready(app) -> bool:  # type: ignore[no-untyped-def]
    screen = app.screen
    return (isinstance(screen, SetupScreen) and screen.plan is not None and not screen.is_planning
            and {"#data_preview", "#gpus"} <= screen.shown)


def demo_spec(**changes: object) -> specmod.RunSpec:
    data = specmod.load(ROOT / "assets" / "specs" / "demo.yaml").to_dict()
    data["model"]["name_or_path"] = "assets/demo/model"
    data["dataset"]["train"] = "assets/demo/reviews.csv"
    data["hardware"]["strategy"] = "single"
    for key, value in changes.items():
        section, _, name = key.partition(".")
        if name:
            data[section][name] = value
        else:
            data[section] = value
    return specmod.from_dict(data)


async def settle(pilot, condition) -> None:  # type: ignore[no-untyped-def]
    await wait_for(lambda: condition(pilot.app))(pilot)
    for field in pilot.app.screen.query(Input):
        field.cursor_blink = False  # a blinking cursor would make the frame depend on timing
    await pilot.pause(0.3)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_monitor_no_gpu(snap_compare, frozen_env, size) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(monitor_app(RECORDED_RUN, gpus=0), terminal_size=size,
                        run_before=lambda pilot: settle(pilot, monitor_ready))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_monitor_with_gpus(snap_compare, frozen_env, gpu_run, size) -> None:  # type: ignore[no-untyped-def]
    async def ready(pilot) -> None:  # type: ignore[no-untyped-def]
        await settle(pilot, lambda app: monitor_ready(app) and app.screen.estimate is not None)
    assert snap_compare(monitor_app(gpu_run, gpus=2), terminal_size=size, run_before=ready)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_runs(snap_compare, frozen_env, size) -> None:  # type: ignore[no-untyped-def]
    app = make_app(runs_dir=RECORDED_RUNS, telemetry=FrozenTelemetry(nvml=h100_nvml(0)), clock=lambda: 0.0)
    assert snap_compare(app, terminal_size=size, run_before=lambda pilot: settle(
        pilot, lambda a: isinstance(a.screen, RunsScreen) and bool(a.screen.rows)))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_setup(snap_compare, frozen_env, size) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(setup_app(demo_spec()), terminal_size=size,
                        run_before=lambda pilot: settle(pilot, setup_ready))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_plan_that_does_not_fit(snap_compare, frozen_env, size) -> None:  # type: ignore[no-untyped-def]
    """An 8B causal LM on one 80 GiB GPU: does not fit, levers ranked."""
    spec = demo_spec(task="causal-lm", **{"model.name_or_path": "meta-llama/Llama-3.1-8B",
                                          "model.torch_dtype": "bfloat16", "dataset.max_seq_length": 1024})

    async def ready(pilot) -> None:  # type: ignore[no-untyped-def]
        await settle(pilot, setup_ready)
    assert snap_compare(setup_app(spec), terminal_size=size, run_before=ready)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_help(snap_compare, frozen_env, size) -> None:  # type: ignore[no-untyped-def]
    async def ready(pilot) -> None:  # type: ignore[no-untyped-def]
        await settle(pilot, monitor_ready)
        await pilot.press("f1")
        await pilot.pause(0.3)
    assert snap_compare(monitor_app(RECORDED_RUN, gpus=0), terminal_size=size, run_before=ready)
