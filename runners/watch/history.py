"""What a viewer knows about one run, built from event records of any source.

``RunHistory.apply(records)`` folds records (docs/events.md schema) into a bounded model: latest
values, compacting series for charts, the eval table, checkpoints and the best one, per-rank memory,
and the run's state. The UI, ``ftui attach --once --json`` and tests all read this one model.
Memory stays bounded however long the run: each :class:`Series` keeps at most ``capacity`` buckets,
merging neighbours (keeping min and max) when it fills, so a spike is never averaged away.
"""
from __future__ import annotations

import bisect
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from runners import events as ev

TRAIN_SERIES = ("loss", "learning_rate", "grad_norm", "samples_per_second", "tokens_per_second")
# Keys of a log record that are bookkeeping, not metrics.
NON_METRIC_KEYS = {"v", "t", "type", "step", "epoch", "rank", "source"}


@dataclass
class Bucket:
    step_lo: int
    step_hi: int
    first: float
    last: float
    lo: float
    hi: float
    total: float
    count: int

    def merge(self, other: Bucket) -> Bucket:
        return Bucket(self.step_lo, other.step_hi, self.first, other.last, min(self.lo, other.lo),
                      max(self.hi, other.hi), self.total + other.total, self.count + other.count)

    @property
    def mean(self) -> float:
        return self.total / self.count


class Series:
    """A (step, value) series with bounded memory: at most ``capacity`` buckets.

    When full, adjacent buckets are merged pairwise, halving the count; each bucket keeps its
    min, max, mean, first and last value, so downsampled charts still show spikes.
    """

    def __init__(self, capacity: int = 4096) -> None:
        self.capacity = capacity
        self.buckets: list[Bucket] = []
        self.span = 1  # points per bucket, doubles at each compaction
        self.count = 0
        self.last_step: int | None = None
        self.last_value: float | None = None

    def add(self, step: int, value: float) -> None:
        if value is None or not isinstance(value, (int, float)):
            return
        value = float(value)
        self.count += 1
        self.last_step, self.last_value = step, value
        if not math.isfinite(value):
            return  # NaN/inf are reported as alerts, never plotted
        top = self.buckets[-1] if self.buckets else None
        if top is not None and top.count < self.span and step >= top.step_hi:
            self.buckets[-1] = top.merge(Bucket(step, step, value, value, value, value, value, 1))
            return
        self.buckets.append(Bucket(step, step, value, value, value, value, value, 1))
        if len(self.buckets) > self.capacity:
            self._compact()

    def _compact(self) -> None:
        merged = [self.buckets[i].merge(self.buckets[i + 1]) for i in range(0, len(self.buckets) - 1, 2)]
        if len(self.buckets) % 2:
            merged.append(self.buckets[-1])
        self.buckets = merged
        self.span *= 2

    def downsample(self, width: int, window: tuple[int, int] | None = None) -> list[Bucket]:
        """At most ``width`` buckets covering the whole series, or the buckets that overlap the step
        ``window`` (lo, hi) only (min/max kept per bucket)."""
        buckets = self.buckets
        if window is not None:
            buckets = [b for b in buckets if b.step_hi >= window[0] and b.step_lo <= window[1]]
        if width <= 0 or not buckets:
            return []
        if len(buckets) <= width:
            return list(buckets)
        per = math.ceil(len(buckets) / width)
        out: list[Bucket] = []
        for i in range(0, len(buckets), per):
            group = buckets[i:i + per]
            acc = group[0]
            for b in group[1:]:
                acc = acc.merge(b)
            out.append(acc)
        return out

    def value_at(self, step: int) -> float | None:
        """The value at ``step``: the last one at or before it (the mean of its bucket when ``step`` falls
        inside a compacted one); None before the first."""
        i = bisect.bisect_right([b.step_lo for b in self.buckets], step) - 1
        if i < 0:
            return None
        b = self.buckets[i]
        return b.last if step >= b.step_hi else b.mean

    def points(self) -> list[tuple[int, float]]:
        """(step, mean) per bucket: the full-resolution series while it fits in capacity."""
        return [(b.step_hi, b.mean) for b in self.buckets]


def run_duration(started_at: float | None, last_at: float | None, now: float | None = None) -> float | None:
    """How long a run has taken, the one measure every view shows: from its start record to its last
    record, or to ``now`` for a live run (``now=None`` once it has ended). Never negative, and never
    shorter than the last record, so it does not run backwards as records arrive or the run ends."""
    if started_at is None:
        return None
    end = max(t for t in (last_at, now, started_at) if t is not None)
    return end - started_at


def listed_duration(started_at: float | None, last_at: float | None, status: dict[str, Any],
                    now: float) -> float | None:
    """The duration a list of runs shows (the runs screen, `ftui runs`): :func:`run_duration` from the records,
    to ``now`` while the reconciled ``status`` says the run is live; before any start record (pending, or a
    crash before the first record), the supervisor's own started/ended times."""
    live = status.get("state") in ("pending", "running")
    if started_at is not None:
        return run_duration(started_at, last_at, now if live else None)
    start = status.get("started_at") or status.get("created_at")
    end = status.get("ended_at") or (now if live else None)
    return end - start if start and end else None


