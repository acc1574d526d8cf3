"""Messages that worker threads post to the UI thread.

Reading files, sampling NVML and computing plans happen in ``@work(thread=True)`` workers; each
worker ends by posting one of these, and the handler applies it on the UI thread. Messages that
carry "the latest state" can replace an older queued one of the same kind (``can_replace``), so a
slow terminal never works through a backlog of stale updates.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from textual.message import Message


class HistoryUpdated(Message):
    """New records were folded into a monitor's history (``count`` of them since the last one)."""

    def __init__(self, count: int, status: dict[str, Any] | None, log_tail: list[str] | None,
                 alerts: list[str], final: bool = True) -> None:
        super().__init__()
        self.final = final  # False: a progress update while a long backlog is still being read
        self.count = count
        self.status = status
        self.log_tail = log_tail
        self.alerts = alerts

    def can_replace(self, message: Message) -> bool:
        return False  # alerts and counts must not be lost; the poll loop never queues two anyway


class TelemetrySampled(Message):
    """One telemetry sample (runners.watch.telemetry.Telemetry.sample())."""

    def __init__(self, sample: dict[str, Any]) -> None:
        super().__init__()
        self.sample = sample

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, TelemetrySampled)


class PlanReady(Message):
    """A plan for the setup's current spec, or the error that prevented one."""

    def __init__(self, generation: int, plan: dict[str, Any] | None, error: str | None,
                 command: list[str] | None) -> None:
        super().__init__()
        self.generation = generation
        self.plan = plan
        self.error = error
        self.command = command

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, PlanReady)


class Launched(Message):
    """The launcher subprocess finished: a run dir, or the launcher's error text."""

    def __init__(self, run_dir: Path | None, error: str | None) -> None:
        super().__init__()
        self.run_dir = run_dir
        self.error = error


class RunsScanned(Message):
    """Rows of the runs screen, one dict per run dir."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        super().__init__()
        self.rows = rows

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, RunsScanned)


class TryAnswered(Message):
    """One line of a Try session for an answer column: a status, the loaded facts, a token, a result or an error."""

    def __init__(self, slot: str, status: str | None = None, facts: dict[str, Any] | None = None,
                 token: str | None = None, result: dict[str, Any] | None = None, error: str | None = None,
                 pieces: int = 1) -> None:
        super().__init__()
        self.slot = slot
        self.pieces = pieces  # streamed pieces joined in ``token``
        self.status = status
        self.facts = facts
        self.token = token
        self.result = result
        self.error = error


class ComparisonLoaded(Message):
    """The compare view's runs, read (``comparison``: a runners.results.compare.Comparison), or why they could not be."""

    def __init__(self, comparison: Any = None, error: str | None = None) -> None:
        super().__init__()
        self.comparison = comparison
        self.error = error
