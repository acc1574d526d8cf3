"""Run dirs: unique sortable ids, atomic status, lookup by id."""
from __future__ import annotations

import json
import multiprocessing as mp
import threading
import time
from pathlib import Path

from runners import rundir


def test_run_dirs_are_unique_and_sortable(tmp_path: Path) -> None:
    made = [rundir.create_run_dir(tmp_path, "my run/1") for _ in range(20)]
    assert len({p.name for p in made}) == 20
    assert all(" " not in p.name and "/" not in p.name for p in made)
    # not runs until status.json exists
    assert rundir.list_runs(tmp_path) == []
    for p in made:
        rundir.update_status(p, state="running")
    assert len(rundir.list_runs(tmp_path)) == 20


def test_find_run_by_id_prefix_and_latest(tmp_path: Path) -> None:
    # made within the same second as a rule: ids then tie on time, and "zulu" sorts after "alpha" by name,
    # so latest must come from the creation time ftui records (create_run writes created_at)
    older = rundir.create_run_dir(tmp_path, "zulu")
    rundir.update_status(older, state="finished", created_at=time.time())
    newer = rundir.create_run_dir(tmp_path, "alpha")
    rundir.update_status(newer, state="finished", created_at=time.time() + 1e-3)
    assert rundir.find_run(tmp_path, "zulu") == older
    assert rundir.find_run(tmp_path, newer.name) == newer
    assert rundir.find_run(tmp_path, str(older)) == older.resolve()
    assert rundir.find_run(tmp_path, "latest") == newer
    assert rundir.list_runs(tmp_path) == [newer, older]  # newest first
    assert rundir.find_run(tmp_path, "gamma") is None


def test_status_is_merged(tmp_path: Path) -> None:
    rundir.update_status(tmp_path, state="pending", pid=1)
    rundir.update_status(tmp_path, state="running")
    status = rundir.read_status(tmp_path)
    assert status["state"] == "running" and status["pid"] == 1 and "host" in status
    assert [p.name for p in tmp_path.iterdir()] == [rundir.STATUS_FILE]  # no temp file left


def _payload(writer: int, k: int) -> dict:
    """Sizes differ from one write to the next, so a torn or mixed file cannot pass for a whole one."""
    return {"writer": writer, "k": k, "pad": "x" * (50 + 400 * ((writer + k) % 7))}


def _whole(data: dict) -> bool:
    return data == _payload(data.get("writer"), data.get("k"))


def _hammer(path: str, writer: int, n: int) -> None:
    for k in range(n):
        rundir.write_json_atomic(Path(path), _payload(writer, k))


def _read_while(path: Path, busy) -> tuple[int, list[str]]:  # noqa: ANN001
    """Read ``path`` as fast as possible while ``busy()``: (reads, what was wrong with the bad ones)."""
    reads, bad = 0, []
    while busy():
        reads += 1
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            bad.append(f"{type(exc).__name__}: {exc}")
            continue
        if not _whole(data):
            bad.append(f"a mixed file: writer {data.get('writer')} write {data.get('k')}")
    return reads, bad


def test_status_write_is_atomic_under_concurrent_writers(tmp_path: Path) -> None:
    """The supervisor, `ftui kill` and every reader that reconciles write status.json from processes of their
    own: while three processes rewrite it, a reader never sees a missing, torn or mixed file."""
    path = tmp_path / rundir.STATUS_FILE
    rundir.write_json_atomic(path, _payload(0, -1))
    writers = [mp.get_context("spawn").Process(target=_hammer, args=(str(path), w, 400)) for w in range(3)]
    for w in writers:
        w.start()
    reads, bad = _read_while(path, lambda: any(w.is_alive() for w in writers))
    for w in writers:
        w.join(60)
    assert [w.exitcode for w in writers] == [0, 0, 0]
    assert reads > 100, "the reader barely ran while the writers did"
    assert not bad, f"{len(bad)} of {reads} reads saw a partial file, e.g. {bad[:3]}"
    assert _whole(json.loads(path.read_text())) and rundir.read_status(tmp_path) is not None
    assert [p.name for p in tmp_path.iterdir()] == [rundir.STATUS_FILE]  # no temp file left


def test_status_write_is_atomic_under_concurrent_threads(tmp_path: Path) -> None:
    """The dashboard reconciles and writes status from worker threads: the same guarantee between threads."""
    path = tmp_path / rundir.STATUS_FILE
    rundir.write_json_atomic(path, _payload(0, -1))
    errors: list[str] = []

    def hammer(writer: int) -> None:
        try:
            _hammer(str(path), writer, 400)
        except OSError as exc:
            errors.append(f"writer {writer}: {type(exc).__name__}: {exc}")

    writers = [threading.Thread(target=hammer, args=(w,)) for w in range(3)]
    for w in writers:
        w.start()
    reads, bad = _read_while(path, lambda: any(w.is_alive() for w in writers))
    for w in writers:
        w.join(60)
    assert not errors, errors[:3]
    assert not bad, f"{len(bad)} of {reads} reads saw a partial file, e.g. {bad[:3]}"
    assert [p.name for p in tmp_path.iterdir()] == [rundir.STATUS_FILE]


def test_control_request_files(tmp_path: Path) -> None:
    path = rundir.request(tmp_path, rundir.STOP_REQUEST)
    assert path == tmp_path / "control" / "stop" and path.is_file()
