"""A Hugging Face Trainer output dir (also sentence-transformers, which uses the Trainer).

Reads ``trainer_state.json`` at the root and in every ``checkpoint-*/`` (each file only when its
mtime or size changed; the newest, by global_step, wins for best-model info; histories are merged
without duplicates) and any TensorBoard event files below the dir, which carry every log as it
happens, not only those up to the last checkpoint. Values come from trainer_state.json when it
already has them (full precision), else from TensorBoard (float32 for some tags).
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

from runners import events as ev
from runners.watch.sources.formats.tensorboard_dir import TensorBoardStream
from runners.watch.sources.records import RecordMerger, from_trainer_log, output_dir_state

STATE_FILE = "trainer_state.json"
CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


def checkpoint_dirs(root: Path) -> list[tuple[int, Path]]:
    out = []
    try:
        for child in root.iterdir():
            m = CHECKPOINT_RE.match(child.name)
            if m and child.is_dir():
                out.append((int(m.group(1)), child))
    except OSError:
        return []
    return sorted(out)


def saved_at(checkpoint: Path, fallback: float) -> float:
    """When a checkpoint was written (its trainer_state.json's mtime), so a finished dir's last record, and so its
    duration, does not move on to the time it is read."""
    try:
        return (checkpoint / STATE_FILE).stat().st_mtime
    except OSError:
        return fallback


class TrainerSource:
    kind = "trainer"
    can_control = False

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.label = self.root.name
        self.tb = TensorBoardStream(self.root)
        self.merger = RecordMerger()
        self._seen_files: dict[Path, tuple[float, int]] = {}
        self._seen_checkpoints: dict[str, bool] = {}  # path -> announced as best
        self._own_warnings: list[str] = []
        self._started = False
        self._state_seen = False
        self.newest_state: dict[str, Any] = {}
        self.finished = False
        self.last_write = 0.0
        self.pids: list[int] = []
        self._pid_scan_at = 0.0  # set by a PID source that found this dir through a process

    @property
    def warnings(self) -> list[str]:
        return self._own_warnings + self.tb.warnings

    def _warn(self, text: str) -> None:
        if text not in self._own_warnings and len(self._own_warnings) < 100:
            self._own_warnings.append(text)

    def _changed_states(self) -> list[tuple[int, Path, dict[str, Any], float]]:
        candidates = [self.root / STATE_FILE] + [d / STATE_FILE for _, d in checkpoint_dirs(self.root)]
        out = []
        for path in candidates:
            try:
                st = path.stat()
            except OSError:
                continue
            sig = (st.st_mtime, st.st_size)
            if self._seen_files.get(path) == sig:
                continue
            self._seen_files[path] = sig
            self.last_write = max(self.last_write, st.st_mtime)
            try:
                state = json.loads(path.read_text())
                if not isinstance(state, dict) or not isinstance(state.get("log_history", []), list):
                    raise ValueError("not a trainer state object")
            except (OSError, ValueError) as exc:  # JSONDecodeError is a ValueError
                self._warn(f"{path}: unreadable trainer state skipped ({type(exc).__name__}: {str(exc)[:80]})")
                continue
            out.append((int(state.get("global_step") or 0), path, state, st.st_mtime))
        return sorted(out, key=lambda item: item[0])

    def _start_record(self, state: dict[str, Any], t: float) -> dict[str, Any]:
        return {"v": ev.SCHEMA_VERSION, "t": round(t, 3), "type": ev.START, "runner": self._runner(),
                "total_steps": state.get("max_steps"), "num_epochs": state.get("num_train_epochs"),
                "train_batch_size": state.get("train_batch_size"), "source": str(self.root)}

    def _runner(self) -> str:
        marker = "config_sentence_transformers.json"
        if (self.root / marker).exists() or any(self.root.glob(f"checkpoint-*/{marker}")):
            return "sentence_transformers"
        return "hf_trainer"

    def _best_path(self) -> str | None:
        best = self.newest_state.get("best_model_checkpoint")
        if not best:
            return None
        path = Path(best)
        if not path.is_absolute():  # relative to the training process's cwd: map into this dir
            path = self.root / path.name
        return str(path)

    def _checkpoint_records(self, t: float) -> list[dict[str, Any]]:
        """A record per new checkpoint dir, and again when it becomes the best one."""
        best_path = self._best_path()
        best_step = self.newest_state.get("best_global_step")
        best_metric = self.newest_state.get("best_metric")
        metric = self._best_metric_name(best_step, best_metric)
        out = []
        for step, path in checkpoint_dirs(self.root):
            is_best = best_path is not None and Path(best_path).name == path.name
            if self._seen_checkpoints.get(str(path)) in (is_best, True):
                continue
            self._seen_checkpoints[str(path)] = is_best
            out.append({"v": ev.SCHEMA_VERSION, "t": round(saved_at(path, t), 3), "type": ev.CHECKPOINT, "step": step,
                        "path": str(path), "metric": metric if is_best else None,
                        "value": best_metric if is_best else None, "is_best": is_best})
        return out

    def _best_metric_name(self, step: Any, value: Any) -> str | None:
        """The eval key whose value at the best step equals best_metric (Trainer does not store it)."""
        for entry in self.newest_state.get("log_history") or []:
            if isinstance(entry, dict) and entry.get("step") == step:
                for key, v in entry.items():
                    if key.startswith("eval_") and v == value:
                        return key
        return None

    def poll(self) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = []
        now = time.time()
        for global_step, _path, state, mtime in self._changed_states():
            if global_step >= int(self.newest_state.get("global_step") or -1):
                self.newest_state = state
            if not self._state_seen:  # a first start may have come from TensorBoard, without totals
                self._state_seen = self._started = True
                records.append(self._start_record(state, mtime))
            for entry in state.get("log_history") or []:
                record = from_trainer_log(entry, round(mtime, 3)) if isinstance(entry, dict) else None
                if record is not None:
                    records.append(record)
        records = self.merger.admit_all(records)
        tb_records = self.merger.admit_all(self.tb.poll(flush=self.finished))
        if tb_records and not self._started:
            self._started = True
            records.append({"v": ev.SCHEMA_VERSION, "t": tb_records[0].get("t"), "type": ev.START,
                            "runner": self._runner(), "source": str(self.root)})
        records += tb_records
        records += self._checkpoint_records(now)
        self.last_write = max(self.last_write, self.tb.last_write)
        self.finished = self.finished or any(r["type"] == ev.FINISH for r in records)
        return records

    def status(self) -> dict[str, Any]:
        state, alive = output_dir_state(self)
        return {"state": state, "pids": alive, "output_dir": str(self.root),
                "best_model_checkpoint": self._best_path(),
                "global_step": self.newest_state.get("global_step"),
                "max_steps": self.newest_state.get("max_steps")}
