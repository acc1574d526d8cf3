"""A wandb run dir (offline or synced): the ``run-<id>.wandb`` transaction log, read live.

Format (wandb 0.31, shared/NOTES.md): a 7-byte header (``:W&B``, 0xBEE1, version 0), then
LevelDB-style 32 KiB blocks of chunks ``crc32 (zlib, over type byte + data) | uint16 length |
uint8 type`` with types FULL/FIRST/MIDDLE/LAST. Each whole record is a protobuf
``wandb.proto.wandb_internal_pb2.Record``; ``history`` records carry the logged metrics, ``exit``
the exit code. The file grows by whole blocks while the run is live, so a reader lags by up to a
block. A chunk with a bad checksum loses the rest of its block (as in LevelDB), with a warning.
wandb's protobufs pull in the wandb package (~0.5 s), so they are imported only when a wandb
source is opened.
"""
from __future__ import annotations

import json
import struct
import time
import zlib
from pathlib import Path
from typing import Any

from runners import events as ev
from runners.watch.sources.formats.tensorboard_dir import metric_name
from runners.watch.sources.records import FINISH_KEYS, RUNNING_WITHIN_S, RecordMerger, split_records

MAGIC = b":W&B"
FILE_HEADER = 7
BLOCK = 32 * 1024
CHUNK_HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def find_wandb_file(path: Path) -> tuple[Path | None, list[str]]:
    """The .wandb file for a file, a run dir, a wandb/ dir (latest run) or a project dir."""
    if path.is_file():
        return path, []
    own = sorted(path.glob("run-*.wandb"))
    if own:
        return own[-1], []
    wandb_dir = path if path.name == "wandb" else path / "wandb"
    latest = wandb_dir / "latest-run"
    if latest.exists():
        files = sorted(latest.resolve().glob("run-*.wandb"))
        if files:
            others = len(list(wandb_dir.glob("*run-*/run-*.wandb"))) - 1
            notes = [f"{wandb_dir} holds {others + 1} runs; showing latest-run ({latest.resolve().name})"] if others else []
            return files[-1], notes
    runs = sorted(wandb_dir.glob("*run-*/run-*.wandb"), key=lambda p: p.stat().st_mtime)
    if not runs:
        return None, []
    notes = [f"{wandb_dir} holds {len(runs)} runs; showing the newest ({runs[-1].parent.name})"] if len(runs) > 1 else []
    return runs[-1], notes


