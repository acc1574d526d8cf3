"""Honest state after faults: a full disk while saving, a SIGKILLed supervisor, resuming a finished run,
checkpoints rotated away by save_total_limit. Real runs of the tiny demo model, on CPU."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from runners import events as ev
from runners import rundir, runstate
from runners.launch import control
from runners.watch.history import RunHistory
from runners.watch.sources.ftui_run import FtuiRunSource
from tests.conftest import ftui, only_run, records, tiny_spec, wait_until

RANDOM_INIT = {"init": "random"}  # the demo model is config-only (see runners/spec.py model.init)




def _spec(tmp_path: Path, name: str = "spec.yaml", **overrides) -> Path:
    model = {**RANDOM_INIT, **overrides.pop("model", {})}
    path = tmp_path / name
    path.write_text(yaml.safe_dump(tiny_spec(model=model, **overrides)))
    return path


def _status(run: Path) -> dict:
    return rundir.read_status(run) or {}


def _step(run: Path) -> int:
    return max([r.get("step", 0) for r in records(run) if r["type"] == "log"] or [0])


def _gone_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _runs_json(runs: Path) -> dict[str, dict]:
    out = ftui("runs", "--json", "--runs-dir", str(runs))
    assert out.returncode == 0, out.stderr
    return {r["run"]: r for r in json.loads(out.stdout)}


def _attach_json(run: Path) -> dict:
    out = ftui("attach", str(run), "--once", "--json", stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _reap(root: Path) -> None:
    """End the job groups of the runs this test started under ``root`` (only those), so that a failed
    test leaves no training behind."""
    for status_file in root.glob("**/" + rundir.STATUS_FILE):
        status = rundir.read_status(status_file.parent) or {}
        for pgid, started in ((status.get("pgid"), status.get("job_started_at")),
                              (status.get("pid"), status.get("pid_started_at"))):
            # only groups with a recorded start time that matches: never a stranger that reused the pid
            if isinstance(pgid, int) and isinstance(started, float) and runstate.group_alive(pgid, started):
                try:
                    os.killpg(pgid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass


@pytest.fixture(autouse=True)
def _no_run_left(tmp_path: Path):
    yield
    _reap(tmp_path)


# -- status.json on a full disk ------------------------------------------------------------------


@pytest.fixture
def small_tmpfs(tmp_path: Path):
    """A tmpfs of the size asked for, mounted under tmp_path (needs root, as in CI); unmounted after."""
    mounted: list[Path] = []

    def mount(size_kib: int, name: str = "disk") -> Path:
        where = tmp_path / name
        where.mkdir()
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(where)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.fail(f"cannot mount a tmpfs here ({proc.stderr.strip()}): the disk-full tests need root "
                        "(CI runs as root), as tests/test_preflight.py's full and read-only runs dirs do")
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        _reap(where)
        if subprocess.run(["umount", str(where)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], capture_output=True)


def _fill(disk: Path) -> None:
    """Use up every free byte of a filesystem."""
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for size in (65536, 4096, 512, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)


def test_status_write_on_a_full_disk_leaves_no_temp_file(small_tmpfs) -> None:
    disk = small_tmpfs(64)
    run = disk / "run"
    run.mkdir()
    rundir.update_status(run, state="running", pid=1)
    _fill(disk)
    with pytest.raises(OSError):
        (disk / "probe").write_text("x" * 8192)  # the disk is full indeed
    rundir.update_status(run, state="crashed", error="No space left on device while saving checkpoint-60")
    assert _status(run)["state"] == "crashed" and "checkpoint-60" in _status(run)["error"]
    assert [p.name for p in run.iterdir()] == [rundir.STATUS_FILE], "a temp file was left behind"
    with pytest.raises(OSError):  # cannot land at all (bigger than the blocks it holds): raises, leaves nothing
        rundir.update_status(run, note="x" * 20_000)
    assert [p.name for p in run.iterdir()] == [rundir.STATUS_FILE]
    assert _status(run)["state"] == "crashed"


def test_disk_full_while_saving_a_checkpoint(tmp_path: Path, small_tmpfs) -> None:
    """The Trainer fills the disk saving its second checkpoint: crashed with the reason, no temp
    file, and resume takes the newest complete checkpoint, skipping the cut one with a word."""
    runs = small_tmpfs(1700, "runs")  # one checkpoint of the demo model is ~1.1 MB: the second does not fit
    spec = _spec(tmp_path, cadence={"auto": False},
                 training={"max_steps": 16, "save_strategy": "steps", "save_steps": 4, "eval_strategy": "no",
                           "logging_steps": 4})
    assert ftui("run", str(spec), "--detach", "--runs-dir", str(runs)).returncode == 0
    run = only_run(runs)
    status = wait_until(lambda: _status(run) if not runstate.pid_alive(_status(run).get("pid")) else None,
                       timeout=300, what="the supervisor to end")
    log = (run / rundir.LOG_FILE).read_text(errors="replace")[-3000:]
    assert status["state"] == "crashed", (status, log)
    assert "No space left on device while saving checkpoint-8" in status["error"], status["error"]
    assert status["exit_code"] not in (None, 0)
    assert not [p for p in run.rglob("*.tmp")], "a temp file was left behind"
    assert sorted(p.name for p in (run / "output").glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-8"]
    notes: list[str] = []
    assert control.last_checkpoint(run, notes) == run / "output" / "checkpoint-4"
    assert notes and "checkpoint-8" in notes[0] and "incomplete" in notes[0]
    # every reader says the same
    assert _runs_json(runs)[run.name]["state"] == "crashed"
    assert FtuiRunSource(run).status()["state"] == "crashed"

    # resume (into a runs dir with room) continues from checkpoint-4, saying why not checkpoint-8
    other = tmp_path / "other"
    resumed = ftui("resume", str(run), "--detach", "--runs-dir", str(other))
    assert resumed.returncode == 0, resumed.stderr
    assert "skipping checkpoint-8" in resumed.stderr
    new = Path(resumed.stdout.strip().splitlines()[-1])
    assert yaml.safe_load((new / rundir.SPEC_FILE).read_text())["training"]["resume_from_checkpoint"] == \
        str(run / "output" / "checkpoint-4")
    start = wait_until(lambda: next((r for r in records(new) if r["type"] == "start"), None), what="resumed start")
    assert start["resumed_step"] == 4
    control.kill(new, grace=5)
    wait_until(lambda: runstate.state(new) in rundir.TERMINAL_STATES, what="resumed run to end")


def test_supervisor_survives_an_unwritable_status(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not even an in-place rewrite lands: the supervisor still waits for its job and exits cleanly,
    leaving no temp file, and readers take the end from the job's events."""
    from runners.launch import supervise

    run = rundir.create_run_dir(tmp_path / "runs", "nospace")
    rundir.update_status(run, state="pending")
    line = json.dumps(ev.make_record(ev.FINISH, step=3, metrics={}, stopped=False))
    (run / "launch.sh").write_text(f"echo '{line}' >> {run / ev.EVENTS_FILE}\n")

    real_write, calls = rundir.write_json_atomic, []

    def full_after_start(*args, **kwargs):  # the disk fills up while the job runs
        calls.append(1)
        if len(calls) > 1:
            raise OSError(28, "No space left on device")
        real_write(*args, **kwargs)

    monkeypatch.setattr(rundir, "write_json_atomic", full_after_start)
    assert supervise.main(str(run)) == 0
    monkeypatch.undo()
    assert len(calls) == 2 and _status(run)["state"] == "running" and not list(run.glob(".*.tmp"))
    rundir.update_status(run, pid=_gone_pid())  # main() ran in this test process: stand for its exit
    assert runstate.effective_status(run)["state"] == "finished" and _status(run)["state"] == "finished"


