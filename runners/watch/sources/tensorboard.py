"""A TensorBoard log dir as a source: its scalars as log / eval / finish records.

Reading the dir (event files, tag names, steps held until complete) is
runners/watch/sources/formats/tensorboard_dir.py's; this module adds the source's state and records.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from runners import events as ev
from runners.watch.sources.formats.tensorboard_dir import TensorBoardStream
from runners.watch.sources.records import RUNNING_WITHIN_S


class TensorBoardSource:
    kind = "tensorboard"
    can_control = False

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.label = self.root.name
        self.stream = TensorBoardStream(self.root)
        self.finished = False
        self._started = False

    @property
    def warnings(self) -> list[str]:
        return self.stream.warnings

    @property
    def has_unread(self) -> bool:
        """Bytes already on disk that a bounded poll left for the next one."""
        return any(f.tail.more for f in self.stream.files.values())

    def poll(self) -> list[dict[str, Any]]:
        records = self.stream.poll()
        if records and not self._started:
            self._started = True
            records.insert(0, {"v": ev.SCHEMA_VERSION, "t": records[0].get("t"), "type": ev.START,
                               "runner": "tensorboard", "source": str(self.root)})
        self.finished = self.finished or any(r["type"] == ev.FINISH for r in records)
        return records

    def status(self) -> dict[str, Any]:
        if self.finished:
            state = "finished"
        elif self.stream.last_write and time.time() - self.stream.last_write < RUNNING_WITHIN_S:
            state = "running"
        else:
            state = "unknown"
        return {"state": state, "pids": [], "log_dir": str(self.root),
                "files": [str(p) for p in self.stream.files]}
