"""The compare view: the runs marked in the runs list, side by side.

One chart overlays a metric of every run, one line (and colour) per run, on a shared x axis: optimizer
steps, samples seen or tokens seen (``x``); ``m`` picks the metric (the train loss, then the eval metrics).
Below, the runs' facts (best, last metrics, duration, peak memory) and the spec keys that differ, the same
rows `ftui compare` prints. The runs are read once, in a worker thread (runners.results.compare); the chart
is redrawn from the bounded histories at its width, on every resize.
"""
from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Static, TabbedContent, TabPane

from runners.errors import UserError
from runners.results.compare import AXES, Comparison, compare
from tui.commands.compare import diff_rows, run_rows
from tui.messages import ComparisonLoaded
from tui.widgets.chart import LINE_COMPONENTS, ChartLine, LineChart
from tui.widgets.footer import Footer


class CompareScreen(Screen[None]):
    """Marked runs overlaid: curves, facts, spec differences."""

    HELP_TITLE = "Compare"
    BINDINGS = [
        Binding("x", "axis", "Axis", tooltip="x axis: steps, samples seen (step x batch), tokens seen"),
        Binding("m", "metric", "Metric", tooltip="the metric charted: train loss, then each eval metric"),
        Binding("t", "table", "Table", tooltip="the runs' facts or the spec keys that differ"),
        Binding("l", "log_scale", "Log-y", show=False, tooltip="logarithmic y axis on/off"),
        Binding("s", "smooth", "Smooth", show=False, tooltip="smoothed train loss on/off (moving average)"),
        Binding("escape", "back", "Back", tooltip="back to the runs list"),
    ]

    def __init__(self, runs: list[Path], runs_dir: Path) -> None:
        super().__init__()
        self.targets = runs
        self.runs_dir = runs_dir
        self.comparison: Comparison | None = None
        self.by = "step"
        self.metric = "loss"

    def compose(self) -> ComposeResult:
        yield Static(f"ftui · compare {len(self.targets)} runs", id="compare-title", classes="screen-title")
        yield LineChart(empty_text="reading the runs", id="compare-chart")
        yield Static(id="compare-legend")
        with TabbedContent(id="compare-tabs", initial="compare-facts"):
            with TabPane("Runs", id="compare-facts"):
                yield DataTable(id="compare-runs", cursor_type="row", zebra_stripes=True)
            with TabPane("Spec diff", id="compare-spec"):
                yield DataTable(id="compare-diff", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        self._load()

    @work(thread=True, exclusive=True, group="compare")
    def _load(self) -> None:
        try:
            comparison = compare([str(p) for p in self.targets], self.runs_dir)
        except UserError as exc:
            self.post_message(ComparisonLoaded(error=str(exc)))
        else:
            self.post_message(ComparisonLoaded(comparison))

    @on(ComparisonLoaded)
    def _loaded(self, message: ComparisonLoaded) -> None:
        chart = self.query_one("#compare-chart", LineChart)
        if message.error is not None:
            chart.empty_text = message.error
            chart.refresh()
            self.notify(message.error, severity="error", timeout=10)
            return
        comparison: Comparison = message.comparison
        self.comparison = comparison
        metrics = comparison.metrics()
        self.metric = metrics[0] if metrics else "loss"
        self._fill_tables(comparison)
        self.call_after_refresh(self.draw)

    def _fill_tables(self, comparison: Comparison) -> None:
        labels = [r.label for r in comparison.runs]
        facts = self.query_one("#compare-runs", DataTable)
        facts.clear(columns=True)
        facts.add_columns("", *labels)
        facts.add_rows(run_rows(comparison))
        diff = self.query_one("#compare-diff", DataTable)
        diff.clear(columns=True)
        diff.add_columns("key", *labels)
        rows = diff_rows(comparison)
        diff.add_rows(rows)
        self.query_one("#compare-tabs", TabbedContent).get_tab("compare-spec").label = f"Spec diff ({len(rows)})"

    def draw(self) -> None:
        """The chart and its legend for the chosen metric and axis, downsampled to the chart's width."""
        comparison = self.comparison
        if comparison is None:
            return
        chart = self.query_one("#compare-chart", LineChart)
        width = chart.plot_width()
        lines = [ChartLine(run.label, run.curve(self.metric, self.by, width), LINE_COMPONENTS[i % len(LINE_COMPONENTS)],
                           smoothable=self.metric == "loss") for i, run in enumerate(comparison.runs)]
        chart.title = f"{self.metric} by {self.by}"
        chart.empty_text = f"no run has {self.metric} by {self.by}"
        chart.set_lines(lines)
        legend = Text()
        for line, run in zip(lines, comparison.runs):
            style = chart.get_component_rich_style(line.component)
            legend.append("━━ ", style=style).append(run.label, style=style)
            missing = run.axis_note(self.by) or ("" if line.buckets else f"no {self.metric}")
            legend.append(f" ({missing})" if missing else "").append("   ")
        self.query_one("#compare-legend", Static).update(legend)

    def on_resize(self) -> None:
        self.call_after_refresh(self.draw)

    def action_axis(self) -> None:
        self.by = AXES[(AXES.index(self.by) + 1) % len(AXES)]
        self.draw()
        if self.comparison is not None:
            off = [r.label for r in self.comparison.runs if r.axis_note(self.by)]
            if off:
                self.notify(f"by {self.by}: {', '.join(off)} cannot be placed (see the legend)", timeout=4)

    def action_metric(self) -> None:
        metrics = self.comparison.metrics() if self.comparison is not None else []
        if not metrics:
            return
        self.metric = metrics[(metrics.index(self.metric) + 1) % len(metrics)] if self.metric in metrics else metrics[0]
        self.draw()

    def action_table(self) -> None:
        tabs = self.query_one("#compare-tabs", TabbedContent)
        tabs.active = "compare-spec" if tabs.active == "compare-facts" else "compare-facts"

    def action_log_scale(self) -> None:
        chart = self.query_one("#compare-chart", LineChart)
        chart.log_scale = not chart.log_scale

    def action_smooth(self) -> None:
        chart = self.query_one("#compare-chart", LineChart)
        chart.smoothing = not chart.smoothing

    def action_back(self) -> None:
        self.app.pop_screen()
