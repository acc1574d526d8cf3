"""A braille line chart drawn from bounded :class:`runners.watch.history.Series` buckets.

Each terminal cell holds 2x4 braille dots. Buckets are mapped to pixel columns by step (so train
and eval lines share one x axis), and every pixel column draws the span from the lowest to the
highest value that fell into it: a one-step loss spike stays visible however many steps share the
column. The work per frame is bounded by the series capacity and the widget width, never by the
length of the run.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from rich.style import Style
from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from runners.watch.history import Bucket

# braille dot bits, indexed [row within cell 0..3][column within cell 0..1]
DOTS = ((0x01, 0x08), (0x02, 0x10), (0x04, 0x20), (0x40, 0x80))
AXIS_WIDTH = 8
SMOOTHING = 0.9  # weight of the past in the exponential moving average
LINE_COMPONENTS = ("chart--line1", "chart--line2", "chart--line3", "chart--line4", "chart--line5", "chart--line6")


@dataclass
class ChartLine:
    """One line: its buckets, the component class that styles it, and a legend name."""

    name: str
    buckets: list[Bucket]
    component: str = "chart--line1"
    smoothable: bool = True  # sparse series (evaluations) are drawn as they are


def fmt_value(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1000 or abs(value) < 0.001:
        return f"{value:.1e}"
    return f"{value:.4g}"


def fmt_step(step: float) -> str:
    step = int(step)
    return f"{step / 1_000_000:.1f}M" if step >= 1_000_000 else f"{step / 1000:.1f}k" if step >= 10_000 else str(step)


def smooth(buckets: list[Bucket]) -> list[Bucket]:
    """Exponential moving average of bucket means (min/max collapse onto the average)."""
    out: list[Bucket] = []
    avg: float | None = None
    for b in buckets:
        avg = b.mean if avg is None else SMOOTHING * avg + (1 - SMOOTHING) * b.mean
        out.append(Bucket(b.step_lo, b.step_hi, avg, avg, avg, avg, avg, 1))
    return out


class Columns:
    """Per pixel column: lowest, highest, first and last value that fell into it."""

    def __init__(self) -> None:
        self.cols: dict[int, list[float]] = {}

    def add(self, x: int, b: Bucket) -> None:
        cell = self.cols.get(x)
        if cell is None:
            self.cols[x] = [b.lo, b.hi, b.first, b.last]
        else:
            cell[0], cell[1], cell[3] = min(cell[0], b.lo), max(cell[1], b.hi), b.last


class LineChart(Widget):
    """Several lines over a shared step axis, with a log-scale and a smoothing toggle."""

    DEFAULT_CSS = """
    LineChart { height: 1fr; min-height: 4; }
    LineChart > .chart--axis { color: $text-muted; }
    LineChart > .chart--line1 { color: $primary; }
    LineChart > .chart--line2 { color: $warning; }
    LineChart > .chart--line3 { color: $success; }
    LineChart > .chart--line4 { color: $error; }
    LineChart > .chart--line5 { color: $secondary; }
    LineChart > .chart--line6 { color: $accent; }
    LineChart > .chart--empty { color: $text-muted; }
    """
    COMPONENT_CLASSES = {"chart--axis", *LINE_COMPONENTS, "chart--empty"}

    log_scale: reactive[bool] = reactive(False)
    smoothing: reactive[bool] = reactive(False)

    def __init__(self, empty_text: str = "waiting for data", title: str = "", **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.lines: list[ChartLine] = []
        self.empty_text = empty_text
        self.title = title  # the border title; the chart adds its state (log-y, smoothed, zoom window)
        self.window: tuple[int, int] | None = None  # the step window shown, None: the whole run
        self.cursor: int | None = None  # the step the cursor marks, None: no cursor
        self.axis_width = AXIS_WIDTH  # widens when the y labels do (the last frame's width)

    def on_mount(self) -> None:
        self._retitle()

    def set_lines(self, lines: list[ChartLine], window: tuple[int, int] | None = None,
                  cursor: int | None = None) -> None:
        self.lines, self.window, self.cursor = lines, window, cursor
        self._retitle()
        self.refresh()

    def watch_log_scale(self) -> None:
        self._retitle()

    def watch_smoothing(self) -> None:
        self._retitle()

    def _retitle(self) -> None:
        state = [word for word, on in (("log-y", self.log_scale), ("smoothed", self.smoothing)) if on]
        if self.window is not None:
            state.append(f"steps {fmt_step(self.window[0])}-{fmt_step(self.window[1])}")
        self.border_title = self.title + (f" [$accent]· {' · '.join(state)}[/]" if state else "")

    def plot_width(self) -> int:
        """Pixel columns available: callers downsample series to this before handing them over."""
        return max(1, (self.size.width - self.axis_width) * 2)

    def _transform(self, value: float) -> float | None:
        if not math.isfinite(value):
            return None
        if self.log_scale:
            return math.log10(value) if value > 0 else None
        return value

    def y_range(self, lines: list[ChartLine]) -> tuple[float, float] | None:
        """The y axis: the values' span padded by 4%, never below zero when no value is (loss, LR)."""
        values = [v for ln in lines for b in ln.buckets for v in (self._transform(b.lo), self._transform(b.hi))
                  if v is not None]
        if not values:
            return None
        y_lo, y_hi = min(values), max(values)
        if y_hi - y_lo < 1e-12:
            y_lo, y_hi = y_lo - 0.5, y_hi + 0.5
        pad = (y_hi - y_lo) * 0.04
        floor = 0.0 if not self.log_scale and min(values) >= 0 else -math.inf
        return max(floor, y_lo - pad), y_hi + pad

    def render(self) -> Text:
        width, height = self.size.width, self.size.height
        lines = [ln for ln in self.lines if ln.buckets]
        if not lines or width <= AXIS_WIDTH + 2 or height < 2:
            return Text(self.empty_text, style=self.get_component_rich_style("chart--empty"))
        if self.smoothing:
            lines = [ChartLine(ln.name, smooth(ln.buckets), ln.component) if ln.smoothable else ln for ln in lines]
        y_range = self.y_range(lines)
        if y_range is None:
            return Text("no plottable values" + (" (log scale needs positive values)" if self.log_scale else ""),
                        style=self.get_component_rich_style("chart--empty"))
        y_lo, y_hi = y_range
        rows = height - 1

        def label(frac: float) -> str:
            v = y_hi - (y_hi - y_lo) * frac
            return fmt_value(10 ** v if self.log_scale else v)

        y_labels = {0: label(0.0), rows // 2: label(0.5), rows - 1: label(1.0)} if rows > 2 else {0: label(0.0)}
        self.axis_width = min(width - 3, max(AXIS_WIDTH, 1 + max(len(text) for text in y_labels.values())))
        cols = width - self.axis_width
        px, py = cols * 2, rows * 4
        x_lo, x_hi = self.window or (min(ln.buckets[0].step_lo for ln in lines), max(ln.buckets[-1].step_hi for ln in lines))
        x_span = max(1, x_hi - x_lo)

        def to_x(step: float) -> int:
            return min(px - 1, max(0, int((step - x_lo) / x_span * (px - 1) + 0.5)))

        def to_y(value: float) -> int | None:
            v = self._transform(value)
            if v is None:
                return None
            return min(py - 1, max(0, int((y_hi - v) / (y_hi - y_lo) * (py - 1) + 0.5)))

        grid: dict[tuple[int, int], list[int]] = {}  # (cell row, cell col) -> [bits, line index]

        def dot(x: int, y: int, owner: int) -> None:
            cell = grid.setdefault((y // 4, x // 2), [0, owner])
            cell[0] |= DOTS[y % 4][x % 2]
            cell[1] = max(cell[1], owner)  # later lines (evaluations) win a shared cell's colour

        for index, line in enumerate(lines):
            self._draw(line, index, to_x, to_y, dot)
        cursor = to_x(self.cursor) // 2 if self.cursor is not None and x_lo <= self.cursor <= x_hi else None
        return self._text(grid, lines, y_labels, cols, cursor, x_lo, x_hi)

    def _draw(self, line: ChartLine, index: int, to_x: Callable[[float], int], to_y: Callable[[float], int | None],
              dot: Callable[[int, int, int], None]) -> None:
        columns = Columns()
        for b in line.buckets:
            for x in range(to_x(b.step_lo), to_x(b.step_hi) + 1):
                columns.add(x, b)
        prev: tuple[int, int] | None = None  # (x, y) of the previous column's last value
        for x in sorted(columns.cols):
            y_bottom, y_top, y_first, y_last = (to_y(v) for v in columns.cols[x])  # lo, hi, first, last
            if y_bottom is None or y_top is None or y_first is None or y_last is None:
                prev = None
                continue
            if prev is not None:
                x0, y0 = prev
                for gx in range(x0 + 1, x):  # bridge a gap (sparse series) with a straight line
                    dot(gx, int(y0 + (y_first - y0) * (gx - x0) / (x - x0) + 0.5), index)
                if x - x0 == 1:
                    y_top, y_bottom = min(y_top, y0), max(y_bottom, y0)
            for y in range(y_top, y_bottom + 1):
                dot(x, y, index)
            prev = (x, y_last)

    def _text(self, grid: dict[tuple[int, int], list[int]], lines: list[ChartLine], y_labels: dict[int, str],
              cols: int, cursor: int | None, x_lo: int, x_hi: int) -> Text:
        axis = self.get_component_rich_style("chart--axis")
        styles: list[Style] = [self.get_component_rich_style(ln.component) for ln in lines]
        label_width = self.axis_width - 1
        out = Text(no_wrap=True, overflow="crop")
        for r in range(self.size.height - 1):
            out.append(f"{y_labels[r]:>{label_width}}┤" if r in y_labels else " " * label_width + "│", style=axis)
            run_style: Style | None = None
            run: list[str] = []
            for c in range(cols):
                cell = grid.get((r, c))
                style: Style | None = styles[cell[1]] if cell else axis if c == cursor else None
                ch = chr(0x2800 + cell[0]) if cell else "┊" if c == cursor else " "
                if style is not run_style and run:
                    out.append("".join(run), style=run_style)
                    run = []
                run_style = style
                run.append(ch)
            if run:
                out.append("".join(run), style=run_style)
            out.append("\n")
        left, right = fmt_step(x_lo), fmt_step(x_hi)
        gap = max(1, cols - len(left) - len(right))
        out.append(" " * label_width + "└" + (left + " " * gap + right)[:cols], style=axis)
        return out