def test_supervisor_gone_status_unwritable_readers_reconcile(tmp_path: Path) -> None:
    """When even the final state could not be written, the job's final events decide, for every reader."""
    cases = {
        "finished": [ev.make_record(ev.FINISH, step=16, metrics={"train_loss": 0.5}, stopped=False)],
        "stopped": [ev.make_record(ev.STOP, step=7, reason="user request"),
                    ev.make_record(ev.FINISH, step=7, metrics={}, stopped=True)],
        "crashed": [ev.make_record(ev.CRASH, step=3, error="OSError: [Errno 28] No space left on device")],
        "none": [],
    }
    runs = tmp_path / "runs"
    made = {}
    for name, final in cases.items():
        run = rundir.create_run_dir(runs, name)
        with ev.EventWriter(run / ev.EVENTS_FILE) as w:
            w.emit(ev.START, total_steps=16, world_size=1, pgid=_gone_pid())
            w.emit(ev.LOG, step=3, epoch=0.2, loss=0.7)
            for r in final:
                w.emit(r["type"], **{k: v for k, v in r.items() if k not in ("v", "t", "type")})
        rundir.update_status(run, state="running", pid=_gone_pid(), job_pid=_gone_pid(), pgid=_gone_pid(),
                             started_at=time.time() - 5)
        made[name] = run
    listed = _runs_json(runs)
    expected = {"finished": "finished", "stopped": "stopped", "crashed": "crashed", "none": "crashed"}
    for name, run in made.items():
        assert listed[run.name]["state"] == expected[name], (name, listed[run.name])
        assert _status(run)["state"] == expected[name] and _status(run)["reconciled"] is True  # written back
    assert "No space left" in _status(made["crashed"])["error"]
    assert "without a final state" in _status(made["none"])["error"]
    # a reader that finds status.json still saying running reconciles on its own
    rundir.update_status(made["stopped"], state="running", reconciled=False)
    assert FtuiRunSource(made["stopped"]).status()["state"] == "stopped"
    rundir.update_status(made["crashed"], state="running")
    assert _attach_json(made["crashed"])["state"] == "crashed"