class WandbLogReader:
    """Whole records of a growing .wandb file, by offset; a partial record waits for the next poll."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.pending = b""  # data of a FIRST/MIDDLE chunk sequence not yet ended
        self.warnings: list[str] = []

    def _warn(self, text: str) -> None:
        if len(self.warnings) < 100:
            self.warnings.append(f"{self.path}: {text}")

    def poll(self) -> list[bytes]:
        try:
            with self.path.open("rb") as fh:
                if self.offset == 0:
                    head = fh.read(FILE_HEADER)
                    if len(head) < FILE_HEADER:
                        return []
                    if head[:4] != MAGIC:
                        if not self.warnings:
                            self._warn("not a wandb transaction log (bad header); skipped")
                        return []
                    self.offset = FILE_HEADER
                fh.seek(self.offset)
                buf = fh.read()
        except OSError as exc:
            self._warn(f"cannot read ({exc})")
            return []
        out: list[bytes] = []
        pos = 0
        while True:
            absolute = self.offset + pos
            left_in_block = BLOCK - absolute % BLOCK
            if left_in_block < CHUNK_HEADER:  # block trailer: zero padding
                if len(buf) - pos < left_in_block:
                    break
                pos += left_in_block
                continue
            if len(buf) - pos < CHUNK_HEADER:
                break
            crc, length, kind = struct.unpack("<IHB", buf[pos:pos + CHUNK_HEADER])
            if kind == 0 and length == 0 and crc == 0:
                break  # preallocated / not yet written
            end = pos + CHUNK_HEADER + length
            if end > len(buf) and length <= left_in_block - CHUNK_HEADER:
                break
            data = buf[pos + CHUNK_HEADER:min(end, len(buf))]
            if length > left_in_block - CHUNK_HEADER or zlib.crc32(data, zlib.crc32(bytes([kind]))) != crc:
                if left_in_block > len(buf) - pos:
                    break  # skip the rest of the block once it is whole
                self._warn(f"corrupt chunk at byte {absolute}; rest of its block skipped")
                self.pending = b""
                pos += left_in_block
                continue
            pos = end
            if kind == FULL:
                out.append(data)
            elif kind == FIRST:
                self.pending = data
            elif kind == MIDDLE:
                self.pending += data
            elif kind == LAST:
                out.append(self.pending + data)
                self.pending = b""
        self.offset += pos
        return out


def _value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


class WandbSource:
    kind = "wandb"
    can_control = False

    def __init__(self, path: Path) -> None:
        from wandb.proto import wandb_internal_pb2  # heavy: only when a wandb source is opened

        self._pb: Any = wandb_internal_pb2  # generated protobuf module: its stubs lack the message classes
        file, notes = find_wandb_file(Path(path))
        if file is None:
            from runners.errors import UserError
            raise UserError(f"'{path}' holds no wandb run (run-*.wandb). Point ftui attach at a wandb run dir "
                            f"(wandb/offline-run-*/ or wandb/run-*/), its .wandb file, or the wandb/ dir.")
        self.file = file
        self.run_dir = file.parent
        self.label = self.run_dir.name
        self.reader = WandbLogReader(file)
        self.merger = RecordMerger()
        self._own_warnings = list(notes)
        self.exit_code: int | None = None
        self.finished_record = False
        self.crash_record = False
        self.final_metrics: dict[str, Any] = {}
        self._started = False
        self.run_info: dict[str, Any] = {}
        self.pids: list[int] = []

    @property
    def warnings(self) -> list[str]:
        return self._own_warnings + self.reader.warnings

    def _config(self, record: Any) -> list[dict[str, Any]]:
        """The Trainer logs its TrainingArguments to the config: total steps and epochs from there."""
        items = {"/".join(u.nested_key) if u.nested_key else u.key: _value(u.value_json) for u in record.config.update}
        total = items.get("max_steps")
        if not (isinstance(total, int) and total > 0):
            return []
        return [{"v": ev.SCHEMA_VERSION, "t": round(time.time(), 3), "type": ev.START, "total_steps": total,
                 "num_epochs": items.get("num_train_epochs")}]

    def _history(self, record: Any) -> list[dict[str, Any]]:
        items: dict[str, Any] = {}
        for item in record.history.item:
            key = "/".join(item.nested_key) if item.nested_key else item.key
            items[key] = _value(item.value_json)
        t = items.get("_timestamp")
        step = items.get("train/global_step", items.get("global_step", items.get("_step")))
        if not isinstance(step, (int, float)):
            step = record.history.step.num
        train: dict[str, float] = {}
        evals: dict[str, float] = {}
        for key, value in items.items():
            if key.startswith("_") or key in ("train/global_step", "global_step") or \
                    isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            split, name = metric_name(key)
            (train if split == "train" else evals)[name] = value
        return split_records(t if isinstance(t, (int, float)) else time.time(), int(step), train, evals)

    def poll(self) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = []
        for payload in self.reader.poll():
            rec = self._pb.Record()
            try:
                rec.ParseFromString(payload)
            except Exception as exc:  # protobuf DecodeError
                self.reader._warn(f"unparsable record skipped ({type(exc).__name__})")
                continue
            kind = rec.WhichOneof("record_type")
            if kind == "run":
                self.run_info = {"run_id": rec.run.run_id, "project": rec.run.project,
                                 "started_at": rec.run.start_time.seconds or None}
                if not self._started:
                    self._started = True
                    records.append({"v": ev.SCHEMA_VERSION, "t": rec.run.start_time.seconds or time.time(),
                                    "type": ev.START, "runner": "wandb", "run_id": rec.run.run_id,
                                    "project": rec.run.project, "source": str(self.file)})
            elif kind == "config":
                records += self._config(rec)
            elif kind == "history":
                records += self._history(rec)
            elif kind == "summary":
                for item in rec.summary.update:
                    key = "/".join(item.nested_key) if item.nested_key else item.key
                    if key.split("/")[-1] in FINISH_KEYS:
                        self.final_metrics[key.split("/")[-1]] = _value(item.value_json)
            elif kind == "exit":
                self.exit_code = int(rec.exit.exit_code)
        records = self.merger.admit_all(records)
        finished_now = "train_runtime" in self.final_metrics or self.exit_code == 0
        if not self.finished_record and finished_now:
            self.finished_record = True
            if not any(k[0] == ev.FINISH for k in self.merger.seen):
                # the Trainer puts its final metrics in the run summary, not in the history
                records.append({"v": ev.SCHEMA_VERSION, "t": round(time.time(), 3), "type": ev.FINISH,
                                "step": max((k[1] for k in self.merger.seen), default=0),
                                "metrics": dict(self.final_metrics)})
        if self.exit_code not in (None, 0) and not self.crash_record:
            self.crash_record = True
            records.append({"v": ev.SCHEMA_VERSION, "t": round(time.time(), 3), "type": ev.CRASH,
                            "step": None, "error": f"the run exited with code {self.exit_code}", "traceback": ""})
        return records

    def status(self) -> dict[str, Any]:
        from runners.runstate import pid_alive

        alive = [p for p in self.pids if pid_alive(p)]
        try:
            recent = time.time() - self.file.stat().st_mtime < RUNNING_WITHIN_S
        except OSError:
            recent = False
        if self.exit_code is not None or self.finished_record:
            state = "crashed" if self.exit_code not in (None, 0) else "finished"
        elif alive or recent:
            state = "running"
        elif self.pids:
            state = "crashed"
        else:
            state = "unknown"
        return {"state": state, "pids": alive, "run_dir": str(self.run_dir), "wandb_file": str(self.file),
                "exit_code": self.exit_code, **self.run_info}
