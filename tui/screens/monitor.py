"""The monitor: one run (or any attached source) live, or reviewed after the fact.

A timer starts a poll worker (a thread) that reads new records from the source, folds them into
the :class:`RunHistory` in chunks under a lock, checks alerts, reads the log tail, and posts one
:class:`HistoryUpdated`. The UI thread then redraws from the history: charts get series already
downsampled to their width, so a frame costs the same at any run length. Quitting or leaving this
screen never touches the run.
"""
from __future__ import annotations

import re
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual import getters, on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Static, TabbedContent, TabPane

from runners import rundir
from runners.watch.history import RunHistory
from tui.messages import HistoryUpdated, TelemetrySampled
from tui.screens.monitor_actions import MonitorActionsMixin
from tui.widgets.alerts import AlertWatcher
from tui.widgets.chart import ChartLine, LineChart
from tui.widgets.eval_table import EvalTable, HeldOut
from tui.widgets.footer import Footer
from tui.widgets.panels import ENDED_STATES, CheckpointList, LogTail, ProgressPanel, ResourcePanel, run_state
from tui.widgets.try_panel import TryPanel

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


def title_text(source: Source) -> str:
    """``ftui · <label>``, naming the kind of source unless the label already does (``pid 12 (ftui)``)."""
    words = set(re.findall(r"[\w-]+", source.label))
    return f"ftui · {source.label}" + ("" if source.kind in words | {"ftui"} else f" ({source.kind})")


def source_run_dir(source: Source) -> Path | None:
    """The run dir of a source that has one (ftui runs, wandb runs): plan, spec and log live there."""
    run_dir = getattr(source, "run_dir", None)
    return Path(run_dir) if run_dir is not None else None