@dataclass
class RunHistory:
    """The state of one run as far as the records seen so far tell."""

    source: str = "ftui"
    meta: dict[str, Any] = field(default_factory=dict)
    state: str = "unknown"  # pending, running, finished, stopped, crashed, unknown
    step: int = 0
    max_steps: int | None = None
    epoch: float | None = None
    latest: dict[str, float] = field(default_factory=dict)
    series: dict[str, Series] = field(default_factory=dict)
    evals: list[dict[str, Any]] = field(default_factory=list)
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None
    memory: dict[int, dict[str, Any]] = field(default_factory=dict)
    memory_peak: dict[int, int] = field(default_factory=dict)
    messages: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=200))
    error: str | None = None
    started_at: float | None = None
    ended_at: float | None = None
    last_event_at: float | None = None
    final_metrics: dict[str, Any] = field(default_factory=dict)
    records_seen: int = 0
    series_capacity: int = 4096
    eval_capacity: int = 10_000

    def apply(self, records: list[dict[str, Any]]) -> None:
        for record in records:
            self._apply_one(record)

    def series_for(self, name: str) -> Series:
        if name not in self.series:
            self.series[name] = Series(self.series_capacity)
        return self.series[name]

    def _apply_one(self, r: dict[str, Any]) -> None:
        self.records_seen += 1
        kind = r.get("type")
        t = r.get("t")
        if isinstance(t, (int, float)):  # the newest time seen: merged sources and ranks interleave
            self.last_event_at = t if self.last_event_at is None else max(self.last_event_at, t)
        step = r.get("step")
        if isinstance(step, int) and kind in (ev.LOG, ev.EVAL, ev.CHECKPOINT, ev.STOP, ev.FINISH):
            self.step = max(self.step, step)
        if isinstance(r.get("epoch"), (int, float)):
            self.epoch = r["epoch"]
        handler = getattr(self, f"_on_{kind}", None)
        if handler is not None:
            handler(r)

    def _on_start(self, r: dict[str, Any]) -> None:
        self.meta.update({k: v for k, v in r.items() if k not in ("v", "type")})
        if r.get("total_steps"):
            self.max_steps = int(r["total_steps"])
        self.started_at = self.started_at or r.get("t")
        if self.state in ("unknown", "pending"):
            self.state = "running"

    def _on_log(self, r: dict[str, Any]) -> None:
        step = int(r.get("step") or 0)
        for key, value in r.items():
            if key in NON_METRIC_KEYS or not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            self.latest[key] = value
            self.series_for(key).add(step, value)
        if self.state in ("unknown", "pending"):
            self.state = "running"

    def _on_eval(self, r: dict[str, Any]) -> None:
        metrics = {k: v for k, v in (r.get("metrics") or {}).items() if isinstance(v, (int, float))}
        step = int(r.get("step") or 0)
        entry = {"step": step, "epoch": r.get("epoch"), "metrics": metrics}
        if self.evals and self.evals[-1]["step"] == step:
            self.evals[-1]["metrics"].update(metrics)  # the same evaluation seen twice (merged sources)
        else:
            self.evals.append(entry)
            if len(self.evals) > self.eval_capacity:
                del self.evals[: len(self.evals) - self.eval_capacity]
        for key, value in metrics.items():
            self.series_for(key).add(step, value)

    def _on_checkpoint(self, r: dict[str, Any]) -> None:
        if r.get("removed"):  # rotated away (save_total_limit): kept in the list, marked removed
            known = [c for c in self.checkpoints if c.get("path") == r.get("path")]
            for c in known:
                c["removed"] = True
            if not known:
                self.checkpoints.append({"step": r.get("step"), "path": r.get("path"), "metric": None, "value": None,
                                         "is_best": False, "removed": True})
            return
        entry = {k: r.get(k) for k in ("step", "path", "metric", "value", "is_best")}
        entry["removed"] = False
        self.checkpoints = [c for c in self.checkpoints if c.get("path") != entry["path"]] + [entry]
        if entry.get("is_best"):
            self.best = {"step": entry["step"], "metric": entry["metric"], "value": entry["value"],
                         "checkpoint": entry["path"]}

    def _on_memory(self, r: dict[str, Any]) -> None:
        rank = int(r.get("rank") or 0)
        self.memory[rank] = {k: v for k, v in r.items() if k not in ("v", "type")}
        peak = r.get("peak_allocated") or r.get("rss") or 0
        self.memory_peak[rank] = max(self.memory_peak.get(rank, 0), int(peak))

    def _on_message(self, r: dict[str, Any]) -> None:
        self.messages.append({"t": r.get("t"), "level": r.get("level", "info"), "text": r.get("text", "")})

    def _on_stop(self, r: dict[str, Any]) -> None:
        self.state = "stopped"
        self.ended_at = r.get("t")

    def _on_finish(self, r: dict[str, Any]) -> None:
        if self.state != "stopped":
            self.state = "finished"
        self.final_metrics.update(r.get("metrics") or {})
        self.ended_at = r.get("t")

    def _on_crash(self, r: dict[str, Any]) -> None:
        self.state = "crashed"
        self.error = r.get("error")
        self.ended_at = r.get("t")

    def duration(self, now: float | None = None) -> float | None:
        """The run's duration by :func:`run_duration`: to ``now`` while it is live (pass None once ended)."""
        return run_duration(self.started_at, self.last_event_at, now)

    def eta_seconds(self) -> float | None:
        """Remaining time from the average step time so far (None until it can be told)."""
        duration = self.duration()  # start record to last record, as elapsed and the step time
        if not (self.max_steps and duration and self.step > 0):
            return None
        per_step = duration / self.step
        return max(0.0, (self.max_steps - self.step) * per_step)

    def snapshot(self) -> dict[str, Any]:
        """The JSON object of ``ftui attach --once --json`` (without ``processes``)."""
        return {
            "source": self.source,
            "state": self.state,
            "step": self.step,
            "max_steps": self.max_steps,
            "epoch": self.epoch,
            "latest": dict(self.latest),
            "eval": [dict(e) for e in self.evals],
            "best": dict(self.best) if self.best else None,
            "checkpoints": [dict(c) for c in self.checkpoints],
            "memory": {str(k): v for k, v in self.memory.items()},
            "error": self.error,
        }
