"""The runs screen: every run in the runs dir, live or finished, with state, best metric and duration.

``/`` filters (id, runner, state), ``s`` or a click on a header sorts; the keys on the selected run
(spec, clone, resume, archive, delete) are in :mod:`tui.screens.run_actions`. ``space`` marks runs and ``=``
opens them side by side (:mod:`tui.screens.compare`). A launch from here
(demo, resume) shows a "starting" row at once, until the launcher answers.

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
from textual.widgets import DataTable, Input, Static

from runners import events as ev
from runners import rundir, runstate
from runners.results import evaluate
from runners.watch.history import listed_duration
from tui.format import clock
from tui.messages import RunsScanned
from tui.screens.run_actions import RunActionsMixin
from tui.widgets.footer import Footer

SCAN_SECONDS = 2.0
READ_CHUNK_BYTES = 4 * 2**20
COLUMNS = ("run", "state", "runner", "step", "best", "duration", "started")
NARROW_COLUMNS = ("run", "state", "step", "best", "duration")  # below 100 columns
SORTS = ("run", "state", "runner", "step", "best", "held-out", "duration", "started")  # the order `s` cycles through
FILTERED = ("run", "runner", "state")  # what the filter matches


@dataclass
class RunSummary:
    """What the runs table needs from one events file, updated incrementally."""

    reader: ev.TailReader
    step: int = 0
    max_steps: int | None = None
    best: dict[str, Any] | None = None
    last_eval: dict[str, Any] = field(default_factory=dict)
    ended: str | None = None
    started_at: float | None = None  # the start record's time, and the newest record's: the run's duration,
    last_at: float | None = None  # measured as the monitor measures it (runners.watch.history.run_duration)

    def update(self) -> None:
        while records := self.reader.poll():  # small bites: a long run's file is read once, in 4 MiB steps
            self._fold(records)

    def _fold(self, records: list[dict[str, Any]]) -> None:
        for r in records:
            kind = r.get("type")
            if isinstance(r.get("t"), (int, float)):
                self.last_at = r["t"] if self.last_at is None else max(self.last_at, r["t"])
                if kind == ev.START and self.started_at is None:
                    self.started_at = r["t"]
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


class RunsScreen(RunActionsMixin, Screen[None]):
    """The home screen of `ftui`: pick a run to monitor, or start a new one."""

    HELP_TITLE = "Runs"
    AUTO_FOCUS = "#runs"  # the table, not the (hidden) filter field
    BINDINGS = [
        Binding("enter", "open", "Open", show=False, tooltip="monitor the selected run"),
        Binding("n", "new", "New", tooltip="set up a new run"),
        Binding("d", "demo", "Demo", tooltip="train the bundled demo (CPU, about a minute)"),
        Binding("space", "mark", "Mark", tooltip="mark or unmark the selected run for a comparison"),
        Binding("equals_sign", "compare", "Compare", tooltip="compare the marked runs: curves, metrics, spec differences"),
        Binding("slash", "filter", "Filter", tooltip="filter the runs by id, runner or state"),
        Binding("s", "sort", "Sort", tooltip="sort by the next column (again on the same: reverse); or click a header"),
        Binding("v", "view_spec", "Spec", tooltip="the selected run's spec.yaml and launch.sh, read-only"),
        Binding("c", "clone", "Clone", tooltip="a new run in setup, prefilled with the selected run's spec"),
        Binding("u", "resume", "Resume", tooltip="continue the selected run from its last checkpoint, as a new run"),
        Binding("a", "archive", "Archive", tooltip="move the selected run to <runs dir>/.archive/ (asks first)"),
        Binding("x,delete", "delete", "Delete", tooltip="delete the selected run's dir (asks first)"),
        Binding("p", "processes", "Procs", tooltip="training processes on this machine (attach any)"),
        Binding("r", "rescan", "Refresh", show=False, tooltip="rescan the runs dir now"),
        Binding("escape", "clear_filter", "Clear filter", show=False, tooltip="clear the filter"),
    ]

    def __init__(self, runs_dir: Path) -> None:
        super().__init__()
        self.runs_dir = runs_dir
        self.summaries: dict[Path, RunSummary] = {}
        self.scanned: list[dict[str, Any]] = []  # every run, newest first
        self.rows: list[dict[str, Any]] = []  # what the table shows: starting, then filtered and sorted runs
        self.starting: dict[str, Any] | None = None  # the placeholder row of a launch under way
        self.marked: dict[Path, None] = {}  # the runs marked for a comparison, in the order marked
        self.filter_text = ""
        self.sort_by: str | None = None  # None: newest first
        self.sort_reverse = False
        self.columns: tuple[str, ...] = ()
        self._widths: list[int] = []
        self._scanning = False

    def compose(self) -> ComposeResult:
        try:
            shown = self.runs_dir.relative_to(Path.cwd())
        except ValueError:
            shown = self.runs_dir
        yield Static(f"ftui · runs in {shown}", classes="screen-title")
        yield Input(placeholder="filter: id, runner or state (enter: keep, escape: clear)", id="runs-filter",
                    compact=True)
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
            duration = listed_duration(summary.started_at, summary.last_at, status, now)
            best = summary.best.get("value") if summary.best else None
            rows.append({
                "path": path, "run": path.name,
                "state": runstate.shown_state(status),  # + (orphaned), or a queued Slurm job's reason
                "runner": status.get("runner") or "", "step": f"{summary.step}/{summary.max_steps or '?'}",
                "best": best_text(summary), "held-out": evaluate.short(evaluate.latest(path)), "duration": clock(duration),
                "started": time.strftime("%m-%d %H:%M", time.localtime(started)) if started else "-",
                "sort": {"step": summary.step, "best": best if isinstance(best, (int, float)) else float("-inf"),
                         "duration": duration if duration is not None else -1.0, "started": started or 0.0},
            })
        self.post_message(RunsScanned(rows))

    # -- the table ---------------------------------------------------------------------------------

    def shown_rows(self) -> list[dict[str, Any]]:
        """The runs the filter lets through, in the chosen order; a launch under way first."""
        terms = self.filter_text.lower().split()
        rows = [r for r in self.scanned if all(any(t in str(r[c]).lower() for c in FILTERED) for t in terms)]
        if self.sort_by is not None:
            key = self.sort_by
            rows.sort(key=lambda r: r["sort"].get(key, str(r[key]).lower()), reverse=self.sort_reverse)
        return ([self.starting] if self.starting else []) + rows

    def _label(self, column: str) -> str:
        return column + ((" ▼" if self.sort_reverse else " ▲") if column == self.sort_by else "")

    def _wanted_columns(self) -> tuple[str, ...]:
        """The columns for this width; ``held-out`` (the newest ``ftui eval`` result) once any run has one."""
        columns: tuple[str, ...] = NARROW_COLUMNS if self.size.width < 100 else COLUMNS
        if any(r.get("held-out") for r in self.scanned):
            at = columns.index("best") + 1
            columns = (*columns[:at], "held-out", *columns[at:])
        return columns

    def on_resize(self) -> None:
        columns = self._wanted_columns()
        if columns != self.columns:
            self.columns = columns
            self._fill(rebuild=True)

    def _fill(self, rebuild: bool = False) -> None:
        """Rows into the table: rebuilt when runs come or go or a column must widen, else updated in place."""
        if not self.columns:
            self.columns = self._wanted_columns()
        rows = self.shown_rows()
        table = self.query_one("#runs", DataTable)
        widths = [max([len(self._label(c))] + [len(self._cell(r, c)) for r in rows]) for c in self.columns]
        ids = [r["run"] for r in rows]
        if rebuild or widths != self._widths or ids != [r["run"] for r in self.rows]:
            keep = table.cursor_row
            selected = self.rows[keep]["run"] if 0 <= keep < len(self.rows) else None
            table.clear(columns=True)
            for column, width in zip(self.columns, widths):
                table.add_column(self._label(column), width=width, key=column)
            for r in rows:
                table.add_row(*(self._cell(r, c) for c in self.columns), key=r["run"])
            # the cursor stays on its run when rows are sorted, filtered or added
            row = ids.index(selected) if selected in ids else min(keep, max(0, len(rows) - 1))
            table.move_cursor(row=row, animate=False)
            self._widths = widths
        else:
            for i, r in enumerate(rows):
                for col, key in enumerate(self.columns):
                    table.update_cell_at(Coordinate(i, col), self._cell(r, key))
        self.rows = rows
        self._hint()

    def _cell(self, row: dict[str, Any], column: str) -> str:
        """A cell as shown: once any run is marked, the run column leads with the mark."""
        value = str(row[column])
        if column == "run" and self.marked:
            return ("● " if row["path"] in self.marked else "  ") + value
        return value

    def _hint(self) -> None:
        hint = self.query_one("#runs-hint", Static)
        count = len(self.rows) - (1 if self.starting else 0)
        if not self.scanned and not self.starting:
            hint.update(f"No runs in {self.runs_dir} yet.  n: set up a run   d: train the bundled demo (CPU, ~1 min)")
        elif self.filter_text and not count:
            hint.update(f"No run matches '{self.filter_text}' ({len(self.scanned)} in all) · escape: clear the filter")
        elif self.filter_text:
            hint.update(f"{count} of {len(self.scanned)} run(s) match '{self.filter_text}' · escape: all · enter: monitor")
        elif self.marked:
            hint.update(f"{len(self.marked)} marked · space: mark or unmark · =: compare the marked runs")
        else:
            hint.update(f"{count} run(s) · enter: monitor · f1: every key · quitting never stops a run")

    @on(RunsScanned)
    def _scanned(self, message: RunsScanned) -> None:
        self._scanning = False
        self.scanned = message.rows
        present = {r["path"] for r in message.rows}
        self.marked = {p: None for p in self.marked if p in present}  # archived or deleted runs drop out
        wanted = self._wanted_columns()  # a first held-out result adds its column
        rebuild, self.columns = wanted != self.columns, wanted
        self._fill(rebuild=rebuild)

    @on(DataTable.RowSelected, "#runs")
    def _selected(self, event: DataTable.RowSelected) -> None:
        self.action_open()

    @on(DataTable.HeaderSelected, "#runs")
    def _header(self, event: DataTable.HeaderSelected) -> None:
        self.sort(str(event.column_key.value))

    def sort(self, column: str) -> None:
        """Sort by ``column``; the same column again reverses the order."""
        if column == self.sort_by:
            self.sort_reverse = not self.sort_reverse
        else:
            self.sort_by, self.sort_reverse = column, column in ("step", "best", "duration", "started")
        self._fill(rebuild=True)

    def action_sort(self) -> None:
        order = [c for c in SORTS if c in self.columns] or list(SORTS)
        following = order[(order.index(self.sort_by) + 1) % len(order)] if self.sort_by in order else order[0]
        self.sort(following)
        direction = "descending" if self.sort_reverse else "ascending"
        self.notify(f"sorted by {following}, {direction} (s: next column, click a header: that one)", timeout=3)

    # -- the filter --------------------------------------------------------------------------------

    def action_filter(self) -> None:
        field = self.query_one("#runs-filter", Input)
        field.display = True
        field.focus()

    @on(Input.Changed, "#runs-filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.filter_text = event.value.strip()
        self._fill()

    @on(Input.Submitted, "#runs-filter")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        field = self.query_one("#runs-filter", Input)
        field.display = bool(self.filter_text)
        self.query_one("#runs", DataTable).focus()

    def action_clear_filter(self) -> None:
        field = self.query_one("#runs-filter", Input)
        field.value = ""
        field.display = False
        self.filter_text = ""
        self.query_one("#runs", DataTable).focus()
        self._fill()

    # -- the selected run --------------------------------------------------------------------------

    def chosen(self) -> dict[str, Any] | None:
        table = self.query_one("#runs", DataTable)
        if not self.rows or table.cursor_row >= len(self.rows):
            self.notify("No run selected.", severity="warning")
            return None
        row = self.rows[table.cursor_row]
        if row["path"] is None:
            self.notify(f"{row['run']}: the launcher has not answered yet.", severity="warning")
            return None
        return row

    def action_open(self) -> None:
        row = self.chosen()
        if row is not None:
            self.app.open_run_dir(row["path"])  # type: ignore[attr-defined]

    def action_mark(self) -> None:
        row = self.chosen()
        if row is None:
            return
        if row["path"] in self.marked:
            del self.marked[row["path"]]
        else:
            self.marked[row["path"]] = None
        self._fill()

    def action_compare(self) -> None:
        from tui.screens.compare import CompareScreen

        if len(self.marked) < 2:
            self.notify(f"Mark at least two runs to compare ({len(self.marked)} marked): space marks the selected run.",
                        severity="warning")
            return
        self.app.push_screen(CompareScreen(list(self.marked), self.runs_dir))

    def action_processes(self) -> None:
        from tui.screens.processes import ProcessesScreen

        self.app.push_screen(ProcessesScreen())

    def action_new(self) -> None:
        self.app.action_new_run()  # type: ignore[attr-defined]

    def action_demo(self) -> None:
        self.start_launch(["demo"], "the demo run")

    def start_launch(self, args: list[str], label: str) -> None:
        """`ftui ARGS` through the app, with feedback at once: the launcher checks model, data and cadence
        first (seconds, with transformers imported), and only then makes the run dir."""
        if self.starting is not None:
            self.notify(f"{self.starting['label']} is still starting: one launch at a time.", severity="warning")
            return
        self.notify(f"starting {label}: checking the model, data and cadence first", timeout=8)
        self.starting = {"path": None, "run": label, "label": label, "state": "starting", "runner": "",
                         "step": "-", "best": "", "held-out": "", "duration": "-", "started": "now", "sort": {}}
        self._fill(rebuild=True)
        self.query_one("#runs", DataTable).move_cursor(row=0, animate=False)
        self.app.launch(args, on_done=self._launch_done)  # type: ignore[attr-defined]

    def _launch_done(self, ok: bool) -> None:
        self.starting = None
        self._fill()
        self.action_rescan()
