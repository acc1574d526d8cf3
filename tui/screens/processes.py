"""The processes screen: training jobs on this machine (what `ftui ps` lists), to attach to any of them.

Scanning walks /proc through psutil, so it runs in a worker thread every few seconds. Attaching opens
the same monitor as an ftui run; jobs ftui did not start can be watched and signalled, not stopped
with a checkpoint.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from textual import getters, on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Static

from runners.errors import UserError
from tui.widgets.footer import Footer

if TYPE_CHECKING:  # tui.app imports this module
    from tui.app import FtuiApp

SCAN_SECONDS = 3.0
COLUMNS = ("pid", "launcher", "workers", "GPU memory", "output dir")


class JobsScanned(Message):
    def __init__(self, jobs: list[Any], notes: list[str]) -> None:
        super().__init__()
        self.jobs, self.notes = jobs, notes

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, JobsScanned)


def gpu_text(job: Any) -> str:
    used = [mem for proc in job.processes for mem in proc.gpu_memory.values() if mem]
    return f"{sum(used) / 2**30:.1f} GiB" if used else "-"


class ProcessesScreen(Screen[None]):
    HELP_TITLE = "Processes"
    if TYPE_CHECKING:  # the dashboard's own app, for type checkers only
        app = getters.app(FtuiApp)
    BINDINGS = [
        Binding("enter", "attach", "Attach", show=False),
        Binding("r", "rescan", "Refresh"),
        Binding("escape", "back", "Runs"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.jobs: list[Any] = []
        self._scanning = False

    def compose(self) -> ComposeResult:
        yield Static("ftui · training processes on this machine", classes="screen-title")
        yield DataTable(id="jobs", cursor_type="row", zebra_stripes=True)
        yield Static("scanning...", id="jobs-hint")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#jobs", DataTable)
        for column in COLUMNS:
            table.add_column(column, key=column)
        self.action_rescan()
        self.set_interval(SCAN_SECONDS, self._timer)

    def _timer(self) -> None:
        if self.is_current:
            self.action_rescan()

    def action_rescan(self) -> None:
        if not self._scanning:
            self._scanning = True
            self._scan()

    @work(thread=True, group="jobs")
    def _scan(self) -> None:
        from runners.watch import procs

        jobs, notes = procs.find_jobs(self.app.telemetry())
        self.post_message(JobsScanned(jobs, notes))

    @on(JobsScanned)
    def _scanned(self, message: JobsScanned) -> None:
        self._scanning = False
        self.jobs = message.jobs
        table = self.query_one("#jobs", DataTable)
        keep = table.cursor_row
        table.clear()
        for job in self.jobs:
            table.add_row(str(job.pid), job.launcher, str(len(job.workers) or 1), gpu_text(job),
                          job.output_dir or "(not found)", key=str(job.pid))
        if self.jobs:
            table.move_cursor(row=min(keep, len(self.jobs) - 1), animate=False)
        hint = f"{len(self.jobs)} job(s) · enter: attach" if self.jobs else "No training processes found."
        self.query_one("#jobs-hint", Static).update("  ".join([hint, *message.notes]))

    @on(DataTable.RowSelected, "#jobs")
    def _selected(self, event: DataTable.RowSelected) -> None:
        self.action_attach()

    def action_attach(self) -> None:
        table = self.query_one("#jobs", DataTable)
        if not self.jobs or table.cursor_row >= len(self.jobs):
            self.notify("No job selected.", severity="warning")
            return
        from runners.watch.sources.pid import PidSource

        try:
            source = PidSource(self.jobs[table.cursor_row].pid)
        except UserError as exc:
            self.notify(str(exc), severity="error", timeout=10)
            return
        self.app.open_source(source)

    def action_back(self) -> None:
        self.app.pop_screen()
