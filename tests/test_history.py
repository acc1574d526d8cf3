"""RunHistory and Series: the bounded model every viewer reads."""
from __future__ import annotations

import math

from runners import events as ev
from runners.watch.history import RunHistory, Series


def test_series_is_bounded_and_keeps_spikes() -> None:
    series = Series(capacity=64)
    for step in range(1, 100_001):
        series.add(step, 1.0 if step != 77_777 else 50.0)
    assert len(series.buckets) <= 64
    assert series.count == 100_000
    assert max(b.hi for b in series.buckets) == 50.0
    assert min(b.lo for b in series.buckets) == 1.0
    assert series.buckets[0].step_lo == 1 and series.buckets[-1].step_hi == 100_000
    down = series.downsample(10)
    assert len(down) <= 10 and max(b.hi for b in down) == 50.0
    assert sum(b.count for b in down) == 100_000


def test_series_skips_non_finite_but_records_last() -> None:
    series = Series()
    series.add(1, 0.5)
    series.add(2, float("nan"))
    assert math.isnan(series.last_value) and series.last_step == 2
    assert series.points() == [(1, 0.5)]


def test_history_folds_a_run() -> None:
    records = [
        ev.make_record(ev.START, total_steps=100, world_size=2),
        ev.make_record(ev.LOG, step=10, epoch=0.1, loss=0.9, learning_rate=1e-3),
        ev.make_record(ev.EVAL, step=10, epoch=0.1, metrics={"eval_loss": 0.8, "eval_accuracy": 0.6}),
        ev.make_record(ev.CHECKPOINT, step=10, path="/x/checkpoint-10", metric="eval_accuracy", value=0.6,
                       is_best=True),
        ev.make_record(ev.LOG, step=20, epoch=0.2, loss=0.7, learning_rate=9e-4),
        ev.make_record(ev.EVAL, step=20, epoch=0.2, metrics={"eval_loss": 0.9, "eval_accuracy": 0.55}),
        ev.make_record(ev.CHECKPOINT, step=20, path="/x/checkpoint-20", metric="eval_accuracy", value=0.55,
                       is_best=False),
        ev.make_record(ev.MEMORY, step=20, rank=1, rss=1000, peak_allocated=None),
        ev.make_record(ev.FINISH, step=20, metrics={"train_runtime": 3.0}),
    ]
    history = RunHistory()
    history.apply(records)
    snap = history.snapshot()
    assert snap["state"] == "finished" and snap["step"] == 20 and snap["max_steps"] == 100
    assert snap["latest"]["loss"] == 0.7
    assert [e["step"] for e in snap["eval"]] == [10, 20]
    assert snap["best"] == {"step": 10, "metric": "eval_accuracy", "value": 0.6, "checkpoint": "/x/checkpoint-10"}
    assert history.memory_peak[1] == 1000
    assert history.series["loss"].points() == [(10, 0.9), (20, 0.7)]


def test_crash_and_stop_states() -> None:
    crashed = RunHistory()
    crashed.apply([ev.make_record(ev.LOG, step=1, loss=1.0), ev.make_record(ev.CRASH, error="KeyError: 'txt'")])
    assert crashed.state == "crashed" and crashed.error == "KeyError: 'txt'"
    stopped = RunHistory()
    stopped.apply([ev.make_record(ev.STOP, step=5, reason="user"), ev.make_record(ev.FINISH, step=5)])
    assert stopped.state == "stopped"


def test_rotated_checkpoint_is_marked_removed() -> None:
    history = RunHistory()
    history.apply([
        ev.make_record(ev.CHECKPOINT, step=4, path="/x/checkpoint-4", metric=None, value=None, is_best=False),
        ev.make_record(ev.CHECKPOINT, step=8, path="/x/checkpoint-8", metric=None, value=None, is_best=False),
        ev.make_record(ev.CHECKPOINT, step=4, path="/x/checkpoint-4", removed=True, reason="rotated away"),
        ev.make_record(ev.CHECKPOINT, step=2, path="/x/checkpoint-2", removed=True),  # its save was never seen
    ])
    by_step = {c["step"]: c for c in history.snapshot()["checkpoints"]}
    assert by_step[4]["removed"] is True and by_step[8]["removed"] is False and by_step[2]["removed"] is True
    assert [c["step"] for c in history.checkpoints] == [4, 8, 2] and history.step == 8
