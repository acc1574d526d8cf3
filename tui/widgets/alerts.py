"""Alerts a watcher must not miss: NaN loss, a loss spike, an eval regression, memory above the plan.

:class:`AlertWatcher` looks at records as they are read (in the poll worker, off the UI thread) and
keeps O(1) state, so it costs the same at step ten and at step ten million. Each alert is raised
once per occurrence; the monitor shows the newest in its status line and rings the terminal bell
for alerts that arrive while the run is live.
"""
from __future__ import annotations

import math
from typing import Any

from runners import events as ev

SPIKE_MIN_POINTS = 20  # steps of history before a spike can be told from noise
SPIKE_SIGMAS = 6.0
SPIKE_MIN_RATIO = 1.5  # and at least 1.5x the running mean
EVAL_REGRESSION = 0.10  # eval loss 10% above its best (small eval sets are noisy)
MEMORY_MARGIN = 1.10  # measured peak 10% above the plan's estimate


class AlertWatcher:
    """Folds records into running statistics and returns alert texts as they happen."""

    def __init__(self, peak_estimate_bytes: int | None = None) -> None:
        self.peak_estimate_bytes = peak_estimate_bytes
        self.mean: float | None = None
        self.var = 0.0
        self.points = 0
        self.best_eval_loss: float | None = None
        self.nan_seen = False
        self.memory_alerted: set[int] = set()

    def feed(self, records: list[dict[str, Any]]) -> list[str]:
        out: list[str] = []
        for r in records:
            kind = r.get("type")
            if kind == ev.LOG:
                out.extend(self._loss(r))
            elif kind == ev.EVAL:
                out.extend(self._eval(r))
            elif kind == ev.MEMORY:
                out.extend(self._memory(r))
        return out

    def _loss(self, r: dict[str, Any]) -> list[str]:
        loss = r.get("loss")
        if not isinstance(loss, (int, float)) or isinstance(loss, bool):
            return []
        step = r.get("step")
        if not math.isfinite(loss):
            if self.nan_seen:
                return []
            self.nan_seen = True
            return [f"loss is {loss} at step {step}: training diverged (lower the learning rate, check the data)"]
        alerts: list[str] = []
        if self.mean is not None and self.points >= SPIKE_MIN_POINTS:
            std = math.sqrt(max(self.var, 0.0))
            if loss > self.mean + SPIKE_SIGMAS * std and loss > self.mean * SPIKE_MIN_RATIO:
                alerts.append(f"loss spike at step {step}: {loss:.4g} against a running mean of {self.mean:.4g}")
        # exponentially weighted mean and variance: constant memory, follows the trend
        if self.mean is None:
            self.mean = float(loss)
        else:
            delta = loss - self.mean
            self.mean += 0.05 * delta
            self.var = 0.95 * (self.var + 0.05 * delta * delta)
        self.points += 1
        return alerts

    def _eval(self, r: dict[str, Any]) -> list[str]:
        loss = (r.get("metrics") or {}).get("eval_loss")
        if not isinstance(loss, (int, float)) or not math.isfinite(loss):
            return []
        best = self.best_eval_loss
        if best is None or loss < best:
            self.best_eval_loss = float(loss)
            return []
        if loss > best * (1 + EVAL_REGRESSION):
            return [f"eval regression at step {r.get('step')}: eval_loss {loss:.4g}, best so far {best:.4g}"]
        return []

    def _memory(self, r: dict[str, Any]) -> list[str]:
        peak, rank = r.get("peak_allocated"), int(r.get("rank") or 0)
        if not self.peak_estimate_bytes or not isinstance(peak, (int, float)) or rank in self.memory_alerted:
            return []
        if peak > self.peak_estimate_bytes * MEMORY_MARGIN:
            self.memory_alerted.add(rank)
            return [f"rank {rank} peak memory {peak / 2**30:.2f} GiB is above the plan's "
                    f"{self.peak_estimate_bytes / 2**30:.2f} GiB"]
        return []
