"""The runs screen: every run in the runs dir, live or finished, with state, best metric and duration.

A worker thread rescans every two seconds. Each run's events file is read incrementally (a
:class:`TailReader` per run keeps its byte offset), and only the few facts the table shows are
kept, so a runs dir with long runs costs a full read once, then only the new bytes.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.coordinate import Coordinate
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from runners import events as ev
from runners import rundir, runstate
from tui.messages import RunsScanned
from tui.widgets.panels import fmt_duration

SCAN_SECONDS = 2.0
READ_CHUNK_BYTES = 4 * 2**20
COLUMNS = ("run", "state", "runner", "step", "best", "duration", "started")
NARROW_COLUMNS = ("run", "state", "step", "best", "duration")  # below 100 columns


@dataclass
class RunSummary:
    """What the runs table needs from one events file, updated incrementally."""

    reader: ev.TailReader
    step: int = 0
    max_steps: int | None = None
    best: dict[str, Any] | None = None
    last_eval: dict[str, Any] = field(default_factory=dict)
    ended: str | None = None

    def update(self) -> None:
        while records := self.reader.poll():  # small bites: a long run's file is read once, in 4 MiB steps
            self._fold(records)

    def _fold(self, records: list[dict[str, Any]]) -> None:
        for r in records:
            kind = r.get("type")
            if isinstance(r.get("step"), int):
                self.step = max(self.step, r["step"])
            if kind == ev.START and r.get("total_steps"):
                self.max_steps = int(r["total_steps"])
            elif kind == ev.CHECKPOINT and r.get("is_best"):
                self.best = {"metric": r.get("metric"), "value": r.get("value"), "step": r.get("step")}
            elif kind == ev.EVAL:
                self.last_eval = r.get("metrics") or {}
            elif kind in (ev.FINISH, ev.STOP, ev.CRASH):
                self.ended = kind


def best_text(summary: RunSummary) -> str:
    best = summary.best
    if best and isinstance(best.get("value"), (int, float)):
        return f"{str(best.get('metric')).removeprefix('eval_')} {best['value']:.4g}"
    loss = summary.last_eval.get("eval_loss")
    return f"eval_loss {loss:.4g}" if isinstance(loss, (int, float)) else ""


class RunsScreen(Screen[None]):
    """The home screen of `ftui`: pick a run to monitor, or start a new one."""

    HELP_TITLE = "Runs"
    BINDINGS = [
        Binding("enter", "open", "Open", show=False),
        Binding("n", "new", "New run"),
        Binding("d", "demo", "Demo"),
        Binding("r", "rescan", "Refresh"),
        Binding("p", "processes", "Processes"),
    ]

    def __init__(self, runs_dir: Path) -> None:
        super().__init__()
        self.runs_dir = runs_dir
        self.summaries: dict[Path, RunSummary] = {}
        self.rows: list[dict[str, Any]] = []
        self.columns: tuple[str, ...] = ()
        self._widths: list[int] = []
        self._scanning = False

    def compose(self) -> ComposeResult:
        try:
            shown = self.runs_dir.relative_to(Path.cwd())
        except ValueError:
            shown = self.runs_dir
        yield Static(f"ftui · runs in {shown}", classes="screen-title")
        yield DataTable(id="runs", cursor_type="row", zebra_stripes=True)
        yield Static(id="runs-hint")
        yield Footer()

    def on_mount(self) -> None:
        self.set_interval(SCAN_SECONDS, self._timer_scan)

    def _timer_scan(self) -> None:
        if self.is_current:  # under a monitor, the table is not seen: leave the CPU to the monitor
            self.action_rescan()

    def on_screen_resume(self) -> None:
        self.action_rescan()

    def action_rescan(self) -> None:
        if not self._scanning:
            self._scanning = True
            self._scan()

    @work(thread=True, group="scan")
    def _scan(self) -> None:
        rows = []
        now = self.app.clock()  # type: ignore[attr-defined]
        for path in rundir.list_runs(self.runs_dir):
            status = runstate.effective_status(path) or {}  # the same reconciled state as ftui runs
            summary = self.summaries.get(path)
            if summary is None:
                summary = self.summaries[path] = RunSummary(ev.TailReader(path / ev.EVENTS_FILE,
                                                                          max_bytes_per_poll=READ_CHUNK_BYTES))
            summary.update()
            started = status.get("started_at") or status.get("created_at")
            end = status.get("ended_at") or (now if status.get("state") in ("pending", "running") else None)
            rows.append({
                "path": path, "run": path.name,
                "state": (status.get("state") or "unknown") + (" (orphaned)" if status.get("orphaned") else ""),
                "runner": status.get("runner") or "", "step": f"{summary.step}/{summary.max_steps or '?'}",
                "best": best_text(summary), "duration": fmt_duration(end - started) if started and end else "-",
                "started": time.strftime("%m-%d %H:%M", time.localtime(started)) if started else "-",
            })
        self.post_message(RunsScanned(rows))

    def on_resize(self) -> None:
        columns = NARROW_COLUMNS if self.size.width < 100 else COLUMNS
        if columns != self.columns:
            self.columns = columns
            self._fill(self.rows, rebuild=True)

    def _fill(self, rows: list[dict[str, Any]], rebuild: bool = False) -> None:
        """Rows into the table: rebuilt when runs come or go or a column must widen, else updated in place."""
        table = self.query_one("#runs", DataTable)
        widths = [max([len(c)] + [len(str(r[c])) for r in rows]) for c in self.columns]
        if rebuild or widths != self._widths or [r["run"] for r in rows] != [r["run"] for r in self.rows]:
            keep = table.cursor_row
            table.clear(columns=True)
            for column, width in zip(self.columns, widths):
                table.add_column(column, width=width)
            for r in rows:
                table.add_row(*(r[c] for c in self.columns), key=r["run"])
            table.move_cursor(row=min(keep, max(0, len(rows) - 1)), animate=False)
            self._widths = widths
        else:
            for i, r in enumerate(rows):
                for col, key in enumerate(self.columns):
                    table.update_cell_at(Coordinate(i, col), r[key])
        self.rows = rows

    @on(RunsScanned)
    def _scanned(self, message: RunsScanned) -> None:
        self._scanning = False
        if not self.columns:
            self.columns = NARROW_COLUMNS if self.size.width < 100 else COLUMNS
            self._fill(message.rows, rebuild=True)
        else:
            self._fill(message.rows)
        hint = self.query_one("#runs-hint", Static)
        if not self.rows:
            hint.update(f"No runs in {self.runs_dir} yet.  n: set up a run   d: train the bundled demo (CPU, ~1 min)")
        else:
            hint.update(f"{len(self.rows)} run(s) · enter: monitor · quitting never stops a run")

    @on(DataTable.RowSelected, "#runs")
    def _selected(self, event: DataTable.RowSelected) -> None:
        self.action_open()

    def action_open(self) -> None:
        table = self.query_one("#runs", DataTable)
        if not self.rows or table.cursor_row >= len(self.rows):
            self.notify("No run selected.", severity="warning")
            return
        self.app.open_run_dir(self.rows[table.cursor_row]["path"])  # type: ignore[attr-defined]

    def action_processes(self) -> None:
        from tui.screens.processes import ProcessesScreen

        self.app.push_screen(ProcessesScreen())

    def action_new(self) -> None:
        self.app.action_new_run()  # type: ignore[attr-defined]

    def action_demo(self) -> None:
        self.notify("launching the demo...")
        self.app.launch(["demo"])  # type: ignore[attr-defined]