class MonitorScreen(MonitorActionsMixin, Screen[None]):
    """Charts, progress, resources, evaluations, checkpoints and log of one source."""

    HELP_TITLE = "Monitor"
    if TYPE_CHECKING:  # the dashboard's own app, for type checkers only: at run time the base property
        app = getters.app(FtuiApp)
    BINDINGS = [
        Binding("s", "stop", "Stop", tooltip="stop gracefully: save a checkpoint, then stop"),
        Binding("c", "checkpoint", "Ckpt", tooltip="save a checkpoint now and go on"),
        Binding("k", "kill", "Kill", tooltip="kill the run's processes (asks first; no checkpoint)"),
        Binding("o", "open_log", "Log", tooltip="open the full log (stdout.log), following; / searches it"),
        Binding("v", "view_files", "Files", show=False, tooltip="the run's exact launch.sh and spec.yaml, read-only"),
        Binding("l", "log_scale", "Log-y", tooltip="log scale on the loss chart"),
        Binding("m", "smoothing", "Smooth", tooltip="smooth the train loss (moving average)"),
        Binding("e", "tab('evals')", "Evals", show=False, tooltip="show the evaluations table"),
        Binding("p", "tab('checkpoints')", "Checkpoints", show=False, tooltip="show the checkpoints"),
        Binding("t", "tab('log')", "Log tail", show=False, tooltip="show the log tail"),
        Binding("i", "tab('try')", "Try", tooltip="try the model: type a prompt, see the answer streamed (ctrl+b: "
                "best vs latest side by side)"),
        Binding("y", "copy_checkpoint", "Copy path", show=False,
                tooltip="Checkpoints tab: copy the highlighted checkpoint's path to the clipboard"),
        Binding("r", "resume_checkpoint", "Resume", show=False,
                tooltip="Checkpoints tab: a new run resuming from the highlighted checkpoint (opens the setup)"),
        Binding("x", "export_checkpoint", "Export", show=False,
                tooltip="Checkpoints tab: ftui export the highlighted checkpoint (asks; n copies the command)"),
        Binding("plus,equals_sign", "zoom(0.5)", "Zoom in", show=False, tooltip="charts: zoom in on the steps"),
        Binding("minus", "zoom(2)", "Zoom out", show=False, tooltip="charts: zoom out"),
        Binding("left_square_bracket", "pan(-1)", "Pan left", show=False, tooltip="charts: earlier steps"),
        Binding("right_square_bracket", "pan(1)", "Pan right", show=False, tooltip="charts: later steps"),
        Binding("less_than_sign", "move_cursor(-1)", "Cursor left", show=False,
                tooltip="charts: the cursor a step back, with train loss, eval loss and LR there"),
        Binding("greater_than_sign", "move_cursor(1)", "Cursor right", show=False, tooltip="charts: cursor forward"),
        Binding("0", "reset_view", "Whole run", show=False, tooltip="charts: the whole run, no cursor"),
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
        self.strategy: str | None = None  # the run's own spec's strategy (None: no spec, not read yet)
        self.estimate: dict[str, int] | None = None  # the plan's peak_allocated and device_used bytes
        self.planned: dict[str, Any] | None = None  # plan.json written at launch: planned step time, wall time, peak
        self.status: dict[str, Any] = {}
        self.sample: dict[str, Any] | None = None
        self.alerts: list[str] = []
        self.polls = 0
        self.checkpoints_on_disk: dict[str, Path | None] | None = None  # recorded path -> its folder, or None: gone
        self.held_out: list[dict[str, Any]] = []  # the run's ftui eval results, oldest first
        self.window: tuple[int, int] | None = None  # the charts' step window (None: the whole run)
        self.cursor: int | None = None  # the step the charts' cursor reads
        self._polling = False
        self._shown_state = ""
        self._sampling = False

    def compose(self) -> ComposeResult:
        yield Static(id="title", classes="screen-title")
        yield ProgressPanel(id="progress")
        with Horizontal(id="charts"):
            yield LineChart(id="loss", empty_text="waiting for the first loss...",
                            title="loss [$primary]━ train[/] [$warning]━ eval[/]")
            yield LineChart(id="lr", empty_text="no learning rate yet", title="learning rate")
        with Horizontal(id="lower"):
            yield ResourcePanel(id="resources")
            with TabbedContent(id="tabs", initial="evals"):
                with TabPane("Evals", id="evals"):
                    yield EvalTable(id="eval-table")
                    yield HeldOut(id="held-out")
                with TabPane("Checkpoints", id="checkpoints"):
                    yield CheckpointList(id="checkpoint-list")
                with TabPane("Log", id="log"):
                    with Vertical(classes="scroll", id="log-scroll"):
                        yield LogTail(id="log-tail")
                with TabPane("Try", id="try"):
                    yield TryPanel(self.run_dir, id="try-panel")
        yield Static(id="status-line")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#title", Static).update(title_text(self.source))
        self.query_one("#status-line", Static).update("reading events...")
        self.query_one("#log-scroll").anchor()  # the log tail shows its end (a traceback's last line), not its top
        self._start_poll()
        self._start_sample()
        self.set_interval(POLL_SECONDS, self._start_poll)
        self.set_interval(TELEMETRY_SECONDS, self._start_sample)

    @on(TabbedContent.TabActivated, "#tabs")
    def _tab_shown(self, event: TabbedContent.TabActivated) -> None:
        self.set_class(event.pane.id == "try", "-trying")  # a short terminal gives the Try tab the charts' rows

    def on_resize(self) -> None:
        self.set_class(self.size.width < 100, "-narrow")
        self.set_class(self.size.height < 30, "-short")

    # -- workers (threads) ------------------------------------------------------------------------

    def _start_poll(self) -> None:
        if not self._polling:
            self._polling = True
            self._poll()

    def _plan_estimate(self, run_dir: Path) -> None:
        """The run's strategy from its own spec (the hints say what this run does), and the plan of that spec
        for memory against estimate (GPU strategies only)."""
        import json

        from runners import spec as specmod
        from runners.plan.planner import PLAN_FILE, make_plan

        try:
            spec: specmod.RunSpec | None = specmod.load(run_dir / rundir.SPEC_FILE)
        except Exception:  # noqa: BLE001 - attached run dirs may have no spec, or one this version cannot read
            spec = None
        self.strategy = spec.hardware.strategy if spec is not None else None
        try:
            self.planned = json.loads((run_dir / PLAN_FILE).read_text())
        except (OSError, ValueError):
            self.planned = None
        if self.planned and self.planned.get("strategy") != "cpu" and self.planned.get("peak_allocated_bytes"):
            self.estimate = {"peak": self.planned["peak_allocated_bytes"], "device": self.planned["device_used_bytes"]}
            self.watcher.peak_estimate_bytes = self.planned["peak_allocated_bytes"]
            return
        if spec is None or spec.hardware.strategy == "cpu":
            return
        try:
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
        self._check_checkpoints()
        if self.run_dir is not None:
            from runners.results import evaluate

            self.held_out = evaluate.records(self.run_dir)
        log = read_log_tail(self.run_dir / rundir.LOG_FILE) if self.run_dir else None
        self.post_message(HistoryUpdated(total, status, log, alerts))

    def _check_checkpoints(self) -> None:
        """Which recorded checkpoints are still on disk (save_total_limit deletes the oldest), off the UI thread."""
        from runners.results import checkpoints

        with self.history_lock:
            recorded = [str(c["path"]) for c in self.history.checkpoints[-200:] if c.get("path")]
        self.checkpoints_on_disk = checkpoints.on_disk(self.run_dir, recorded)

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
        if message.count or first or self.state != self._shown_state:
            self.redraw()
        else:
            self.query_one(ProgressPanel).show(self.history, self.status, self.app.clock(),
                                               self.planned)
        if message.log_tail is not None or first:
            self.query_one(LogTail).show(message.log_tail)
        self.query_one(HeldOut).show(self.held_out)
        self._status_line()

    @on(TelemetrySampled)
    def _telemetry(self, message: TelemetrySampled) -> None:
        self._sampling = False
        self.sample = message.sample
        with self.history_lock:
            self.query_one(ResourcePanel).show(self.sample, self.history, self.estimate,
                                               compact=self.has_class("-narrow"), strategy=self.strategy)

    def redraw(self) -> None:
        """Everything from the history; series are downsampled to each chart's pixel width."""
        loss, lr = self.query_one("#loss", LineChart), self.query_one("#lr", LineChart)
        with self.app.batch_update(), self.history_lock:
            h = self.history
            width = loss.plot_width()
            window, readout = self.chart_view()
            lines = []
            if "loss" in h.series:
                lines.append(ChartLine("train", h.series["loss"].downsample(width, window), "chart--line1"))
            if "eval_loss" in h.series:
                lines.append(ChartLine("eval", h.series["eval_loss"].downsample(width, window), "chart--line2",
                                       smoothable=False))
            loss.set_lines(lines, window, self.cursor)
            loss.border_subtitle = readout
            if "learning_rate" in h.series:
                lr.set_lines([ChartLine("lr", h.series["learning_rate"].downsample(lr.plot_width(), window),
                                        "chart--line3", smoothable=False)], window, self.cursor)
            self.query_one(ProgressPanel).show(h, self.status, self.app.clock(), self.planned)
            self.query_one(EvalTable).show(h)
            self.query_one(CheckpointList).show(h, self.checkpoints_on_disk)
            self.query_one(ResourcePanel).show(self.sample, h, self.estimate, compact=self.has_class("-narrow"),
                                               strategy=self.strategy)
        if self.state != self._shown_state:  # ended: stop, checkpoint and kill leave the footer
            self._shown_state = self.state
            self.refresh_bindings()

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
            ended = self.state in ENDED_STATES
            queue = self.status.get("slurm") or {}  # a Slurm run: its job's state in the queue (runners/slurm.py)
            line.update(f"{self.history.records_seen} records · source {self.source.kind}"
                        + (f" · Slurm job {queue.get('job_id')} {queue.get('state')}"
                           + (f" ({queue['reason']})" if queue.get("reason") else "") if queue else "")
                        + (f" · run {self.state}: nothing to stop" if ended else
                           "" if self.source.can_control else " (read-only: stop/kill via ftui ps)"))

    # -- state (the actions are in monitor_actions.py) ---------------------------------------------

    @property
    def state(self) -> str:
        """The run's state as shown: the source's status, or the records' end (finished, stopped, crashed)."""
        return run_state(self.history, self.status)
