"""Run directories: where they live, their unique sortable ids, and ``status.json``.

Layout of one run dir (docs/rundir.md): ``spec.yaml`` (resolved, secrets redacted), ``launch.sh``,
launcher configs (``ds_config.json``, ``accelerate.yaml``), ``stdout.log``, ``status.json``,
``events.jsonl``, ``control/`` (stop/checkpoint request files) and ``output/`` (the Trainer's
output_dir). A directory becomes a run only when ``status.json`` exists; it is written last
during creation, so a half-created directory is never presented as a run.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import socket
import time
from pathlib import Path
from typing import Any

RUNS_DIR_ENV = "FTUI_RUNS_DIR"
STATUS_FILE = "status.json"
SPEC_FILE = "spec.yaml"
LOG_FILE = "stdout.log"
OUTPUT_DIR = "output"
# the base a LoRA run from a random init saved before training: the only way to merge its adapter later
BASE_DIR = "base"
CONTROL_DIR = "control"
STOP_REQUEST = "stop"
CHECKPOINT_REQUEST = "checkpoint"
# a multi-node run: node 0's supervisor owns status.json, node K's writes nodes/K/status.json (docs/rundir.md)
NODES_DIR = "nodes"

STATES = ("pending", "running", "finished", "stopped", "crashed", "killed")
TERMINAL_STATES = ("finished", "stopped", "crashed", "killed")


def default_runs_dir(flag: str | None = None) -> Path:
    """``--runs-dir`` if given, else $FTUI_RUNS_DIR, else ./runs."""
    return Path(flag or os.environ.get(RUNS_DIR_ENV) or "runs").resolve()


def new_run_id(name: str) -> str:
    """Sortable by creation time, unique across processes: 20261122-121530-<name>-<4 hex>."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-")[:40] or "run"
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{slug}-{secrets.token_hex(2)}"


def create_run_dir(runs_dir: Path, name: str) -> Path:
    """A fresh directory that did not exist before (never reuses or overwrites one)."""
    runs_dir.mkdir(parents=True, exist_ok=True)
    while True:
        path = runs_dir / new_run_id(name)
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write via a temp file and rename, so readers never see half a file.

    The temp file never outlives a failed write. When the disk is full (or the temp file cannot be
    made), the file is rewritten in place instead: overwriting the blocks it already holds needs no
    new space for a small file like status.json, so a final state still lands on a full disk.
    A reader may then see half a file for an instant (read_status treats it as missing). Raises
    OSError only when neither way worked.
    """
    text = json.dumps(data, indent=1, default=str)
    # unique per write, not per process: the dashboard writes status from several worker threads
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "w") as fh:
            fh.write(text)
            fh.flush()
        os.replace(tmp, path)
        return
    except OSError as exc:
        first = exc
        try:
            tmp.unlink()
        except OSError:
            pass
    if not path.exists():
        raise first
    try:
        _write_in_place(path, text.encode())
    except OSError:
        raise first from None


def _write_in_place(path: Path, payload: bytes) -> None:
    """Overwrite a file's bytes from offset 0, then cut it to length (no temp file, no new inode).

    Only tried when the payload fits in the space the file already holds, so a failure cannot leave
    the old content half overwritten."""
    fd = os.open(path, os.O_WRONLY)
    try:
        st = os.fstat(fd)
        if len(payload) > max(st.st_size, st.st_blocks * 512):
            raise OSError(28, "No space left on device (and the new content is larger than the old)")
        view = memoryview(payload)
        while view:
            view = view[os.write(fd, view):]
        os.ftruncate(fd, len(payload))
    finally:
        os.close(fd)


def read_status(run_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((run_dir / STATUS_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError, NotADirectoryError):
        return None
    return data if isinstance(data, dict) else None


def update_status(run_dir: Path, **changes: Any) -> dict[str, Any]:
    status = read_status(run_dir) or {"host": socket.gethostname()}
    status.update(changes)
    write_json_atomic(run_dir / STATUS_FILE, status)
    return status


def node_dir(run_dir: Path, node: int) -> Path:
    """Where node ``node`` of a run keeps its supervisor's status.json: the run dir itself for node 0."""
    return run_dir if node == 0 else run_dir / NODES_DIR / str(node)


