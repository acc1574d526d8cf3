"""The monitor: one run (or any attached source) live, or reviewed after the fact.

A timer starts a poll worker (a thread) that reads new records from the source, folds them into
the :class:`RunHistory` in chunks under a lock, checks alerts, reads the log tail, and posts one
:class:`HistoryUpdated`. The UI thread then redraws from the history: charts get series already
downsampled to their width, so a frame costs the same at any run length. Quitting or leaving this
screen never touches the run.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual import getters, on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Static, TabbedContent, TabPane

from runners import rundir
from runners.watch.history import RunHistory
from tui.messages import HistoryUpdated, TelemetrySampled
from tui.widgets.alerts import AlertWatcher
from tui.widgets.chart import ChartLine, LineChart
from tui.widgets.eval_table import EvalTable
from tui.widgets.panels import CheckpointList, LogTail, ProgressPanel, ResourcePanel

if TYPE_CHECKING:  # tui.app imports this module when it opens a monitor
    from runners.watch.sources import Source
    from tui.app import FtuiApp

POLL_SECONDS = 0.5
TELEMETRY_SECONDS = 1.0
APPLY_CHUNK = 5000  # records folded per lock hold, so the UI thread never waits long
READ_CHUNK_BYTES = 4 * 2**20  # per read of a long backlog: bounds the records held at once
PROGRESS_SECONDS = 0.5  # while reading a long backlog, show what is read so far this often
LOG_TAIL_BYTES = 16 * 1024
LOG_TAIL_LINES = 40


def read_log_tail(path: Path | None, max_lines: int = LOG_TAIL_LINES) -> list[str] | None:
    """The last lines of a log file, reading at most LOG_TAIL_BYTES from its end."""
    if path is None:
        return None
    try:
        with path.open("rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - LOG_TAIL_BYTES))
            data = fh.read()
    except OSError:
        return []
    lines = data.decode("utf-8", "replace").replace("\r", "\n").splitlines()
    if size > LOG_TAIL_BYTES:
        lines = lines[1:]  # the first line is probably cut
    return [ln for ln in lines if ln.strip()][-max_lines:]


def source_run_dir(source: Source) -> Path | None:
    """The run dir of a source that has one (ftui runs, wandb runs): plan, spec and log live there."""
    run_dir = getattr(source, "run_dir", None)
    return Path(run_dir) if run_dir is not None else None


class MonitorScreen(Screen[None]):
    """Charts, progress, resources, evaluations, checkpoints and log of one source."""

    HELP_TITLE = "Monitor"
    if TYPE_CHECKING:  # the dashboard's own app, for type checkers only: at run time the base property
        app = getters.app(FtuiApp)
    BINDINGS = [
        Binding("s", "stop", "Stop", tooltip="stop gracefully: save a checkpoint, then stop"),
        Binding("c", "checkpoint", "Ckpt", tooltip="save a checkpoint now and go on"),
        Binding("k", "kill", "Kill", tooltip="kill the run's processes (asks first; no checkpoint)"),
        Binding("o", "open_log", "Log", tooltip="open the full log (stdout.log), following"),
        Binding("l", "log_scale", "Log-y", tooltip="log scale on the loss chart"),
        Binding("m", "smoothing", "Smooth", tooltip="smooth the train loss (moving average)"),
        Binding("e", "tab('evals')", "Evals", show=False, tooltip="show the evaluations table"),
        Binding("p", "tab('checkpoints')", "Checkpoints", show=False, tooltip="show the checkpoints"),
        Binding("t", "tab('log')", "Log tail", show=False, tooltip="show the log tail"),
        Binding("escape", "back", "Runs", tooltip="back to the runs list (the run goes on)"),
    ]

    def __init__(self, source: Source) -> None:
        super().__init__()
        self.source = source
        reader = getattr(source, "_reader", None)  # an ftui run's TailReader: read backlogs in small bites
        if reader is not None and hasattr(reader, "max_bytes_per_poll"):
            reader.max_bytes_per_poll = min(reader.max_bytes_per_poll, READ_CHUNK_BYTES)
        self.run_dir = source_run_dir(source)
        self.history = RunHistory(source=source.kind)
        self.history_lock = threading.Lock()  # not Widget.lock: that one is textual's own (async) lock
        self.watcher = AlertWatcher()
        self.estimate: dict[str, int] | None = None  # the plan's peak_allocated and device_used bytes
        self.planned: dict[str, Any] | None = None  # plan.json written at launch: planned step time, wall time, peak
        self.status: dict[str, Any] = {}
        self.sample: dict[str, Any] | None = None
        self.alerts: list[str] = []
        self.polls = 0
        self._polling = False
        self._sampling = False

    def compose(self) -> ComposeResult:
        yield Static(id="title", classes="screen-title")
        yield ProgressPanel(id="progress")
        with Horizontal(id="charts"):
            yield LineChart(id="loss", empty_text="waiting for the first loss...")
            yield LineChart(id="lr", empty_text="no learning rate yet")
        with Horizontal(id="lower"):
            yield ResourcePanel(id="resources")
            with TabbedContent(id="tabs", initial="evals"):
                with TabPane("Evals", id="evals"):
                    yield EvalTable(id="eval-table")
                with TabPane("Checkpoints", id="checkpoints"):
                    with Vertical(classes="scroll"):
                        yield CheckpointList(id="checkpoint-list")
                with TabPane("Log", id="log"):
                    with Vertical(classes="scroll"):
                        yield LogTail(id="log-tail")
        yield Static(id="status-line")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#title", Static).update(f"ftui · {self.source.label} ({self.source.kind})")
        self.query_one("#loss", LineChart).border_title = "loss [$primary]━ train[/] [$warning]━ eval[/]"
        self.query_one("#lr", LineChart).border_title = "learning rate"
        self.query_one("#status-line", Static).update("reading events...")
        self._start_poll()
        self._start_sample()
        self.set_interval(POLL_SECONDS, self._start_poll)
        self.set_interval(TELEMETRY_SECONDS, self._start_sample)

    def on_resize(self) -> None:
        self.set_class(self.size.width < 100, "-narrow")
        self.set_class(self.size.height < 30, "-short")

    # -- workers (threads) ------------------------------------------------------------------------

    def _start_poll(self) -> None:
        if not self._polling:
            self._polling = True
            self._poll()

    def _plan_estimate(self, run_dir: Path) -> None:
        """The plan of an ftui run's own spec, for memory against estimate (GPU strategies only)."""
        import json

        from runners import spec as specmod
        from runners.plan.planner import PLAN_FILE, make_plan

        try:
            self.planned = json.loads((run_dir / PLAN_FILE).read_text())
        except (OSError, ValueError):
            self.planned = None
        if self.planned and self.planned.get("strategy") != "cpu" and self.planned.get("peak_allocated_bytes"):
            self.estimate = {"peak": self.planned["peak_allocated_bytes"], "device": self.planned["device_used_bytes"]}
            self.watcher.peak_estimate_bytes = self.planned["peak_allocated_bytes"]
            return
        try:
            spec = specmod.load(run_dir / rundir.SPEC_FILE)
            if spec.hardware.strategy == "cpu":
                return
            gpus = [g["memory_total"] for g in (self.app.telemetry().sample().get("gpus") or [])
                    if g.get("memory_total")]
            plan = make_plan(spec, gpu_memory_gib=min(gpus) / 2**30 if gpus else None).to_json()
        except Exception:  # noqa: BLE001 - no estimate is a normal state (attached jobs, unknown models)
            return
        self.estimate = {"peak": plan["peak_allocated_bytes"], "device": plan["device_used_bytes"]}
        self.watcher.peak_estimate_bytes = plan["peak_allocated_bytes"]

    @work(thread=True, group="poll")
    def _poll(self) -> None:
        if self.polls == 0 and self.run_dir is not None:
            self._plan_estimate(self.run_dir)
        total, alerts = 0, []
        shown = time.monotonic()
        while True:
            records = self.source.poll()
            if not records:
                break
            alerts.extend(self.watcher.feed(records))
            for i in range(0, len(records), APPLY_CHUNK):
                with self.history_lock:
                    self.history.apply(records[i:i + APPLY_CHUNK])
            total += len(records)
            del records
            if time.monotonic() - shown > PROGRESS_SECONDS:  # a long backlog: show it as it fills
                self.post_message(HistoryUpdated(total, None, None, alerts, final=False))
                total, alerts, shown = 0, [], time.monotonic()
        status = self.source.status()
        log = read_log_tail(self.run_dir / rundir.LOG_FILE) if self.run_dir else None
        self.post_message(HistoryUpdated(total, status, log, alerts))

    def _start_sample(self) -> None:
        if not self._sampling:
            self._sampling = True
            self._sample()

    @work(thread=True, group="telemetry")
    def _sample(self) -> None:
        telemetry = self.app.telemetry()
        self.post_message(TelemetrySampled(telemetry.sample()))

    # -- applying results (UI thread) -----------------------------------------------------------

    @on(HistoryUpdated)
    def _history_updated(self, message: HistoryUpdated) -> None:
        if not message.final:
            self.alerts.extend(message.alerts)
            self.redraw()
            self.query_one("#status-line", Static).update(f"reading events... {self.history.records_seen:,} so far")
            return
        self._polling = False
        first = self.polls == 0
        self.polls += 1
        self.status = message.status or {}
        if message.alerts:
            self.alerts.extend(message.alerts)
            del self.alerts[:-20]
            if not first:
                self.app.bell()
        if message.count or first:
            self.redraw()
        else:
            self.query_one(ProgressPanel).show(self.history, self.status, self.app.clock(),
                                               self.planned)
        if message.log_tail is not None or first:
            self.query_one(LogTail).show(message.log_tail)
        self._status_line()

    @on(TelemetrySampled)
    def _telemetry(self, message: TelemetrySampled) -> None:
        self._sampling = False
        self.sample = message.sample
        with self.history_lock:
            self.query_one(ResourcePanel).show(self.sample, self.history, self.estimate,
                                               compact=self.has_class("-narrow"))

    def redraw(self) -> None:
        """Everything from the history; series are downsampled to each chart's pixel width."""
        loss, lr = self.query_one("#loss", LineChart), self.query_one("#lr", LineChart)
        with self.app.batch_update(), self.history_lock:
            h = self.history
            width = loss.plot_width()
            lines = []
            if "loss" in h.series:
                lines.append(ChartLine("train", h.series["loss"].downsample(width), "chart--line1"))
            if "eval_loss" in h.series:
                lines.append(ChartLine("eval", h.series["eval_loss"].downsample(width), "chart--line2",
                                       smoothable=False))
            loss.set_lines(lines)
            if "learning_rate" in h.series:
                lr.set_lines([ChartLine("lr", h.series["learning_rate"].downsample(lr.plot_width()), "chart--line3",
                                        smoothable=False)])
            self.query_one(ProgressPanel).show(h, self.status, self.app.clock(), self.planned)
            self.query_one(EvalTable).show(h)
            self.query_one(CheckpointList).show(h)
            self.query_one(ResourcePanel).show(self.sample, h, self.estimate, compact=self.has_class("-narrow"))

    def _status_line(self) -> None:
        line = self.query_one("#status-line", Static)
        warnings = list(self.source.warnings or [])
        if self.alerts:
            line.update(f"⚠ {self.alerts[-1]}" + (f"  (+{len(self.alerts) - 1} more)" if len(self.alerts) > 1 else ""))
            line.set_class(True, "-alert")
            return
        line.set_class(False, "-alert")
        messages = [m for m in self.history.messages if m.get("level") in ("warning", "error")]
        if messages:
            line.update(f"{messages[-1]['level']}: {messages[-1]['text']}")
        elif warnings:
            line.update(warnings[-1])
        else:
            line.update(f"{self.history.records_seen} records · source {self.source.kind}"
                        + ("" if self.source.can_control else " (read-only: stop/kill via ftui ps)"))

    # -- actions ----------------------------------------------------------------------------------

    def _control_dir(self) -> Path | None:
        """The run dir to send control requests to, or None (with a notice) for a read-only source."""
        if self.run_dir is None or not self.source.can_control:
            self.notify("This source is read-only: only runs launched by ftui take stop/checkpoint requests.",
                        severity="warning")
            return None
        return self.run_dir

    def action_stop(self) -> None:
        run_dir = self._control_dir()
        if run_dir is not None:
            from runners.launch import control

            self.notify(control.stop(run_dir))

    def action_checkpoint(self) -> None:
        run_dir = self._control_dir()
        if run_dir is not None:
            from runners.launch import control

            self.notify(control.checkpoint(run_dir))

    def action_kill(self) -> None:
        run_dir = self._control_dir()
        if run_dir is None:
            return
        from tui.screens.dialogs import ConfirmScreen

        def answered(yes: bool | None) -> None:
            if yes:
                self._kill(run_dir)

        self.app.push_screen(ConfirmScreen(f"Kill run {self.source.label} now, without a checkpoint?\n"
                                           "(s stops gracefully after saving one.)"), answered)

    @work(thread=True, group="control")
    def _kill(self, run_dir: Path) -> None:
        from runners.launch import control

        result = control.kill(run_dir)
        self.app.call_from_thread(self.notify, f"kill: {result}")

    def action_open_log(self) -> None:
        if self.run_dir is None:
            self.notify("This source has no log file ftui knows of.", severity="warning")
            return
        from tui.screens.dialogs import LogScreen

        self.app.push_screen(LogScreen(self.run_dir / rundir.LOG_FILE))

    def action_log_scale(self) -> None:
        chart = self.query_one("#loss", LineChart)
        chart.log_scale = not chart.log_scale
        self.notify(f"loss chart: {'log' if chart.log_scale else 'linear'} scale", timeout=2)

    def action_smoothing(self) -> None:
        chart = self.query_one("#loss", LineChart)
        chart.smoothing = not chart.smoothing
        self.notify(f"smoothing {'on' if chart.smoothing else 'off'}", timeout=2)

    def action_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab

    def action_back(self) -> None:
        self.app.action_show_runs()
