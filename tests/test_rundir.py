"""Run dirs: unique sortable ids, atomic status, lookup by id."""
from __future__ import annotations

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
    a = rundir.create_run_dir(tmp_path, "alpha")
    b = rundir.create_run_dir(tmp_path, "beta")
    for p in (a, b):
        rundir.update_status(p, state="finished")
    assert rundir.find_run(tmp_path, "alpha") == a
    assert rundir.find_run(tmp_path, b.name) == b
    assert rundir.find_run(tmp_path, str(a)) == a.resolve()
    assert rundir.find_run(tmp_path, "latest") in (a, b)
    assert rundir.find_run(tmp_path, "gamma") is None


def test_status_is_merged_and_atomic(tmp_path: Path) -> None:
    rundir.update_status(tmp_path, state="pending", pid=1)
    rundir.update_status(tmp_path, state="running")
    status = rundir.read_status(tmp_path)
    assert status["state"] == "running" and status["pid"] == 1 and "host" in status
    assert not list(tmp_path.glob(".*.tmp"))


def test_control_request_files(tmp_path: Path) -> None:
    path = rundir.request(tmp_path, rundir.STOP_REQUEST)
    assert path == tmp_path / "control" / "stop" and path.is_file()
