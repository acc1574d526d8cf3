"""The monitor tells the truth (issue 13, tried at 120x40 and 80x24): checkpoints that are on disk, a chart
whose axes stay drawn and sane, one duration that never runs backwards, hints without doubled words, the
end of a crash's traceback, no control keys once a run has ended, and the views a watcher needs.
"""
from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from tui_fakes import RECORDED_RUN, FrozenTelemetry, ReplaySource, h100_nvml, wait_for

from runners import events as ev
from tui.app import make_app
from tui.screens.monitor import MonitorScreen
from tui.widgets.chart import LineChart

SIZES = [(120, 40), (80, 24)]
RECORDS = ev.read_all(RECORDED_RUN / ev.EVENTS_FILE)


def screen_text(app) -> str:  # type: ignore[no-untyped-def]
    """What the terminal shows now, as plain text."""
    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), record=True, force_terminal=True)
    console.print(app.screen._compositor.render_update(full=True))
    return console.export_text(styles=False)


async def footer(pilot) -> str:  # type: ignore[no-untyped-def]
    """The footer's line, once it has laid its keys out (it recomposes after bindings change)."""
    def last_line() -> str:
        return screen_text(pilot.app).rstrip("\n").splitlines()[-1]
    await wait_for(lambda: last_line().strip())(pilot)
    await pilot.pause(0.3)
    return last_line()


def monitor_app(source: Any, clock: Any = None):  # type: ignore[no-untyped-def]
    return make_app(runs_dir=Path(source.run_dir).parent, source=source,
                    telemetry=FrozenTelemetry(nvml=h100_nvml(0)), clock=clock or (lambda: source.last_t + 2))


async def opened(pilot) -> MonitorScreen:  # type: ignore[no-untyped-def]
    await wait_for(lambda: isinstance(pilot.app.screen, MonitorScreen) and pilot.app.screen.polls > 0
                   and pilot.app.screen.sample is not None)(pilot)
    await pilot.pause(0.3)
    return pilot.app.screen


def copy_run(tmp_path: Path) -> Path:
    run = tmp_path / "runs" / RECORDED_RUN.name
    shutil.copytree(RECORDED_RUN, run)
    return run


class ControlledSource(ReplaySource):
    """A live ftui run that takes control requests (for what a running run offers)."""

    can_control = True


# -- 1. checkpoints --------------------------------------------------------------------------------------

@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
async def test_checkpoints_tab_lists_only_checkpoints_on_disk(tmp_path: Path, size) -> None:  # type: ignore[no-untyped-def]
    """save_total_limit=2 kept the last two: the five rotated away are not offered as checkpoints."""
    run = copy_run(tmp_path)
    for step in (270, 272):
        (run / "output" / f"checkpoint-{step}").mkdir(parents=True)
    app = monitor_app(ReplaySource(run, state="finished"))
    async with app.run_test(size=size) as pilot:
        monitor = await opened(pilot)
        await pilot.press("p")
        await pilot.pause(0.3)
        text = screen_text(app)
        listed = [line for line in text.splitlines() if "checkpoint-" in line]
        assert any("checkpoint-270" in line for line in listed) and any("checkpoint-272" in line for line in listed)
        assert not any(f"checkpoint-{step} " in text for step in (27, 54, 81, 108, 135)), listed
        assert "deleted from disk" in text
        assert monitor.query_one("#checkpoint-list").option_count == 4  # two on disk, the deleted, the keys


# -- 2. chart axes ---------------------------------------------------------------------------------------

async def test_chart_keeps_its_x_axis_with_wide_labels_and_lr_never_below_zero(tmp_path: Path) -> None:
    app = monitor_app(ReplaySource(copy_run(tmp_path), state="finished"))
    async with app.run_test(size=(120, 40)) as pilot:
        monitor = await opened(pilot)
        for chart_id in ("#loss", "#lr"):
            chart = monitor.query_one(chart_id, LineChart)
            rows = str(chart.render()).splitlines()
            assert len(rows) == chart.size.height and "└" in rows[-1], chart_id  # the x axis is drawn
            assert all(len(row) <= chart.size.width for row in rows), chart_id  # no row pushed past the edge
        lr_labels = [row.split("┤")[0].strip() for row in str(monitor.query_one("#lr", LineChart).render()).splitlines()
                     if "┤" in row]
        assert lr_labels and all(float(label) >= 0 for label in lr_labels), lr_labels


# -- 3. one duration -------------------------------------------------------------------------------------