def test_kill_and_stop_without_a_supervisor_record_the_state(tmp_path: Path) -> None:
    """An orphaned job (its supervisor is gone) is running, orphaned; ftui kill ends it and records killed."""
    run = rundir.create_run_dir(tmp_path / "runs", "orphan")
    job = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        rundir.update_status(run, state="running", pid=_gone_pid(), job_pid=job.pid, pgid=job.pid,
                             job_started_at=runstate.process_start_time(job.pid), started_at=time.time())
        status = runstate.effective_status(run)
        assert status["state"] == "running" and status["orphaned"] and "still running" in status["note"]
        assert _runs_json(tmp_path / "runs")[run.name]["orphaned"] is True
        assert control.is_running(run)
        out = ftui("kill", run.name, "--yes", "--runs-dir", str(tmp_path / "runs"))
        assert out.returncode == 0 and "terminated" in out.stdout, out.stdout + out.stderr
        job.wait(10)
        assert _status(run)["state"] == "killed" and _status(run)["ended_at"]
        assert control.stop(run) == "not running"
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()
    # a reused pid is not taken for the job: a live process whose start time is not the recorded one
    stranger = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        other = rundir.create_run_dir(tmp_path / "runs", "reused")
        rundir.update_status(other, state="running", pid=_gone_pid(), pgid=stranger.pid,
                             job_started_at=runstate.process_start_time(stranger.pid) - 1000)
        assert runstate.effective_status(other, write_back=False)["state"] == "crashed"
    finally:
        stranger.kill()
        stranger.wait()


# -- the supervisor killed with SIGKILL ----------------------------------------------------------


def _orphan(tmp_path: Path, runs: Path, **overrides) -> tuple[Path, dict]:
    spec = _spec(tmp_path, **overrides)
    assert ftui("run", str(spec), "--detach", "--runs-dir", str(runs)).returncode == 0
    run = only_run(runs)
    wait_until(lambda: _step(run) >= 2, what="training steps")
    status = _status(run)
    os.kill(status["pid"], signal.SIGKILL)
    wait_until(lambda: not runstate.pid_alive(status["pid"]), what="the supervisor to die")
    return run, status


