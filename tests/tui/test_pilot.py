"""Pilot tests of the dashboard on CPU with real parts: a real launch through `ftui run`, the real
training process, real event files, real stop requests; and attaching to a recorded finished run.
"""
from __future__ import annotations

import math
from pathlib import Path

from tui_fakes import RECORDED_RUN, ReplaySource, wait_for

from runners import events as ev
from runners import rundir
from runners import spec as specmod
from runners.launch import control
from runners.watch.history import Series
from runners.watch.sources import open_source
from tui.app import make_app
from tui.screens.dialogs import HelpScreen
from tui.screens.log_view import LogScreen
from tui.screens.monitor import MonitorScreen
from tui.screens.runs import RunsScreen
from tui.screens.setup import SetupScreen
from tui.widgets.alerts import AlertWatcher
from tui.widgets.chart import ChartLine, LineChart


def plain(widget) -> str:  # type: ignore[no-untyped-def]
    return str(widget.render())


async def test_setup_plan_launch_watch_stop_runs(tmp_path: Path, write_spec) -> None:  # type: ignore[no-untyped-def]
    spec = specmod.load(write_spec(training={"num_train_epochs": 40, "learning_rate": 0.001,
                                             "per_device_train_batch_size": 8}))
    runs = tmp_path / "runs"
    app = make_app(runs_dir=runs, setup_spec=spec, start="setup")
    async with app.run_test(size=(120, 40)) as pilot:
        setup = app.screen
        assert isinstance(setup, SetupScreen)
        await wait_for(lambda: setup.plan is not None and not setup.is_planning)(pilot)
        assert setup.plan["fits"] is True and setup.plan["strategy"] == "cpu"
        assert "runners.train" in plain(setup.query_one("#command"))
        peak = setup.plan["peak_allocated_bytes"]

        # the plan follows the form: a bigger batch needs more activation memory
        setup.query_one("#per_device_train_batch_size").value = "32"
        await wait_for(lambda: not setup.is_planning and setup.plan["peak_allocated_bytes"] != peak)(pilot)
        assert setup.plan["peak_allocated_bytes"] > peak
        setup.query_one("#per_device_train_batch_size").value = "8"
        await wait_for(lambda: not setup.is_planning and setup.plan["peak_allocated_bytes"] == peak)(pilot)

        await pilot.press("ctrl+r")  # launch: `ftui run --detach` in a subprocess, then the monitor
        await wait_for(lambda: isinstance(app.screen, MonitorScreen), timeout=180)(pilot)
        monitor = app.screen
        assert monitor.run_dir is not None and monitor.run_dir.parent == runs
        await wait_for(lambda: "loss" in monitor.history.series and monitor.history.series["loss"].count >= 2,
                       timeout=180)(pilot)
        chart = monitor.query_one("#loss", LineChart)
        before, seen = plain(chart), monitor.history.series["loss"].count
        await wait_for(lambda: monitor.history.series["loss"].count > seen + 2, timeout=60)(pilot)
        await wait_for(lambda: plain(chart) != before, timeout=30)(pilot)  # the loss chart moves as the run goes on

        await pilot.press("s")  # graceful stop: a checkpoint, then the stop
        await wait_for(lambda: monitor.history.state == "stopped", timeout=180)(pilot)
        await wait_for(lambda: (rundir.read_status(monitor.run_dir) or {}).get("state") == "stopped", timeout=60)(pilot)
        assert monitor.history.checkpoints, "stopping saved no checkpoint"
        assert control.last_checkpoint(monitor.run_dir) is not None

        await pilot.press("escape")
        runs_screen = app.screen
        assert isinstance(runs_screen, RunsScreen)
        await wait_for(lambda: any(r["run"] == monitor.run_dir.name and r["state"] == "stopped"
                                   for r in runs_screen.rows), timeout=30)(pilot)


async def test_attach_to_finished_run_review_and_keys(tmp_path: Path) -> None:
    source = open_source(str(RECORDED_RUN))
    app = make_app(runs_dir=tmp_path, source=source)
    async with app.run_test(size=(80, 24)) as pilot:
        monitor = app.screen
        assert isinstance(monitor, MonitorScreen)
        await wait_for(lambda: monitor.polls > 0 and monitor.sample is not None)(pilot)
        h = monitor.history
        recorded = ev.read_all(RECORDED_RUN / ev.EVENTS_FILE)
        eval_steps = list(dict.fromkeys(r["step"] for r in recorded if r["type"] == "eval"))
        best_step = [r["step"] for r in recorded if r["type"] == "checkpoint" and r["is_best"]][-1]
        assert h.state == "finished" and h.step == 272 and len(h.evals) == len(eval_steps)
        assert h.best and h.best["step"] == best_step
        assert "finished" in plain(monitor.query_one("#progress")) and "272/272" in plain(monitor.query_one("#progress"))
        assert "no GPU" in plain(monitor.query_one("#resources"))  # this machine has none: a normal state
        table = monitor.query_one("#eval-table")
        assert table.row_count == len(eval_steps)
        assert [table.get_row_at(i)[0] for i in range(table.row_count)].count("★") == 1
        assert table.get_row_at(eval_steps.index(best_step))[0] == "★"  # the best eval_accuracy

        chart = monitor.query_one("#loss", LineChart)
        linear = plain(chart)
        await pilot.press("l")
        await wait_for(lambda: chart.log_scale and plain(chart) != linear)(pilot)
        await pilot.press("m")
        await wait_for(lambda: chart.smoothing)(pilot)

        await pilot.press("o")
        assert isinstance(app.screen, LogScreen)
        await wait_for(lambda: app.screen.query_one("#log").line_count > 0)(pilot)
        await pilot.press("escape")
        await pilot.press("f1")
        assert isinstance(app.screen, HelpScreen)
        assert "stop gracefully" in plain(app.screen.query_one("#help-text"))
        await pilot.press("escape")

        await pilot.press("k")  # the run has ended: no kill to offer (test_monitor_truth: a live run asks first)
        assert app.screen is monitor
        await pilot.press("q")
    assert (rundir.read_status(RECORDED_RUN) or {})["state"] == "finished"