class StagedSource(ReplaySource):
    """Records handed over in stages, as a live run writes them; the status has the supervisor's start,
    seconds before the training process's start record."""

    def __init__(self, run_dir: Path, stages: list[int]) -> None:
        super().__init__(run_dir)
        self.stages, self.stage, self.sent = stages, 0, 0

    def poll(self) -> list[dict[str, Any]]:
        end = self.stages[self.stage]
        out, self.sent = self.records[self.sent:end], max(self.sent, end)
        return list(out)

    def status(self) -> dict[str, Any]:
        done = self.sent >= len(self.records)
        return {"state": "finished" if done else "running", "started_at": self.records[0]["t"] - 6,
                "ended_at": self.records[-1]["t"] + 2 if done else None, "pids": []}


def elapsed_seconds(text: str) -> float | None:
    value = text.split("elapsed ", 1)[1].split()[0]
    if value == "-":
        return None
    total, number = 0.0, ""
    for ch in value:
        if ch.isdigit():
            number += ch
        else:
            total += int(number) * {"h": 3600, "m": 60, "s": 1}[ch]
            number = ""
    return total


async def test_elapsed_never_runs_backwards_and_is_start_record_to_last_record(tmp_path: Path) -> None:
    start = next(i for i, r in enumerate(RECORDS) if r["type"] == "start")
    source = StagedSource(copy_run(tmp_path), [start, start + 1, start + 100, len(RECORDS)])
    now = [RECORDS[start]["t"] - 1]
    app = monitor_app(source, clock=lambda: now[0])
    seen: list[float | None] = []
    async with app.run_test(size=(120, 40)) as pilot:
        monitor = await opened(pilot)
        for stage, clock in enumerate([RECORDS[start]["t"] - 1, RECORDS[start]["t"] + 1,
                                       RECORDS[start + 99]["t"] + 1, RECORDS[-1]["t"] + 30]):
            source.stage, now[0] = stage, clock
            polls = monitor.polls
            await wait_for(lambda: monitor.polls >= polls + 2)(pilot)  # noqa: B023 - waited for at once
            seen.append(elapsed_seconds(str(monitor.query_one("#progress").render())))
    shown = [s for s in seen if s is not None]
    assert shown == sorted(shown), seen  # never backwards
    assert seen[-1] == int(RECORDS[-1]["t"] - RECORDS[start]["t"])  # start record to last record, ended
    from runners.watch.history import run_duration

    assert run_duration(RECORDS[start]["t"], RECORDS[-1]["t"]) == pytest.approx(RECORDS[-1]["t"] - RECORDS[start]["t"])
    assert run_duration(10.0, 20.0, now=15.0) == 10.0 and run_duration(None, 20.0) is None


# -- 4. hints and titles ---------------------------------------------------------------------------------

class PidLikeSource(ReplaySource):
    kind = "pid"

    def __init__(self, run_dir: Path) -> None:
        super().__init__(run_dir)
        self.label = "pid 4242 (ftui)"


async def test_titles_say_each_thing_once_and_hints_follow_the_spec(tmp_path: Path) -> None:
    run = copy_run(tmp_path)
    spec = run / "spec.yaml"
    spec.write_text(spec.read_text().replace("strategy: cpu", "strategy: zero3_offload"))
    app = monitor_app(PidLikeSource(run))
    async with app.run_test(size=(120, 40)) as pilot:
        monitor = await opened(pilot)
        await wait_for(lambda: monitor.strategy is not None)(pilot)
        await pilot.pause(1.2)  # the next telemetry sample redraws the resources
        title, resources = screen_text(app).splitlines()[0], str(monitor.query_one("#resources").render())
        assert "pid 4242 (ftui)" in title and "(pid)" not in title, title
        assert "no GPU" in resources and "zero3_offload" in resources and "strategy cpu" not in resources, resources
        await pilot.press("o")
        await pilot.press("f1")
        await pilot.pause(0.2)
        help_text = str(app.screen.query_one("#help-text").render())
        assert "LogScreen" not in help_text and help_text.startswith("Full log: keys"), help_text[:80]
    app = monitor_app(ReplaySource(run))
    async with app.run_test(size=(80, 24)) as pilot:
        await opened(pilot)
        title = screen_text(app).splitlines()[0]
        assert title.split() == ["ftui", "·", run.name], title  # not "(ftui)" after "ftui ·"


# -- 5. the log tail shows the end -----------------------------------------------------------------------

