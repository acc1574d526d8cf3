"""Issue 13, the runs list and the footer as a user at 80x24 saw them: the help key on every screen,
feedback the moment the demo is asked for, filter, sort, the spec, clone, resume, archive and delete.

Launching is replaced by a recorder where a test only checks what was asked for and what the screen
shows meanwhile (a real launch through `ftui run` is test_pilot's); everything else is real: run dirs
copied from a recorded run, the real status reconciliation, real moves and deletes.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import DataTable, TextArea
from textual.widgets._footer import FooterKey
from tui_fakes import RECORDED_RUN, RECORDED_RUNS, FrozenTelemetry, ReplaySource, h100_nvml, wait_for

from runners import rundir
from tui.app import FtuiApp, make_app
from tui.messages import Launched
from tui.screens.dialogs import ConfirmScreen, HelpScreen
from tui.screens.log_view import RunFilesScreen
from tui.screens.monitor import MonitorScreen
from tui.screens.processes import ProcessesScreen
from tui.screens.runs import RunsScreen
from tui.screens.setup import SetupScreen

OLD, NEW = "20261120-100000-alpha-aaaa", "20261125-090000-beta-bbbb"


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    """Three finished runs: the recorded one and two copies (beta's runner is sft), newest first: beta, demo, alpha."""
    runs = tmp_path / "runs"
    for name in (RECORDED_RUN.name, OLD, NEW):
        shutil.copytree(RECORDED_RUN, runs / name)
    status = json.loads((runs / NEW / "status.json").read_text())
    (runs / NEW / "status.json").write_text(json.dumps({**status, "runner": "sft"}))
    return runs


def launches(app: FtuiApp) -> list[list[str]]:
    """Record what the app is asked to launch instead of starting `ftui` (the launcher answers later, by hand)."""
    asked: list[list[str]] = []
    app._launch = asked.append  # type: ignore[method-assign]
    return asked


def messages(app: FtuiApp) -> list[str]:
    return [n.message for n in app._notifications]


def shown_ids(screen: RunsScreen) -> list[str]:
    return [r["run"] for r in screen.rows]


async def runs_screen(pilot: Any) -> RunsScreen:
    screen = pilot.app.screen
    assert isinstance(screen, RunsScreen)
    await wait_for(lambda: len(screen.rows) >= 1)(pilot)
    return screen


def help_key_visible(app: FtuiApp, width: int) -> bool:
    keys = [k for k in app.screen.query(FooterKey) if k.action in ("help", "app.help")]
    return bool(keys) and all(0 <= k.region.x and k.region.right <= width and k.region.width > 0 for k in keys)


def shows_help_on(app: FtuiApp, screen_type: type) -> Any:
    """The condition: ``screen_type`` is up and its footer has the help key inside 80 columns."""
    return lambda: isinstance(app.screen, screen_type) and help_key_visible(app, 80)


async def test_the_help_key_is_in_the_footer_at_80x24_on_every_screen(tmp_path: Path) -> None:
    """Issue 13: at 80x24 the setup screen's footer dropped "f1 Help" off its right edge."""
    telemetry = FrozenTelemetry(nvml=h100_nvml(0))
    app = make_app(runs_dir=RECORDED_RUNS, telemetry=telemetry, start="setup", clock=lambda: 0.0)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(shows_help_on(app, SetupScreen))(pilot)
    app = make_app(runs_dir=RECORDED_RUNS, telemetry=telemetry, clock=lambda: 0.0)
    async with app.run_test(size=(80, 24)) as pilot:
        await runs_screen(pilot)
        await wait_for(shows_help_on(app, RunsScreen))(pilot)
        for key, screen_type in (("p", ProcessesScreen), ("v", RunFilesScreen)):
            await pilot.press(key)
            await wait_for(shows_help_on(app, screen_type))(pilot)
            await pilot.press("escape")
            await wait_for(shows_help_on(app, RunsScreen))(pilot)
    source = ReplaySource(RECORDED_RUN, limit=300)
    app = make_app(runs_dir=RECORDED_RUNS, source=source, telemetry=telemetry, clock=lambda: source.last_t + 2)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(shows_help_on(app, MonitorScreen))(pilot)
        await pilot.press("f1")
        assert isinstance(app.screen, HelpScreen)


async def test_demo_shows_a_starting_row_and_a_notification_at_once(tmp_path: Path) -> None:
    """Issue 13: after `d` the list said nothing for about 9 s (the launcher's checks import transformers)."""
    app = make_app(runs_dir=tmp_path / "runs", telemetry=FrozenTelemetry(nvml=h100_nvml(0)))
    asked = launches(app)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        assert isinstance(screen, RunsScreen)
        await pilot.press("d")
        await pilot.pause(0.05)  # one frame: nothing has answered yet
        assert asked == [["demo"]]
        assert any("starting the demo run" in m for m in messages(app))
        assert screen.rows and screen.rows[0]["state"] == "starting"
        table = screen.query_one("#runs", DataTable)
        assert "starting" in [str(c) for c in table.get_row_at(0)]
        await pilot.press("d")  # a second launch while one is under way is refused, with a reason
        assert asked == [["demo"]] and any("still starting" in m for m in messages(app))
        app.post_message(Launched(None, "the launcher failed"))  # the launcher answers: the row goes
        await wait_for(lambda: screen.starting is None and not screen.rows)(pilot)


async def test_filter_by_id_runner_and_state_and_sort_by_key_or_header(runs: Path) -> None:
    app = make_app(runs_dir=runs, telemetry=FrozenTelemetry(nvml=h100_nvml(0)), clock=lambda: 0.0)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await runs_screen(pilot)
        await wait_for(lambda: len(screen.rows) == 3)(pilot)
        assert shown_ids(screen) == [NEW, RECORDED_RUN.name, OLD]  # newest first
        await pilot.press("slash", *"alpha")
        await wait_for(lambda: shown_ids(screen) == [OLD])(pilot)
        await pilot.press("enter")  # the filter stays, the table has the keys again
        assert isinstance(app.focused, DataTable) and shown_ids(screen) == [OLD]
        await pilot.press("escape")
        await wait_for(lambda: len(screen.rows) == 3)(pilot)
        await pilot.press("slash", *"sft")  # the runner
        await wait_for(lambda: shown_ids(screen) == [NEW])(pilot)
        await pilot.press("escape", "slash", *"finished")  # the state: all three
        await wait_for(lambda: len(screen.rows) == 3 and screen.filter_text == "finished")(pilot)
        await pilot.press("escape")

        await pilot.press("s")  # by id, ascending: the oldest first
        assert screen.sort_by == "run" and shown_ids(screen) == [OLD, RECORDED_RUN.name, NEW]
        table = screen.query_one("#runs", DataTable)
        assert str(table.ordered_columns[0].label) == "run ▲"
        await pilot.click(DataTable, offset=(2, 0))  # the "run" header again: reversed
        await wait_for(lambda: screen.sort_reverse)(pilot)
        assert shown_ids(screen) == [NEW, RECORDED_RUN.name, OLD]
        await pilot.press("s")
        assert screen.sort_by == "state"
        await pilot.press("s")
        assert screen.sort_by == "runner" and shown_ids(screen)[0] == RECORDED_RUN.name  # hf_trainer before sft


async def test_spec_clone_and_resume_on_the_selected_run(runs: Path) -> None:
    app = make_app(runs_dir=runs, telemetry=FrozenTelemetry(nvml=h100_nvml(0)), clock=lambda: 0.0)
    asked = launches(app)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await runs_screen(pilot)
        await wait_for(lambda: len(screen.rows) == 3)(pilot)
        screen.query_one("#runs", DataTable).move_cursor(row=1)  # the recorded run
        await pilot.press("v")  # the spec, read-only (the recorded run has no launch.sh)
        assert isinstance(app.screen, RunFilesScreen) and app.screen.run_dir == runs / RECORDED_RUN.name
        assert app.screen.files == ["spec.yaml"]
        assert "name_or_path" in app.screen.query_one(TextArea).text and app.screen.query_one(TextArea).read_only
        await pilot.press("escape")
        assert app.screen is screen

        await pilot.press("c")  # clone: setup prefilled, under a new name
        await wait_for(lambda: isinstance(app.screen, SetupScreen))(pilot)
        setup = app.screen
        recorded = (runs / RECORDED_RUN.name / "spec.yaml").read_text()
        assert setup.data["name"] == "demo-clone" and "name: demo\n" in recorded
        assert setup.data["training"]["learning_rate"] is not None
        await pilot.press("escape")
        await wait_for(lambda: app.screen is screen)(pilot)

        await pilot.press("u")  # resume: `ftui resume RUN` through the launcher, a starting row meanwhile
        await pilot.pause(0.05)
        assert asked == [["resume", str(runs / RECORDED_RUN.name)]]
        assert screen.rows[0]["state"] == "starting" and screen.rows[0]["run"].startswith("resume of")
        app.post_message(Launched(None, "nothing left to resume"))
        await wait_for(lambda: screen.starting is None)(pilot)


async def test_archive_and_delete_ask_first_and_refuse_a_live_run(runs: Path) -> None:
    live = runs / "20261126-080000-live-cccc"
    shutil.copytree(RECORDED_RUN, live)
    status = json.loads((live / "status.json").read_text())
    status.update(state="running", host=socket.gethostname(), pid=os.getpid(), pgid=None, ended_at=None)
    status.pop("pid_started_at", None)
    (live / "status.json").write_text(json.dumps(status))
    app = make_app(runs_dir=runs, telemetry=FrozenTelemetry(nvml=h100_nvml(0)), clock=lambda: 0.0)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await runs_screen(pilot)
        await wait_for(lambda: len(screen.rows) == 4)(pilot)
        assert shown_ids(screen)[0] == live.name and screen.rows[0]["state"] == "running"
        for key in ("a", "x"):  # the live run: refused, no question asked
            await pilot.press(key)
            assert app.screen is screen and live.is_dir()
        assert any("a live run is never archived" in m for m in messages(app))
        assert any("a live run is never deleted" in m for m in messages(app))

        table = screen.query_one("#runs", DataTable)
        table.move_cursor(row=shown_ids(screen).index(OLD))
        await pilot.press("a")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await wait_for(lambda: OLD not in shown_ids(screen))(pilot)
        assert not (runs / OLD).exists() and rundir.is_run_dir(runs / rundir.ARCHIVE_DIR / OLD)

        table.move_cursor(row=shown_ids(screen).index(NEW))
        await pilot.press("x")
        assert isinstance(app.screen, ConfirmScreen) and "cannot be undone" in str(app.screen.question)
        await pilot.press("n")  # no: nothing happens
        assert app.screen is screen and (runs / NEW).is_dir()
        await pilot.press("x")
        await pilot.press("y")
        await wait_for(lambda: NEW not in shown_ids(screen))(pilot)
        assert not (runs / NEW).exists()
        assert sorted(shown_ids(screen)) == sorted([live.name, RECORDED_RUN.name])


async def test_the_runs_list_ftui_runs_and_the_monitor_show_one_duration(runs: Path) -> None:
    """One run, one duration: the runs list and `ftui runs --json` measure it as the monitor does, from the start
    record to the last record (the supervisor's started_at/ended_at are seconds apart from those)."""
    from runners.watch.history import RunHistory
    from tui.commands.run import run_rows
    from tui.format import clock
    from tui.widgets.panels import run_elapsed

    records = [json.loads(line) for line in (runs / OLD / "events.jsonl").read_text().splitlines()]
    history = RunHistory()
    history.apply(records)
    status = json.loads((runs / OLD / "status.json").read_text())
    expected = run_elapsed(history, status, now=status["ended_at"] + 999)
    assert expected is not None and abs(expected - (status["ended_at"] - status["started_at"])) > 1  # they differ
    row = next(r for r in run_rows(runs) if r["id"] == OLD)
    assert row["duration_s"] == pytest.approx(expected, abs=0.06)
    app = make_app(runs_dir=runs, telemetry=FrozenTelemetry(nvml=h100_nvml(0)), clock=lambda: 0.0)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await runs_screen(pilot)
        await wait_for(lambda: len(screen.rows) == 3)(pilot)
        shown = next(r for r in screen.rows if r["run"] == OLD)
        assert shown["duration"] == clock(expected)
