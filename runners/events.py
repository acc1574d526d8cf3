"""The event stream contract: ``events.jsonl`` in a run dir (schema in docs/events.md).

One JSON object per line, append-only, each record written with a single ``write`` on a file opened
in append mode and flushed at once, so several ranks may append to the same file and a reader sees
whole lines. Readers tolerate a partially written last line (kept for the next poll) and skip
corrupt lines with a warning.

Every source ftui can read (its own runs, Trainer output dirs, TensorBoard, wandb, simpletransformers)
is turned into records of this same schema, so the monitor cannot tell them apart.
"""
from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1

# Record types, in the order a run produces them.
START = "start"          # world_size, ranks, devices, total_steps, num_epochs, spec_hash, runner, task, pid
LOG = "log"              # step, epoch, loss, learning_rate, grad_norm, samples_per_second, tokens_per_second, ...
EVAL = "eval"            # step, epoch, metrics: {eval_loss: ..., eval_accuracy: ...}
CHECKPOINT = "checkpoint"  # step, path, metric, value, is_best
MEMORY = "memory"        # step, rank, device, allocated, reserved, peak_allocated, peak_reserved, rss
MESSAGE = "message"      # level, text
STOP = "stop"            # step, reason (user stop request honoured)
FINISH = "finish"        # step, metrics (train_runtime, train_loss, ...)
CRASH = "crash"          # step, error, traceback
TYPES = (START, LOG, EVAL, CHECKPOINT, MEMORY, MESSAGE, STOP, FINISH, CRASH)

EVENTS_FILE = "events.jsonl"


def _clean(value: Any) -> Any:
    """JSON has no NaN/inf: write them as strings a reader turns back into floats."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def restore_floats(value: Any) -> Any:
    if isinstance(value, str) and value in ("nan", "inf", "-inf"):
        return float(value)
    if isinstance(value, dict):
        return {k: restore_floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [restore_floats(v) for v in value]
    return value


def make_record(type_: str, **payload: Any) -> dict[str, Any]:
    return {"v": SCHEMA_VERSION, "t": round(time.time(), 3), "type": type_, **payload}


class EventWriter:
    """Appends records to an events file; safe to use from several processes at once."""

    def __init__(self, path: str | Path, rank: int = 0) -> None:
        self.path = Path(path)
        self.rank = rank
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def emit(self, type_: str, **payload: Any) -> dict[str, Any]:
        record = make_record(type_, **payload)
        line = json.dumps(_clean(record), separators=(",", ":"), default=str) + "\n"
        os.write(self._fd, line.encode())
        return record

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> EventWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class TailReader:
    """Reads new whole lines of a growing JSONL file by byte offset (never re-reads the file).

    A last line without its newline is left for the next poll; a line that is not a JSON object is
    skipped and counted in ``skipped`` with a warning kept in ``warnings``.
    """

    path: Path
    offset: int = 0
    skipped: int = 0
    warnings: list[str] = field(default_factory=list)
    max_bytes_per_poll: int = 4 * 1024 * 1024  # bounds a viewer's memory on a huge backlog

    def poll(self) -> list[dict[str, Any]]:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return []
        if size < self.offset:  # truncated or replaced: start again
            self.offset = 0
        if size == self.offset:
            return []
        with self.path.open("rb") as fh:
            fh.seek(self.offset)
            chunk = fh.read(min(size - self.offset, self.max_bytes_per_poll))
        end = chunk.rfind(b"\n")
        if end < 0:
            return []
        self.offset += end + 1
        return list(self._parse(chunk[: end + 1]))

    def _parse(self, chunk: bytes) -> Iterator[dict[str, Any]]:
        for raw in chunk.splitlines():
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                record = None
            if not isinstance(record, dict) or "type" not in record:
                self.skipped += 1
                if len(self.warnings) < 100:
                    self.warnings.append(f"{self.path}: skipped a corrupt line ({raw[:60]!r})")
                continue
            yield restore_floats(record)


def iter_chunks(path: str | Path, chunk_bytes: int = 4 * 1024 * 1024) -> Iterator[list[dict[str, Any]]]:
    """The whole events file, as lists of records read ``chunk_bytes`` at a time (bounded memory)."""
    reader = TailReader(Path(path), max_bytes_per_poll=chunk_bytes)
    while True:
        before = reader.offset
        records = reader.poll()
        if records:
            yield records
        elif reader.offset == before:
            return  # end of file (or a last line still being written)


def read_all(path: str | Path) -> list[dict[str, Any]]:
    """Every whole, valid record of an events file, however long (one poll reads at most 4 MiB)."""
    return [r for chunk in iter_chunks(path) for r in chunk]


def final_record(path: str | Path) -> dict[str, Any] | None:
    """The run's last finish/stop/crash record, reading the whole file in bounded chunks."""
    last = None
    for chunk in iter_chunks(path):
        for r in chunk:
            if r.get("type") in (FINISH, STOP, CRASH):
                if r.get("type") == FINISH and last is not None and last.get("type") == STOP:
                    last = {**r, "stopped": True}  # a stop, then the runner's finish summary
                else:
                    last = r
    return last
