"""The ftui run-dir source: tails events.jsonl written by the real EventWriter, state from status.json."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from scripts.watch import ENV, ROOT

from runners import events as ev
from runners import rundir
from runners.errors import UserError
from runners.watch.history import RunHistory
from runners.watch.sources import Source, detect_kind, open_source
from runners.watch.sources.ftui_run import FtuiRunSource


def make_run(tmp_path: Path, **status: object) -> Path:
    run = rundir.create_run_dir(tmp_path / "runs", "t")
    rundir.update_status(run, **status)
    return run


def test_tails_incrementally_and_keeps_partial_lines(tmp_path: Path) -> None:
    run = make_run(tmp_path, state="running", pid=os.getpid())
    src = open_source(str(run))
    assert isinstance(src, FtuiRunSource) and isinstance(src, Source)
    assert src.kind == "ftui" and src.can_control and src.label == run.name
    with ev.EventWriter(run / ev.EVENTS_FILE) as w:
        w.emit(ev.START, total_steps=10, world_size=1)
        w.emit(ev.LOG, step=1, epoch=0.1, loss=0.7, learning_rate=1e-3)
        first = src.poll()
        assert [r["type"] for r in first] == ["start", "log"]
        assert src.poll() == []
        w.emit(ev.LOG, step=2, epoch=0.2, loss=float("nan"))
    with open(run / ev.EVENTS_FILE, "a") as fh:
        fh.write('{"v":1,"t":1,"type":"eval","step":2,"metr')  # half-written by a writer mid-flush
    second = src.poll()
    assert len(second) == 1 and second[0]["loss"] != second[0]["loss"]  # NaN came back as a float
    with open(run / ev.EVENTS_FILE, "a") as fh:
        fh.write('ics":{"eval_loss":0.5}}\n')
    assert src.poll()[0]["metrics"] == {"eval_loss": 0.5}
    assert src.status()["state"] == "running" and os.getpid() in src.status()["pids"]


def test_corrupt_lines_are_skipped_with_a_warning(tmp_path: Path) -> None:
    run = make_run(tmp_path, state="finished", exit_code=0)
    (run / ev.EVENTS_FILE).write_bytes(
        b'{"v":1,"t":1,"type":"log","step":1,"loss":1.0}\n\xff\xfe garbage\n[1,2]\n'
        b'{"v":1,"t":2,"type":"finish","step":1,"metrics":{"train_loss":1.0}}\n')
    src = open_source(str(run))
    hist = RunHistory()
    hist.apply(src.poll())
    assert hist.state == "finished" and hist.latest["loss"] == 1.0
    assert len(src.warnings) == 2 and all("corrupt" in w for w in src.warnings)
    assert src.status()["state"] == "finished"


def test_dead_supervisor_means_crashed_and_bad_status_is_unknown(tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    run = make_run(tmp_path, state="running", pid=gone.pid)
    src = open_source(str(run))
    assert src.status()["state"] == "crashed"
    assert any("supervisor" in w for w in src.warnings)
    (run / rundir.STATUS_FILE).write_text("{not json")
    assert FtuiRunSource(run).status()["state"] == "unknown"


def test_run_id_and_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = make_run(tmp_path, state="finished")
    monkeypatch.setenv(rundir.RUNS_DIR_ENV, str(tmp_path / "runs"))
    assert open_source("latest").label == run.name
    assert detect_kind(run) == "ftui"
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="not something ftui can watch"):
        open_source(str(tmp_path / "empty"))
    with pytest.raises(UserError, match="neither a path"):
        open_source(str(tmp_path / "nope"))


def ftui_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tui", *args], capture_output=True, text=True, cwd=ROOT, env=ENV,
                          stdin=subprocess.DEVNULL, timeout=120)


def test_attach_once_json_and_stop_on_an_ftui_run(tmp_path: Path) -> None:
    run = make_run(tmp_path, state="finished", exit_code=0)
    with ev.EventWriter(run / ev.EVENTS_FILE) as w:
        w.emit(ev.START, total_steps=4, world_size=1)
        w.emit(ev.LOG, step=2, epoch=0.5, loss=0.5, learning_rate=1e-3)
        w.emit(ev.EVAL, step=4, epoch=1.0, metrics={"eval_loss": 0.4, "eval_accuracy": 0.75})
        w.emit(ev.CHECKPOINT, step=4, path=str(run / "output" / "checkpoint-4"), metric="eval_loss", value=0.4,
               is_best=True)
        w.emit(ev.FINISH, step=4, metrics={"train_runtime": 1.5})
    done = ftui_cli("attach", str(run), "--once", "--json")
    assert done.returncode == 0, done.stderr
    snap = json.loads(done.stdout)
    assert snap["source"] == "ftui" and snap["state"] == "finished" and snap["can_control"] is True
    assert (snap["step"], snap["max_steps"], snap["epoch"]) == (4, 4, 1.0)
    assert snap["latest"] == {"loss": 0.5, "learning_rate": 1e-3}
    assert snap["eval"] == [{"step": 4, "epoch": 1.0, "metrics": {"eval_loss": 0.4, "eval_accuracy": 0.75}}]
    assert snap["best"] == {"step": 4, "metric": "eval_loss", "value": 0.4,
                            "checkpoint": str(run / "output" / "checkpoint-4")}
    assert snap["processes"] == [] and snap["final_metrics"] == {"train_runtime": 1.5}
    text = ftui_cli("attach", str(run), "--once")
    assert text.returncode == 0 and "finished, step 4/4" in text.stdout and "best: eval_loss=0.4" in text.stdout
    stop = ftui_cli("attach", str(run), "--stop", "--yes")
    assert stop.returncode == 2 and f"ftui stop {run.name}" in stop.stderr
    bad = ftui_cli("attach", str(tmp_path / "nope"), "--once")
    assert bad.returncode == 2 and "neither a path" in bad.stderr