def crashed_run(tmp_path: Path) -> Path:
    run = tmp_path / "runs" / "20261201-000000-crash-1"
    run.mkdir(parents=True)
    frames = [f'  File "/work/main/runners/train/hf.py", line {100 + i}, in frame_{i}\n    call_{i}()' for i in range(40)]
    (run / "stdout.log").write_text("[rank0] loading model\n" + "Traceback (most recent call last):\n"
                                    + "\n".join(frames) + "\nRuntimeError: CUDA error: an illegal memory access (boom)\n")
    with ev.EventWriter(run / ev.EVENTS_FILE) as w:
        w.emit(ev.START, total_steps=100)
        w.emit(ev.LOG, step=1, loss=1.0)
        w.emit(ev.CRASH, error="RuntimeError: CUDA error: an illegal memory access (boom)", traceback="...")
    (run / "status.json").write_text(json.dumps({"state": "crashed"}))
    return run


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
async def test_log_tab_of_a_crashed_run_shows_the_end_of_the_traceback(tmp_path: Path, size) -> None:  # type: ignore[no-untyped-def]
    app = monitor_app(ReplaySource(crashed_run(tmp_path), state="crashed"))
    async with app.run_test(size=size) as pilot:
        await opened(pilot)
        await pilot.press("t")
        await pilot.pause(0.5)
        lines = screen_text(app).splitlines()
        pane = "\n".join(lines[next(i for i, line in enumerate(lines) if "Checkpoints" in line):])  # the tabs, below
        assert "call_39()" in pane and "RuntimeError: CUDA error: an illegal memory access (boom)" in pane, pane


# -- 6. ended runs offer no control ----------------------------------------------------------------------

@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
async def test_a_finished_run_offers_no_stop_checkpoint_or_kill(tmp_path: Path, size) -> None:  # type: ignore[no-untyped-def]
    app = monitor_app(ControlledSource(copy_run(tmp_path), state="finished"))
    async with app.run_test(size=size) as pilot:
        monitor = await opened(pilot)
        keys = await footer(pilot)
        assert "Stop" not in keys and "Ckpt" not in keys and "Kill" not in keys, keys
        assert "Help" in keys, keys
        for action in ("stop", "checkpoint", "kill"):
            assert not monitor.check_action(action, ())
        await pilot.press("k")
        await pilot.press("s")
        await pilot.pause(0.2)
        assert app.screen is monitor and not app._notifications


async def test_a_live_run_offers_stop_checkpoint_and_kill_that_asks_first(tmp_path: Path) -> None:
    from tui.screens.dialogs import ConfirmScreen

    app = monitor_app(ControlledSource(copy_run(tmp_path), limit=300))
    async with app.run_test(size=(80, 24)) as pilot:
        monitor = await opened(pilot)
        keys = await footer(pilot)
        assert "Stop" in keys and "Kill" in keys and "Help" in keys, keys
        await pilot.press("k")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        assert app.screen is monitor


# -- 7. what a watcher needs -----------------------------------------------------------------------------

async def test_chart_titles_show_log_scale_and_smoothing(tmp_path: Path) -> None:
    app = monitor_app(ReplaySource(copy_run(tmp_path), state="finished"))
    async with app.run_test(size=(80, 24)) as pilot:
        monitor = await opened(pilot)
        chart = monitor.query_one("#loss", LineChart)
        assert "log-y" not in str(chart.border_title) and "smoothed" not in str(chart.border_title)
        await pilot.press("l", "m")
        await pilot.pause(0.2)
        assert "log-y" in str(chart.border_title) and "smoothed" in str(chart.border_title)
        assert "log-y" in screen_text(app) and "smoothed" in screen_text(app)  # in the title as drawn
        await pilot.press("l")
        await pilot.pause(0.2)
        assert "log-y" not in str(chart.border_title) and "smoothed" in str(chart.border_title)


async def test_launch_sh_and_spec_open_read_only(tmp_path: Path) -> None:
    from textual.widgets import TextArea

    from tui.screens.log_view import RunFilesScreen

    run = copy_run(tmp_path)
    launch = "#!/bin/sh\nexec /usr/bin/python -m runners.train --run-dir /runs/x\n"
    (run / "launch.sh").write_text(launch)
    app = monitor_app(ReplaySource(run, state="finished"))
    async with app.run_test(size=(80, 24)) as pilot:
        monitor = await opened(pilot)
        await pilot.press("v")
        await pilot.pause(0.3)
        assert isinstance(app.screen, RunFilesScreen)
        areas = list(app.screen.query(TextArea))
        assert [a.text for a in areas] == [launch, (run / "spec.yaml").read_text()]
        assert all(a.read_only for a in areas)
        assert "runners.train --run-dir" in screen_text(app)
        await pilot.press("escape")
        assert app.screen is monitor


