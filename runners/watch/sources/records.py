"""Building event records from other libraries' key/value logs, and merging overlapping streams.

A Trainer output dir tells the same story twice (``trainer_state.json`` in several checkpoints and
TensorBoard); :class:`RecordMerger` passes each value on once, so the monitor never plots a point
twice, and a record whose values all came already is dropped.
"""
from __future__ import annotations

import math
import time
from typing import Any

from runners import events as ev

# Keys the Trainer logs once, in the final log entry, with ``train_runtime``.
FINISH_KEYS = ("train_runtime", "train_samples_per_second", "train_steps_per_second", "total_flos", "train_loss")
# With include_num_input_tokens_seen, every log entry also carries train_runtime (and train_tokens_per_second):
# the final summary is the entry that has train_runtime and one of these besides.
SUMMARY_ONLY_KEYS = ("train_samples_per_second", "train_steps_per_second", "total_flos", "train_loss")
BOOKKEEPING = {"step", "epoch", "v", "t", "type"}
TYPE_ORDER = {ev.START: 0, ev.LOG: 1, ev.EVAL: 2, ev.CHECKPOINT: 3, ev.FINISH: 4, ev.CRASH: 5}
RUNNING_WITHIN_S = 120.0  # files written this recently mean the job is still going
PID_SCAN_EVERY_S = 10.0  # how often an output-dir source looks for a process writing it


class ThroughSource:
    """A source that reads through another (``inner``), opened once the dir it found holds something to read:
    a PID's or a Slurm job's output dir may not exist until the job's first save or log. Subclasses open it in
    ``_open_inner``; each poll tries again until it is there."""

    inner: Any = None

    def _open_inner(self) -> None:
        raise NotImplementedError

    def inner_warnings(self) -> list[str]:
        return list(self.inner.warnings) if self.inner is not None else []

    def poll(self) -> list[dict[str, Any]]:
        if self.inner is None:
            self._open_inner()
            if self.inner is None:
                return []
        return self.inner.poll()


def is_final_summary(values: dict[str, Any]) -> bool:
    """The Trainer's last log entry (the run's summary), not a step's log that also reports train_runtime."""
    return "train_runtime" in values and any(k in values for k in SUMMARY_ONLY_KEYS)


def split_records(t: float, step: int, train: dict[str, Any], evals: dict[str, Any]) -> list[dict[str, Any]]:
    """Scalars logged at one step, already split into train and eval names -> log/eval/finish records.

    ``train`` is consumed: ``epoch`` and the Trainer's final summary keys are taken out of it.
    """
    epoch = train.pop("epoch", None)
    base = {"v": ev.SCHEMA_VERSION, "t": round(t, 3), "step": step, "epoch": epoch}
    finish = {k: train.pop(k) for k in FINISH_KEYS if k in train} if is_final_summary(train) else {}
    out: list[dict[str, Any]] = []
    if train:
        out.append({**base, "type": ev.LOG, **train})
    if evals:
        out.append({**base, "type": ev.EVAL, "metrics": evals})
    if finish:
        out.append({**base, "type": ev.FINISH, "metrics": finish})
    return out


def output_dir_state(source: Any) -> tuple[str, list[int]]:
    """(state, live pids) of an output dir written by a job ftui did not start.

    Finished once the final record was seen; running while a process writing it lives or files changed
    lately; crashed when ftui saw that process end without a final record; unknown otherwise.
    ``source`` has ``root``, ``pids``, ``finished``, ``last_write`` and ``_pid_scan_at``.
    """
    from runners.runstate import pid_alive

    if not source.pids and not source.finished and time.time() - source._pid_scan_at > PID_SCAN_EVERY_S:
        from runners.watch.procs import processes_for_dir  # a matching live process means running

        source._pid_scan_at = time.time()
        source.pids = processes_for_dir(source.root)
    alive = [p for p in source.pids if pid_alive(p)]
    if source.finished:
        return "finished", alive
    if alive or (source.last_write and time.time() - source.last_write < RUNNING_WITHIN_S):
        return "running", alive
    return ("crashed" if source.pids else "unknown"), alive


def _number(value: Any) -> float | int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value


def from_trainer_log(entry: dict[str, Any], t: float | None = None) -> dict[str, Any] | None:
    """One ``log_history`` entry (Trainer's own dict) -> a log, eval or finish record."""
    step = entry.get("step")
    if not isinstance(step, int):
        return None
    epoch = _number(entry.get("epoch"))
    values = {k: v for k, v in entry.items() if k not in BOOKKEEPING and _number(v) is not None}
    base = {"v": ev.SCHEMA_VERSION, "t": t, "step": step, "epoch": epoch}
    if is_final_summary(values):
        return {**base, "type": ev.FINISH, "metrics": values}
    if any(k.startswith(("eval_", "test_")) for k in values):
        return {**base, "type": ev.EVAL, "metrics": values}
    if not values:
        return None
    return {**base, "type": ev.LOG, **values}


def values_of(record: dict[str, Any]) -> dict[str, Any]:
    if record["type"] in (ev.EVAL, ev.FINISH):
        return dict(record.get("metrics") or {})
    return {k: v for k, v in record.items() if k not in BOOKKEEPING}


def with_values(record: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    if record["type"] in (ev.EVAL, ev.FINISH):
        return {**record, "metrics": values}
    return {**{k: v for k, v in record.items() if k in BOOKKEEPING}, **values}


class RecordMerger:
    """Drops values already passed on for the same (type, step) and key; keeps the rest."""

    def __init__(self) -> None:
        self.seen: dict[tuple[str, int], set[str]] = {}

    def admit(self, record: dict[str, Any]) -> dict[str, Any] | None:
        kind, step = record.get("type"), record.get("step")
        if kind not in (ev.LOG, ev.EVAL, ev.FINISH) or not isinstance(step, int):
            return record
        seen = self.seen.setdefault((kind, step), set())
        fresh = {k: v for k, v in values_of(record).items() if k not in seen}
        if not fresh and (seen or kind != ev.FINISH):
            return None
        seen.update(fresh)
        return with_values(record, fresh)

    def admit_all(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = [r for r in (self.admit(r) for r in records) if r is not None]
        return sort_records(out)


def sort_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Step order, and within a step: start, log, eval, checkpoint, finish (stable otherwise)."""
    def key(r: dict[str, Any]) -> tuple[float, int]:
        step = r.get("step")
        return (step if isinstance(step, (int, float)) else -math.inf, TYPE_ORDER.get(r.get("type") or "", 9))
    return sorted(records, key=key)
