"""Issue 14, compare runs, as a user at 80x24 does it: mark two demo runs in the runs list, open the comparison,
read the overlay and the spec diff, switch the x axis, go back.

Both runs are real recorded `ftui demo` runs (one with learning rate 0.0005 for 2 epochs), copied into a runs
dir; the expectations come from their events.jsonl and spec.yaml.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import DataTable
from textual.widgets._footer import FooterKey
from tui_fakes import RECORDED_RUN, RECORDED_RUNS, FrozenTelemetry, h100_nvml, wait_for

from tests.conftest import spec_keys
from tui.app import make_app
from tui.screens.compare import CompareScreen
from tui.screens.runs import RunsScreen
from tui.widgets.chart import LineChart

SECOND = RECORDED_RUNS / "20261202-012257-demo-cf2a"
MISSING = object()


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    runs = tmp_path / "runs"
    for run in (RECORDED_RUN, SECOND):
        shutil.copytree(run, runs / run.name)
    return runs




def events(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines() if line.strip()]


def logged_steps(run: Path) -> list[int]:
    return sorted(r["step"] for r in events(run) if r["type"] == "log" and "loss" in r)


def cells(table: DataTable) -> list[list[str]]:
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


def help_key_visible(app: Any, width: int) -> bool:
    keys = [k for k in app.screen.query(FooterKey) if k.action in ("help", "app.help")]
    return bool(keys) and all(0 <= k.region.x and k.region.right <= width and k.region.width > 0 for k in keys)


async def test_mark_two_runs_and_compare_them(runs: Path) -> None:
    app = make_app(runs_dir=runs, telemetry=FrozenTelemetry(nvml=h100_nvml(0)), clock=lambda: 0.0)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        assert isinstance(screen, RunsScreen)
        await wait_for(lambda: len(screen.rows) == 2)(pilot)
        await pilot.press("equals_sign")  # nothing marked: it says what to do
        await wait_for(lambda: any("Mark at least two runs" in n.message for n in app._notifications))(pilot)
        assert isinstance(app.screen, RunsScreen)
        await pilot.press("space", "down", "space")
        table = screen.query_one("#runs", DataTable)
        await wait_for(lambda: all(row[0].startswith("● ") for row in cells(table)))(pilot)
        await pilot.press("equals_sign")
        await wait_for(lambda: isinstance(app.screen, CompareScreen) and app.screen.comparison is not None)(pilot)
        compare = app.screen
        assert isinstance(compare, CompareScreen)
        chart = compare.query_one("#compare-chart", LineChart)
        await wait_for(lambda: len(chart.lines) == 2)(pilot)
        by_name = {line.name: line for line in chart.lines}
        assert set(by_name) == {RECORDED_RUN.name, SECOND.name}  # one line per run, each its own colour
        assert len({line.component for line in chart.lines}) == 2
        for run in (RECORDED_RUN, SECOND):  # the train loss of each, on the step axis, up to its last step
            line = by_name[run.name]
            assert line.buckets and line.buckets[-1].step_hi == logged_steps(run)[-1]
        assert chart.title == "loss by step" and help_key_visible(app, 80)
        legend = str(compare.query_one("#compare-legend").render())
        assert RECORDED_RUN.name in legend and SECOND.name in legend

        first, second = (spec_keys(run) for run in (RECORDED_RUN, SECOND))
        differing = sorted(k for k in first.keys() | second.keys() if first.get(k, MISSING) != second.get(k, MISSING))
        assert "training.learning_rate" in differing
        await pilot.press("t")
        diff = compare.query_one("#compare-diff", DataTable)
        rows = cells(diff)
        assert [row[0] for row in rows] == differing  # the keys that differ, and nothing else
        headers = [str(c.label) for c in diff.ordered_columns]
        lr = rows[differing.index("training.learning_rate")]
        assert lr[headers.index(RECORDED_RUN.name)] == str(first["training.learning_rate"])
        assert lr[headers.index(SECOND.name)] == str(second["training.learning_rate"])

        await pilot.press("x")  # samples seen: step x the global batch the start record holds
        await wait_for(lambda: chart.title == "loss by samples")(pilot)
        for run in (RECORDED_RUN, SECOND):
            batch = next(r["train_batch_size"] for r in events(run) if r["type"] == "start")
            line = next(ln for ln in chart.lines if ln.name == run.name)
            assert line.buckets[-1].step_hi == logged_steps(run)[-1] * batch
        await pilot.press("escape")
        await wait_for(lambda: isinstance(app.screen, RunsScreen))(pilot)