async def test_log_search_finds_and_steps_through_matches(tmp_path: Path) -> None:
    from tui.screens.log_view import LogScreen

    app = monitor_app(ReplaySource(copy_run(tmp_path), state="finished"))
    async with app.run_test(size=(80, 24)) as pilot:
        await opened(pilot)
        await pilot.press("o")
        log_screen = app.screen
        assert isinstance(log_screen, LogScreen)
        await wait_for(lambda: log_screen.query_one("#log").line_count > 0)(pilot)
        await pilot.press("slash", *"EVAL_LOSS", "enter")
        await pilot.pause(0.2)
        assert len(log_screen.matches) == 3  # the first match from the top of the view (it follows the end)
        first = log_screen.match
        assert log_screen.matches[first] >= log_screen.query_one("#log").scroll_y - 2
        found = str(log_screen.query_one("#log-found").render())
        assert found.startswith(f"match {first + 1}/3 · line ") and "eval_loss" in found
        await pilot.press("n", "n", "n")
        assert log_screen.match == first  # wrapped around
        await pilot.press("N")
        await pilot.pause(0.2)
        back = (first - 1) % 3
        assert log_screen.match == back and f"match {back + 1}/3" in screen_text(app)
        line = log_screen.matches[back]
        log = log_screen.query_one("#log")
        assert log.scroll_y <= line < log.scroll_y + log.size.height  # the match is in view
        await pilot.press("slash", *"no such text", "enter")
        await pilot.pause(0.2)
        assert not log_screen.matches and "no match" in str(log_screen.query_one("#log-found").render())
        await pilot.press("escape")
        assert isinstance(app.screen, MonitorScreen)


async def test_checkpoint_actions_copy_resume_export(tmp_path: Path) -> None:
    from tui.screens.dialogs import ConfirmScreen
    from tui.screens.setup import SetupScreen

    run = copy_run(tmp_path)
    for step in (270, 272):
        (run / "output" / f"checkpoint-{step}").mkdir(parents=True)
    app = monitor_app(ReplaySource(run, state="finished"))
    async with app.run_test(size=(120, 40)) as pilot:
        monitor = await opened(pilot)
        await pilot.press("p", "y")
        await pilot.pause(0.2)
        newest = run / "output" / "checkpoint-272"
        assert app.clipboard == str(newest)
        assert any(str(newest) in n.message for n in app._notifications)
        await pilot.press("up", "y")
        assert app.clipboard == str(run / "output" / "checkpoint-270")

        await pilot.press("x")
        await pilot.pause(0.2)
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")  # not now: the exact command is copied instead
        assert app.clipboard == f"ftui export {run} --checkpoint 270"
        await pilot.press("x", "y")  # run it: this empty folder is no complete save, and ftui export says so
        await wait_for(lambda: any(n.severity == "error" and "cannot be exported" in n.message for n in app._notifications),
                       timeout=120)(pilot)

        await pilot.press("down", "r")
        await pilot.pause(0.5)
        setup = app.screen
        assert isinstance(setup, SetupScreen)
        assert setup.data["training"]["resume_from_checkpoint"] == str(newest)
        await pilot.press("escape")
    assert monitor.checkpoints_on_disk is not None


async def test_chart_zoom_pan_and_cursor_readout(tmp_path: Path) -> None:
    app = monitor_app(ReplaySource(copy_run(tmp_path), state="finished"))
    async with app.run_test(size=(120, 40)) as pilot:
        monitor = await opened(pilot)
        chart = monitor.query_one("#loss", LineChart)
        whole = str(chart.render())
        await pilot.press("plus")
        await pilot.pause(0.2)
        lo, hi = monitor.window
        assert hi == 272 and 130 <= hi - lo <= 140  # half the run, at its end
        assert "steps" in str(chart.border_title) and str(chart.render()) != whole
        assert str(chart.render()).splitlines()[-1].split("└")[1].split()[0] == str(lo)  # the x axis follows
        await pilot.press("left_square_bracket")
        assert monitor.window[0] < lo
        await pilot.press("right_square_bracket", "right_square_bracket")
        assert monitor.window == (lo, hi)  # clamped at the run's end
        await pilot.press("minus")
        assert monitor.window is None

        await pilot.press("less_than_sign")
        await pilot.pause(0.2)
        assert monitor.cursor == 272
        readout = str(chart.border_subtitle)
        assert readout.startswith("step 272: train 0.04151") and "eval 0.2002" in readout and "lr 3.817e-06" in readout
        await pilot.press("less_than_sign")
        assert monitor.cursor < 272
        step = monitor.cursor
        loss = monitor.history.series["loss"].value_at(step)
        assert f"step {step}: train {loss:.4g}" in str(chart.border_subtitle)
        assert "┊" in str(chart.render())  # the cursor is drawn
        await pilot.press("0")
        assert monitor.window is None and monitor.cursor is None and not chart.border_subtitle