def is_run_dir(path: Path) -> bool:
    return (path / STATUS_FILE).is_file()


def list_runs(runs_dir: Path) -> list[Path]:
    """Every run dir under ``runs_dir``, newest first."""
    if not runs_dir.is_dir():
        return []
    runs = [p for p in runs_dir.iterdir() if p.is_dir() and is_run_dir(p)]
    return sorted(runs, key=_creation_key, reverse=True)


def _creation_key(run_dir: Path) -> tuple[str, float, str]:
    """Ids sort by the second they were made in; within one second, status.json's created_at decides."""
    created = (read_status(run_dir) or {}).get("created_at")
    return run_dir.name[:15], float(created) if isinstance(created, (int, float)) else 0.0, run_dir.name


def find_run(runs_dir: Path, ref: str) -> Path | None:
    """A run by path, full id, or unique id prefix/suffix (``latest`` is the newest run)."""
    direct = Path(ref)
    if direct.is_dir() and is_run_dir(direct):
        return direct.resolve()
    runs = list_runs(runs_dir)
    if ref == "latest":
        return runs[0] if runs else None
    hits = [p for p in runs if p.name == ref] or [p for p in runs if ref in p.name]
    return hits[0] if len(hits) == 1 else None


ARCHIVE_DIR = ".archive"  # archived runs: out of the list (dot dirs are never runs), kept whole


def archive_run(run_dir: Path) -> Path:
    """Move a run dir into ``<runs dir>/.archive/`` (never over another); returns where it went.

    The caller refuses live runs: a moved run dir would strand its supervisor's writes."""
    archive = run_dir.parent / ARCHIVE_DIR
    archive.mkdir(exist_ok=True)
    target = archive / run_dir.name
    n = 1
    while target.exists():
        n += 1
        target = archive / f"{run_dir.name}.{n}"
    os.replace(run_dir, target)
    return target


def delete_run(run_dir: Path) -> None:
    """Remove a run dir and everything in it (checkpoints too). The caller refuses live runs and asks first."""
    import shutil

    if not is_run_dir(run_dir):
        raise FileNotFoundError(f"{run_dir} is not a run dir (no {STATUS_FILE})")
    shutil.rmtree(run_dir)


def request(run_dir: Path, what: str) -> Path:
    """Drop a control request file (stop or checkpoint) that the training callback picks up."""
    control = run_dir / CONTROL_DIR
    control.mkdir(exist_ok=True)
    path = control / what
    path.write_text(str(time.time()))
    return path


NO_WEIGHTS = "no weights"
WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pth", "*.pt", "global_step*")


def checkpoint_problem(path: Path) -> str | None:
    """Why a ``checkpoint-N`` dir is not a complete Trainer checkpoint, or None when it is.

    The Trainer writes the weights, then optimizer, scheduler and RNG state, and trainer_state.json
    last: a checkpoint is complete once trainer_state.json is there, whole (valid JSON), with weights.
    """
    state = path / "trainer_state.json"
    if not state.is_file():
        return "no trainer_state.json (the save did not finish)"
    try:
        json.loads(state.read_text())
    except (OSError, ValueError):
        return "trainer_state.json is cut short (the save did not finish)"
    if not any(next(path.glob(pattern), None) is not None for pattern in WEIGHT_PATTERNS):
        return NO_WEIGHTS
    if next(path.glob("*.tmp"), None) is not None:
        return "a partially written file is left in it"
    return None


def numbered_checkpoints(run_dir: Path) -> list[Path]:
    """Every ``checkpoint-N`` folder in the run's output, oldest first (complete or not)."""
    output = run_dir / OUTPUT_DIR
    found = [p for p in output.glob("checkpoint-*") if p.is_dir() and re.fullmatch(r"checkpoint-\d+", p.name)]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))
