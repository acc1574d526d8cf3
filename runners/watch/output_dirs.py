"""Where a training process writes: its ``--output_dir``, its ftui run dir, or a bounded scan of its cwd.

``ftui ps`` shows the dir and ``ftui attach PID`` opens it; the scan also tells whether a Python
process is training at all (:func:`fresh_output`): a Trainer output, checkpoint or TensorBoard file
written since the process started is evidence, an old one beside it is not.
"""
from __future__ import annotations

import os
from pathlib import Path

SUPERVISOR_MODULES = ("runners.launch.supervise", "runners.supervise")
OUTPUT_FLAGS = ("--output_dir", "--output-dir", "--outdir", "--output")
TRAINER_OUTPUT_FLAGS = ("--output_dir", "--output-dir")  # TrainingArguments' own flag (HfArgumentParser scripts)
RUN_DIR_FLAGS = ("--run-dir", "--run_dir")
OUTPUT_MARKERS = ("trainer_state.json", "training_progress_scores.csv", "status.json", "events.jsonl")
RUN_DIR_MARKER = "status.json"  # an ftui run dir: its own supervisor is the process that writes it


def flag_value(cmdline: list[str], flags: tuple[str, ...]) -> str | None:
    for i, arg in enumerate(cmdline):
        for flag in flags:
            if arg == flag and i + 1 < len(cmdline):
                return cmdline[i + 1]
            if arg.startswith(flag + "="):
                return arg.split("=", 1)[1]
    return None


def newest_output_below(cwd: Path, depth: int = 2, budget: list[int] | None = None) -> tuple[float, Path] | None:
    """(mtime, dir) of the most recently written dir under cwd that looks like a training output (bounded scan)."""
    budget = budget if budget is not None else [2000]
    best: tuple[float, Path] | None = None
    try:
        entries = list(os.scandir(cwd))
    except OSError:
        return None
    for entry in entries:
        budget[0] -= 1
        if budget[0] < 0:
            break
        try:
            found = _output_candidate(entry, depth, budget)
        except OSError:  # unreadable entries (permissions, vanished files) are not outputs
            continue
        if found is not None and (best is None or found[0] > best[0]):
            best = found
    return best


def _output_candidate(entry: os.DirEntry, depth: int, budget: list[int]) -> tuple[float, Path] | None:
    """(mtime, dir) when this entry marks its dir (or a dir below it) as a training output."""
    here = Path(entry.path).parent
    if entry.is_file():
        if entry.name in OUTPUT_MARKERS or entry.name.startswith("events.out.tfevents."):
            return entry.stat().st_mtime, here
        return None
    if not entry.is_dir(follow_symlinks=False) or entry.name.startswith("."):
        return None
    if entry.name.startswith("checkpoint-") or entry.name == "wandb":
        return entry.stat().st_mtime, here
    if depth > 0 and entry.name not in ("node_modules", "__pycache__", "site-packages", "proc", "sys", "dev"):
        return newest_output_below(Path(entry.path), depth - 1, budget)
    return None


def fresh_output(cwd: str | None, since: float) -> Path | None:
    """A training output under ``cwd`` written at or after ``since`` (the process's start), not an ftui run
    dir (those belong to their supervisor): a process that merely started beside old outputs, or beside a
    live ftui run (pytest in the checkout), is not training."""
    found = newest_output_below(Path(cwd)) if cwd else None
    if found is None or found[0] < since or (found[1] / RUN_DIR_MARKER).is_file():
        return None
    return found[1]


def locate_output_dir(cmdline: list[str], cwd: str | None) -> tuple[str | None, str | None, str | None]:
    """(output_dir, how it was found, ftui run dir) for a training command line."""
    base = Path(cwd) if cwd else Path("/")
    for i, arg in enumerate(cmdline):
        if arg in SUPERVISOR_MODULES and i + 1 < len(cmdline):
            run_dir = (base / cmdline[i + 1]).resolve()
            return str(run_dir / "output"), "ftui run dir", str(run_dir)
    run_dir_arg = flag_value(cmdline, RUN_DIR_FLAGS)
    if run_dir_arg:
        run_dir = (base / run_dir_arg).resolve()
        return str(run_dir / "output"), "--run-dir", str(run_dir)
    out = flag_value(cmdline, OUTPUT_FLAGS)
    if out:
        return str((base / out).resolve()), "--output_dir", None
    if cwd:
        found = newest_output_below(base)
        if found is not None:
            return str(found[1]), "cwd scan", None
    return None, None, None