def test_supervisor_sigkilled_job_finishes_every_reader_agrees(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    run, status = _orphan(tmp_path, runs, dataset={"max_train_samples": 512})
    os.killpg(status["pgid"], signal.SIGSTOP)  # hold the job while its orphaned state is read
    try:
        listed = _runs_json(runs)[run.name]
        assert listed["state"] == "running" and listed["orphaned"] is True
        snap = _attach_json(run)
        assert snap["state"] == "running" and snap["status"]["orphaned"] is True
        assert any("still running" in w for w in snap["warnings"])
        assert FtuiRunSource(run).status()["state"] == "running"
    finally:
        os.killpg(status["pgid"], signal.SIGCONT)
    wait_until(lambda: not runstate.group_alive(status["pgid"], status.get("job_started_at")), timeout=300,
              what="the orphaned job to finish")
    assert _status(run)["state"] == "running"  # nobody recorded the end...
    stale = (run / rundir.STATUS_FILE).read_text()
    # ...so each reader reconciles it from the job's final events, on its own
    assert _runs_json(runs)[run.name]["state"] == "finished"
    (run / rundir.STATUS_FILE).write_text(stale)
    snap = _attach_json(run)
    assert snap["state"] == "finished" and snap["status"]["state"] == "finished"
    (run / rundir.STATUS_FILE).write_text(stale)
    source = FtuiRunSource(run)
    history = RunHistory()
    history.apply(source.poll())
    assert source.status()["state"] == "finished" == history.state
    assert _status(run)["state"] == "finished"  # written back
    assert any(r["type"] == "finish" for r in records(run))


def test_supervisor_sigkilled_then_stop_records_stopped(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    run, _ = _orphan(tmp_path, runs, dataset={"max_train_samples": None},
                     training={"num_train_epochs": 3, "per_device_train_batch_size": 4})
    out = ftui("stop", run.name, "--runs-dir", str(runs), "--wait", "120")
    assert out.returncode == 0 and "stopped (stopped)" in out.stdout, out.stdout + out.stderr
    assert _status(run)["state"] == "stopped"
    assert any(r["type"] == "stop" for r in records(run))
    assert _runs_json(runs)[run.name]["state"] == "stopped"


# -- checkpoint rotation and resuming a finished run ---------------------------------------------


@pytest.fixture(scope="module")
def rotated_run(tmp_path_factory) -> Path:
    """A finished run that saved at steps 4, 8, 12, 16 with save_total_limit 1."""
    tmp = tmp_path_factory.mktemp("rotated")
    spec = _spec(tmp, cadence={"auto": False},
                 training={"save_strategy": "steps", "save_steps": 4, "save_total_limit": 1, "eval_strategy": "no",
                           "logging_steps": 4})
    proc = ftui("run", str(spec), "--headless", "--runs-dir", str(tmp / "runs"))
    run = only_run(tmp / "runs")
    assert proc.returncode == 0, (run / rundir.LOG_FILE).read_text()[-3000:]
    return run


def test_rotated_checkpoints_are_marked_removed(rotated_run: Path) -> None:
    run = rotated_run
    assert [p.name for p in (run / "output").glob("checkpoint-*")] == ["checkpoint-16"]
    ckpts = [r for r in records(run) if r["type"] == "checkpoint"]
    saved = [r["step"] for r in ckpts if not r.get("removed")]
    removed = [r["step"] for r in ckpts if r.get("removed")]
    assert saved == [4, 8, 12, 16] and sorted(removed) == [4, 8, 12]
    assert ckpts[-1]["step"] == 16 and not ckpts[-1].get("removed")  # the newest save stays the last record
    assert all(r["is_best"] is False for r in ckpts if r.get("removed"))  # the same fields as a save record
    history = RunHistory()
    history.apply(ev.read_all(run / ev.EVENTS_FILE))
    assert {c["step"]: c["removed"] for c in history.checkpoints} == {4: True, 8: True, 12: True, 16: False}
    from tui.widgets.panels import CheckpointList

    widget = CheckpointList()
    widget.show(history)  # the one on disk first, then one line naming those rotated away
    lines = [str(option.prompt) for option in widget.options]
    assert "checkpoint-16" in lines[0] and lines[1] == "deleted from disk (3): step 4, 8, 12", lines


def test_resume_a_finished_run(rotated_run: Path, tmp_path: Path) -> None:
    run, runs = rotated_run, rotated_run.parent
    refused = ftui("resume", run.name, "--detach", "--runs-dir", str(runs))
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "finished at step 16" in refused.stderr and "--num_train_epochs 2" in refused.stderr
    assert "--max_steps" in refused.stderr
    assert len(rundir.list_runs(runs)) == 1  # no 0-step run was started
    assert ftui("resume", run.name, "--max_steps", "16", "--runs-dir", str(runs)).returncode == 2

    further = ftui("resume", str(run), "--max_steps", "20", "--headless", "--runs-dir", str(tmp_path / "more"))
    new = only_run(tmp_path / "more")
    assert further.returncode == 0, (new / rundir.LOG_FILE).read_text()[-3000:]
    recs = records(new)
    start = next(r for r in recs if r["type"] == "start")
    assert start["resumed_step"] == 16 and start["total_steps"] == 20
    assert next(r for r in recs if r["type"] == "finish")["step"] == 20 and _status(new)["state"] == "finished"
    assert _status(new)["resumed_from"] == run.name

    epochs = ftui("resume", str(run), "--num_train_epochs", "2", "--detach", "--runs-dir", str(tmp_path / "epochs"))
    assert epochs.returncode == 0, epochs.stderr
    new = Path(epochs.stdout.strip().splitlines()[-1])
    start = wait_until(lambda: next((r for r in records(new) if r["type"] == "start"), None), what="resumed start")
    assert start["resumed_step"] == 16 and start["total_steps"] == 32
    wait_until(lambda: _step(new) > 16, what="steps after resume")
    control.kill(new, grace=5)
    wait_until(lambda: runstate.state(new) in rundir.TERMINAL_STATES, what="resumed run to end")
    shutil.rmtree(tmp_path / "epochs", ignore_errors=True)


async def test_runs_screen_shows_the_reconciled_state(tmp_path: Path) -> None:
    """The dashboard's runs list reads the same reconciled state as ftui runs."""
    from tui.app import make_app
    from tui.screens.runs import RunsScreen

    runs = tmp_path / "runs"
    done = rundir.create_run_dir(runs, "done")
    with ev.EventWriter(done / ev.EVENTS_FILE) as w:
        w.emit(ev.START, total_steps=4, world_size=1)
        w.emit(ev.FINISH, step=4, metrics={})
    rundir.update_status(done, state="running", pid=_gone_pid(), pgid=_gone_pid(), started_at=time.time() - 9)
    orphan = rundir.create_run_dir(runs, "orphan")
    job = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        rundir.update_status(orphan, state="running", pid=_gone_pid(), job_pid=job.pid, pgid=job.pid,
                             job_started_at=runstate.process_start_time(job.pid), started_at=time.time())
        app = make_app(runs_dir=runs)
        async with app.run_test(size=(120, 30)) as pilot:
            deadline = time.monotonic() + 60
            while not (isinstance(app.screen, RunsScreen) and len(app.screen.rows) == 2):
                assert time.monotonic() < deadline, "the runs list never filled"
                await pilot.pause(0.1)
            states = {r["run"]: r["state"] for r in app.screen.rows}
        assert states == {done.name: "finished", orphan.name: "running (orphaned)"}
    finally:
        job.kill()
        job.wait()
