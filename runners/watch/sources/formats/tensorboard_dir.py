"""A TensorBoard log dir: its event files, read as scalars grouped by step into records.

Tag names follow the writer: the HF Trainer writes ``train/loss``, ``eval/accuracy``,
``train/train_runtime``; plain scripts write things like ``Loss/train`` or ``accuracy/val``. A tag
with a path component ``eval``/``val``/``valid``/``validation`` is an evaluation metric (named
``eval_<rest>``), ``test`` gives ``test_<rest>``, anything else is a train metric. Scalars of one
step are held back until a later step appears or the file has been quiet for a moment, so a
record is not split while the writer is mid-flush. Shared by the TensorBoard, Trainer and wandb sources.
"""
from __future__ import annotations

import functools
import os
import time
from pathlib import Path
from typing import Any

from runners.watch.sources.formats.tfevents import Scalar, TFRecordTail, scalars
from runners.watch.sources.records import RecordMerger, split_records

EVAL_WORDS = {"eval": "eval", "val": "eval", "valid": "eval", "validation": "eval", "test": "test"}


QUIET_S = 2.0      # a file untouched this long has finished writing its last step


RESCAN_S = 5.0     # look for new event files at most this often


@functools.lru_cache(maxsize=4096)  # a log dir has few tags, each seen at every step
def metric_name(tag: str) -> tuple[str, str]:
    """('train'|'eval'|'test', name) for a tag: 'eval/loss' -> ('eval', 'eval_loss')."""
    parts = [p for p in tag.replace("\\", "/").split("/") if p]
    prefix = parts[-1].split("_", 1)[0].lower() if parts and "_" in parts[-1] else ""
    if prefix in EVAL_WORDS and len(parts) == 1:  # val_loss, eval_accuracy, test_f1
        split = EVAL_WORDS[prefix]
        return split, f"{split}_{parts[0].split('_', 1)[1]}"
    found = next((EVAL_WORDS[p.lower()] for p in parts if p.lower() in EVAL_WORDS), None)
    if found:
        rest = "_".join(p for p in parts if p.lower() not in EVAL_WORDS) or "value"
        return found, rest if rest.startswith(f"{found}_") else f"{found}_{rest}"
    rest = "_".join(p for p in parts if p.lower() != "train") or "value"
    return "train", rest


def group_to_records(step: int, group: dict[str, Scalar]) -> list[dict[str, Any]]:
    train: dict[str, float] = {}
    evals: dict[str, float] = {}
    t = max([s.wall_time for s in group.values()])
    for tag, scalar in group.items():
        split, name = metric_name(tag)
        (train if split == "train" else evals)[name] = scalar.value
    return split_records(t, step, train, evals)


class _FileStream:
    """One event file: scalars grouped by step, the newest step held until it is complete."""

    def __init__(self, path: Path) -> None:
        self.tail = TFRecordTail(path)
        self.pending_step: int | None = None
        self.pending: dict[str, Scalar] = {}
        self.parse_warnings: list[str] = []

    def poll(self, flush: bool) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        pending, pending_step = self.pending, self.pending_step  # locals in the loop: once per scalar
        warnings, path = self.parse_warnings, self.tail.path
        try:
            for payload in self.tail.poll():
                for s in scalars(payload, warnings, path):
                    if pending and s.step != pending_step:
                        out += group_to_records(pending_step or 0, pending)
                        pending = {}
                    pending_step = s.step
                    pending[s.tag] = s
        finally:
            self.pending, self.pending_step = pending, pending_step
        try:
            quiet = time.time() - self.tail.path.stat().st_mtime > QUIET_S
        except OSError:
            quiet = True
        if self.pending and (flush or quiet) and not self.tail.more:  # a step may go on in the unread part
            out += group_to_records(self.pending_step or 0, self.pending)
            self.pending = {}
        return out


def find_event_files(root: Path, max_depth: int = 4) -> list[Path]:
    """Event files under ``root`` (not inside checkpoint-* dirs), bounded in depth."""
    found: list[Path] = []
    if root.is_file():
        return [root]

    def walk(path: Path, depth: int) -> None:
        try:
            entries = list(os.scandir(path))
        except OSError:
            return
        for entry in entries:
            if entry.name.startswith("events.out.tfevents.") and entry.is_file():
                found.append(Path(entry.path))
            elif depth > 0 and entry.is_dir(follow_symlinks=False) and not entry.name.startswith(("checkpoint-", ".")):
                walk(Path(entry.path), depth - 1)

    walk(root, max_depth)
    return sorted(found, key=lambda p: (p.stat().st_mtime if p.exists() else 0, str(p)))


class TensorBoardStream:
    """All event files under a directory, read incrementally; values merged without duplicates."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.files: dict[Path, _FileStream] = {}
        self.merger = RecordMerger()
        self._scanned_at = 0.0
        self.last_write = 0.0

    @property
    def warnings(self) -> list[str]:
        return [w for f in self.files.values() for w in f.tail.warnings + f.parse_warnings]

    def poll(self, flush: bool = False) -> list[dict[str, Any]]:
        now = time.time()
        if now - self._scanned_at > RESCAN_S or not self.files:
            self._scanned_at = now
            for path in find_event_files(self.root):
                self.files.setdefault(path, _FileStream(path))
        records: list[dict[str, Any]] = []
        for path, stream in self.files.items():
            records += stream.poll(flush)
            try:
                self.last_write = max(self.last_write, path.stat().st_mtime)
            except OSError:
                pass
        return self.merger.admit_all(records)
