"""A simpletransformers output dir: ``training_progress_scores.csv``, ``checkpoint-*``, ``best_model/``.

The CSV (rewritten whole by pandas at every evaluation) has one row per evaluation: ``global_step``,
``train_loss`` (the running loss at that step) and every eval metric. It is read by byte offset;
a shorter file means it was being rewritten, so it is read again and the merger drops what was
already passed on. The best model is the one in ``best_model/`` (its ``eval_results.txt`` holds
the metrics of the evaluation that produced it, ``early_stopping_metric`` in model_args.json names
the metric); the run is finished once the final model is saved at the root.
"""
from __future__ import annotations

import csv
import io
import json
import math
import re
import time
from pathlib import Path
from typing import Any

from runners import events as ev
from runners.watch.sources.records import RecordMerger, output_dir_state

SCORES = "training_progress_scores.csv"
CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)(?:-epoch-(\d+))?$")
WEIGHTS = ("model.safetensors", "pytorch_model.bin")


def read_eval_results(path: Path) -> dict[str, float]:
    out: dict[str, float] = {}
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        key, sep, value = line.partition(" = ")
        try:
            out[key.strip()] = float(value)
        except ValueError:
            continue
    return out


class SimpleTransformersSource:
    kind = "simpletransformers"
    can_control = False

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.label = self.root.name
        self.merger = RecordMerger()
        self._offset = 0
        self._header: list[str] | None = None
        self._own_warnings: list[str] = []
        self._seen_checkpoints: set[str] = set()
        self._best_sig: tuple[float, int] | None = None
        self._rows: list[dict[str, float]] = []
        self._announced_total: int | None = None
        self._started = False
        self.finished = False
        self.last_write = 0.0
        self.pids: list[int] = []
        self._pid_scan_at = 0.0

    @property
    def warnings(self) -> list[str]:
        return list(self._own_warnings)

    def _warn(self, text: str) -> None:
        if text not in self._own_warnings and len(self._own_warnings) < 100:
            self._own_warnings.append(text)

    def _model_args(self) -> dict[str, Any]:
        candidates = [self.root / "model_args.json"] + sorted(self.root.glob("checkpoint-*/model_args.json"))
        for path in candidates:
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(data, dict):
                return data
        return {}

    def _new_rows(self) -> list[dict[str, float]]:
        path = self.root / SCORES
        try:
            st = path.stat()
            if st.st_size < self._offset:
                self._offset, self._header = 0, None  # rewritten: read again, duplicates are dropped
            if st.st_size == self._offset:
                return []
            with path.open("rb") as fh:
                fh.seek(self._offset)
                chunk = fh.read()
        except OSError:
            return []
        self.last_write = max(self.last_write, st.st_mtime)
        end = chunk.rfind(b"\n")
        if end < 0:
            return []
        self._offset += end + 1
        rows = []
        for fields in csv.reader(io.StringIO(chunk[: end + 1].decode("utf-8", errors="replace"))):
            if not fields:
                continue
            if self._header is None:
                if "global_step" not in fields:
                    self._warn(f"{path}: first line is not a header with global_step; file skipped")
                    self._offset = st.st_size
                    return []
                self._header = fields
                continue
            row = self._parse_row(fields, path)
            if row is not None:
                rows.append(row)
        return rows

    def _parse_row(self, fields: list[str], path: Path) -> dict[str, float] | None:
        if self._header is None or len(fields) != len(self._header):
            self._warn(f"{path}: skipped a malformed row ({','.join(fields)[:60]!r})")
            return None
        row: dict[str, float] = {}
        for key, value in zip(self._header, fields):
            try:
                row[key] = float(value)
            except ValueError:
                continue
        step = row.get("global_step")
        if step is None or not math.isfinite(step):
            self._warn(f"{path}: skipped a row without a numeric global_step ({','.join(fields)[:60]!r})")
            return None
        return row

    def _row_records(self, row: dict[str, float], t: float) -> list[dict[str, Any]]:
        step = int(row["global_step"])
        base = {"v": ev.SCHEMA_VERSION, "t": round(t, 3), "step": step}
        out = []
        if "train_loss" in row:
            out.append({**base, "type": ev.LOG, "loss": row["train_loss"]})
        metrics = {k: v for k, v in row.items() if k not in ("global_step", "train_loss")}
        if metrics:
            out.append({**base, "type": ev.EVAL, "metrics": metrics})
        return out

    def _checkpoints(self, args: dict[str, Any]) -> tuple[list[dict[str, Any]], int | None]:
        """New checkpoint records, and the total step count once an epoch checkpoint tells it."""
        out, total = [], None
        for child in sorted(self.root.glob("checkpoint-*")):
            m = CHECKPOINT_RE.match(child.name)
            if not m or not child.is_dir():
                continue
            step = int(m.group(1))
            if m.group(2) and int(m.group(2)) == 1 and args.get("num_train_epochs"):
                total = step * int(args["num_train_epochs"])
            if str(child) not in self._seen_checkpoints:
                self._seen_checkpoints.add(str(child))
                out.append({"v": ev.SCHEMA_VERSION, "t": round(time.time(), 3), "type": ev.CHECKPOINT,
                            "step": step, "path": str(child), "metric": None, "value": None, "is_best": False})
        return out, total

    def _best(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        best_dir = Path(args.get("best_model_dir") or self.root / "best_model")
        if not best_dir.is_absolute() or not best_dir.exists():
            best_dir = self.root / "best_model"
        results = best_dir / "eval_results.txt"
        try:
            st = results.stat()
        except OSError:
            return []
        if self._best_sig == (st.st_mtime, st.st_size):
            return []
        self._best_sig = (st.st_mtime, st.st_size)
        metrics = read_eval_results(results)
        metric = args.get("early_stopping_metric") or "eval_loss"
        value = metrics.get(metric)
        step = next((int(r["global_step"]) for r in self._rows
                     if all(r.get(k) == v for k, v in metrics.items() if k in r)), None)
        if value is None or step is None:
            return []
        return [{"v": ev.SCHEMA_VERSION, "t": round(st.st_mtime, 3), "type": ev.CHECKPOINT, "step": step,
                 "path": str(best_dir), "metric": metric, "value": value, "is_best": True}]

    def _finished(self) -> bool:
        scores = self.root / SCORES
        try:
            scores_mtime = scores.stat().st_mtime
        except OSError:
            return False
        for name in WEIGHTS:
            weights = self.root / name
            if weights.exists() and weights.stat().st_mtime >= scores_mtime - 1:
                return True
        return False

    def poll(self) -> list[dict[str, Any]]:
        args = self._model_args()
        rows = self._new_rows()
        self._rows += rows
        records: list[dict[str, Any]] = []
        checkpoints, total = self._checkpoints(args)
        if not self._started and (rows or checkpoints):
            self._started = True
            records.append({"v": ev.SCHEMA_VERSION, "t": round(time.time(), 3), "type": ev.START,
                            "runner": "simpletransformers", "num_epochs": args.get("num_train_epochs"),
                            "model": args.get("model_name"), "source": str(self.root)})
        if total and total != self._announced_total:
            self._announced_total = total
            records.append({"v": ev.SCHEMA_VERSION, "t": round(time.time(), 3), "type": ev.START,
                            "total_steps": total})
        now = time.time()
        for row in rows:
            records += self._row_records(row, now)
        records = self.merger.admit_all(records) + checkpoints + self._best(args)
        if not self.finished and self._rows and self._finished():
            self.finished = True
            last = int(self._rows[-1]["global_step"])
            records.append({"v": ev.SCHEMA_VERSION, "t": round(now, 3), "type": ev.FINISH, "step": last,
                            "metrics": {"train_loss": self._rows[-1].get("train_loss")}})
        return records

    def status(self) -> dict[str, Any]:
        state, alive = output_dir_state(self)
        return {"state": state, "pids": alive, "output_dir": str(self.root)}
