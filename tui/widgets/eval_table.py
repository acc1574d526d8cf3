"""The evaluation table: one row per evaluation, the best one marked; below it, the run's newest held-out result.

Rebuilt only when the number of evaluations changes, and limited to the newest rows (plus the best
one), so a run with thousands of evaluations costs the same to redraw as one with ten. The held-out line
(``ftui eval``'s records in the run dir) shows only once there is one.
"""
from __future__ import annotations

from typing import Any

from textual.widgets import DataTable, Static

from runners.results import evaluate
from runners.watch.history import RunHistory

MAX_ROWS = 200
HIDDEN = ("runtime", "per_second", "epoch", "num_input_tokens", "total_flos")


def metric_columns(evals: list[dict[str, Any]]) -> list[str]:
    """Metric names worth a column (no timings), eval_loss first, in first-seen order."""
    seen: dict[str, None] = {}
    for e in evals[-MAX_ROWS:]:
        for key in e["metrics"]:
            if not any(h in key for h in HIDDEN):
                seen.setdefault(key, None)
    names = list(seen)
    return sorted(names, key=lambda k: (k != "eval_loss", names.index(k)))


def best_index(history: RunHistory, evals: list[dict[str, Any]]) -> int | None:
    """Index of the best evaluation: the checkpoint metric when known, else the lowest eval_loss."""
    metric = (history.best or {}).get("metric") or history.meta.get("metric_for_best_model") or "eval_loss"
    if metric and not metric.startswith("eval_"):
        metric = f"eval_{metric}"
    higher = not any(word in metric for word in ("loss", "error", "perplexity", "wer", "cer"))
    best, best_value = None, None
    for i, e in enumerate(evals):
        value = e["metrics"].get(metric)
        if isinstance(value, (int, float)) and value == value:
            if best_value is None or (value > best_value if higher else value < best_value):
                best, best_value = i, value
    return best


class EvalTable(DataTable):
    """Evaluations as rows; ``★`` marks the best."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self._shown = -1
        self._columns: list[str] = []

    def show(self, history: RunHistory) -> None:
        evals = history.evals
        if len(evals) == self._shown:
            return
        self._shown = len(evals)
        columns = metric_columns(evals)
        best = best_index(history, evals)
        if columns != self._columns:
            self.clear(columns=True)
            self._columns = columns
            self.add_column(" ", width=1)
            self.add_column("step", width=7)
            self.add_column("epoch", width=6)
            for c in columns:
                label = c.removeprefix("eval_")
                self.add_column(label, width=max(8, len(label)))
        else:
            self.clear()
        start = max(0, len(evals) - MAX_ROWS)
        shown = ([best] if best is not None and best < start else []) + list(range(start, len(evals)))
        for i in shown:
            e = evals[i]
            epoch = e.get("epoch")
            cells = ["★" if i == best else " ", str(e["step"]), f"{epoch:.2f}" if isinstance(epoch, (int, float)) else "-"]
            cells += [f"{e['metrics'][c]:.4g}" if isinstance(e["metrics"].get(c), (int, float)) else "-" for c in columns]
            self.add_row(*cells)
        if evals:
            self.move_cursor(row=len(shown) - 1, animate=False)


class HeldOut(Static):
    """The newest ``ftui eval`` result of the run: file, checkpoint, metrics; hidden while there is none."""

    _text = ""

    def on_mount(self) -> None:
        self.display = False

    def show(self, records: list[dict[str, Any]]) -> None:
        text = ""
        if records:
            more = len(records) - 1
            text = evaluate.line(records[-1]) + (f" · {more} earlier (RUN/evaluations/)" if more else "")
        if text != self._text:
            self._text = text
            self.update(text)
            self.display = bool(text)
