"""Test helper: run a plain training script as a subprocess and attach ftui to it while it runs.

Not a training script itself; the test modules share it (``from scripts.watch import ...``).
"""
from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runners.errors import UserError
from runners.watch.sources import open_source

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = Path(__file__).resolve().parent
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "WANDB_MODE": "offline",
       "TOKENIZERS_PARALLELISM": "false", "WANDB_SILENT": "true", "PYTHONUNBUFFERED": "1"}


@dataclass
class Watched:
    """What an attached source delivered while the job ran, and after it ended."""

    source: Any
    live: list[dict[str, Any]] = field(default_factory=list)   # records polled while the process was alive
    records: list[dict[str, Any]] = field(default_factory=list)  # all of them
    live_states: list[str] = field(default_factory=list)
    log: str = ""


def watch(args: list[str], target: str | Callable[[], str], cwd: Path, timeout: float = 300,
          interval: float = 0.5) -> Watched:
    """Start ``python SCRIPT ARGS`` and poll the source at ``target`` until the process ends."""
    log_path = cwd / "train.log"
    cwd.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, *args], cwd=cwd, env=ENV, stdout=log, stderr=subprocess.STDOUT)
    watched = Watched(source=None)
    deadline = time.time() + timeout
    try:
        while proc.poll() is None and time.time() < deadline:
            time.sleep(interval)  # the attach poll interval, like a viewer's: a sample, not a wait
            if watched.source is None:
                try:
                    watched.source = open_source(target() if callable(target) else target)
                except UserError:
                    continue  # the output dir does not exist (or is empty) yet
            records = watched.source.poll()
            if proc.poll() is None:
                watched.live += records
                watched.live_states.append(watched.source.status()["state"])
            watched.records += records
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    watched.log = log_path.read_text(errors="replace")
    assert proc.returncode == 0, watched.log[-3000:]
    if watched.source is None:
        watched.source = open_source(target() if callable(target) else target)
    for i in range(20):  # drain (TensorBoard's last step is held until its file is quiet)
        more = watched.source.poll()
        watched.records += more
        if not more and (i >= 5 or watched.source.status()["state"] == "finished"):
            break
        time.sleep(0.5)  # deliberate: let the files go quiet, which is what releases the held last step
    return watched


def merged(records: list[dict[str, Any]], kind: str) -> dict[int, dict[str, Any]]:
    """step -> every value of records of one type at that step (log: top-level keys; eval/finish: metrics)."""
    out: dict[int, dict[str, Any]] = {}
    for r in records:
        if r.get("type") != kind:
            continue
        values = r.get("metrics") if kind in ("eval", "finish") else {
            k: v for k, v in r.items() if k not in ("v", "t", "type", "step", "epoch")}
        out.setdefault(int(r["step"]), {}).update(values or {})
    return out


def close(a: Any, b: Any, rel: float = 1e-6) -> bool:
    """Equal up to float32 rounding (TensorBoard stores some values as float32)."""
    return isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isclose(a, b, rel_tol=rel, abs_tol=1e-9)


def missing_from(expected: dict[int, dict[str, float]], got: dict[int, dict[str, Any]], rel: float = 1e-6) -> list[str]:
    """Every expected (step, key, value) that did not come through, as readable strings."""
    bad = []
    for step, values in expected.items():
        for key, value in values.items():
            if not close(got.get(step, {}).get(key), value, rel):
                bad.append(f"step {step} {key}: expected {value}, got {got.get(step, {}).get(key)}")
    return bad


def expected_from_log_history(log_history: list[dict[str, Any]]) -> dict[str, dict[int, dict[str, float]]]:
    """trainer_state.json's log_history split the way the Trainer logs it: log / eval / finish."""
    out: dict[str, dict[int, dict[str, float]]] = {"log": {}, "eval": {}, "finish": {}}
    for entry in log_history:
        values = {k: v for k, v in entry.items() if k not in ("step", "epoch") and isinstance(v, (int, float))}
        final = "train_runtime" in values and "train_loss" in values  # steps log train_runtime too (tokens seen on)
        kind = "finish" if final else "eval" if any(k.startswith("eval_") for k in values) else "log"
        out[kind].setdefault(entry["step"], {}).update(values)
    return out