async def test_alerts_reach_the_status_line(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    with ev.EventWriter(run / ev.EVENTS_FILE) as w:
        w.emit(ev.START, total_steps=100)
        for step in range(1, 40):
            w.emit(ev.LOG, step=step, loss=1.0 - step * 0.001)
        w.emit(ev.LOG, step=40, loss=9.0)  # a spike
        w.emit(ev.LOG, step=41, loss=float("nan"))
    app = make_app(runs_dir=tmp_path, source=ReplaySource(run))
    async with app.run_test(size=(100, 30)) as pilot:
        monitor = app.screen
        await wait_for(lambda: monitor.polls > 0)(pilot)
        assert any("spike at step 40" in a for a in monitor.alerts)
        assert any("nan" in a for a in monitor.alerts)
        assert "⚠" in plain(monitor.query_one("#status-line"))


def test_alert_watcher_eval_regression_and_memory() -> None:
    watcher = AlertWatcher(peak_estimate_bytes=2**30)
    assert watcher.feed([{"type": "eval", "step": 10, "metrics": {"eval_loss": 0.5}}]) == []
    assert watcher.feed([{"type": "eval", "step": 20, "metrics": {"eval_loss": 0.52}}]) == []
    assert "eval regression" in watcher.feed([{"type": "eval", "step": 30, "metrics": {"eval_loss": 0.7}}])[0]
    assert "above the plan" in watcher.feed([{"type": "memory", "rank": 0, "peak_allocated": 2 * 2**30}])[0]
    assert watcher.feed([{"type": "memory", "rank": 0, "peak_allocated": 3 * 2**30}]) == []  # once per rank


async def test_chart_keeps_a_one_step_spike_among_a_million_points() -> None:
    series = Series()
    for step in range(1, 1_000_001):
        series.add(step, 10.0 if step == 654_321 else 1.0 + math.sin(step / 5000) * 0.1)
    assert len(series.buckets) <= series.capacity

    from textual.app import App

    class ChartApp(App[None]):
        def compose(self):  # type: ignore[no-untyped-def]
            yield LineChart(id="c")

    app = ChartApp()
    async with app.run_test(size=(60, 12)) as pilot:
        chart = app.query_one("#c", LineChart)
        chart.set_lines([ChartLine("loss", series.downsample(chart.plot_width()))])
        await wait_for(lambda: "┤" in plain(chart))(pilot)
        text = plain(chart)
    label, top_row = text.splitlines()[0].split("┤", 1)
    assert float(label) >= 10.0  # the spike sets the top of the axis
    drawn = [i for i, ch in enumerate(top_row) if ch.strip()]
    assert drawn and all(abs(i / len(top_row) - 0.654) < 0.05 for i in drawn), "the spike is drawn where it happened"


async def test_a_newly_chosen_model_trains_from_its_weights(tmp_path: Path, write_spec) -> None:  # type: ignore[no-untyped-def]
    """The demo spec's `init: random` belongs to the demo model: typing a hub id must not carry it over
    (that would silently train the hub model from a random init)."""
    spec = specmod.load(write_spec())
    assert spec.model.init == "random"
    app = make_app(runs_dir=tmp_path / "runs", setup_spec=spec, start="setup")
    async with app.run_test(size=(120, 40)) as pilot:
        setup = app.screen
        assert isinstance(setup, SetupScreen)
        await wait_for(lambda: setup.plan is not None and not setup.is_planning)(pilot)
        shown = setup.query_one("#model").value
        setup.query_one("#model").value = "bert-base-uncased"
        await wait_for(lambda: setup.data["model"]["name_or_path"] == "bert-base-uncased")(pilot)
        assert setup.data["model"]["init"] == "pretrained"
        setup.query_one("#model").value = shown  # back to the model the spec set a random init for
        await wait_for(lambda: setup.data["model"]["name_or_path"] == shown)(pilot)
        assert setup.data["model"]["init"] == "random"
