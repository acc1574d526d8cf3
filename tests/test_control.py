"""Detached jobs: graceful stop with checkpoint, resume, checkpoint now, kill, surviving ftui, crashes."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil

from runners import rundir
from tests.conftest import ROOT, ftui, only_run, records, tiny_spec, wait_until

LONG = {"dataset": {"max_train_samples": None}, "training": {"num_train_epochs": 3, "per_device_train_batch_size": 4}}


def _alive(pids: list[int]) -> list[int]:
    """The pids that still run (a zombie has ended: only its exit status is left to collect)."""
    alive = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.NoSuchProcess:
            pass
    return alive


def _step(run: Path) -> int:
    return max([r.get("step", 0) for r in records(run) if r["type"] == "log"] or [0])


def _status(run: Path) -> dict:
    return rundir.read_status(run) or {}


def test_graceful_stop_then_resume(tmp_path: Path, write_spec) -> None:
    runs = tmp_path / "runs"
    proc = ftui("run", str(write_spec(**LONG)), "--detach", "--runs-dir", str(runs))
    assert proc.returncode == 0, proc.stderr
    run = only_run(runs)
    wait_until(lambda: _step(run) >= 5, what="training steps")
    out = ftui("stop", run.name, "--runs-dir", str(runs), "--wait", "120")
    assert out.returncode == 0 and "stopped" in out.stdout, out.stdout + out.stderr
    status = _status(run)
    assert status["state"] == "stopped" and status["exit_code"] == 0
    recs = records(run)
    stop = next(r for r in recs if r["type"] == "stop")
    ckpt = [r for r in recs if r["type"] == "checkpoint"][-1]
    assert ckpt["step"] == stop["step"] < 1620 and Path(ckpt["path"]).is_dir()
    assert not (run / "control" / "stop").exists()
    assert not psutil.pid_exists(status["job_pid"]) or psutil.Process(status["job_pid"]).status() == "zombie"

    # resume into a new, linked run that starts at the stop step; make it short by stopping again
    proc = ftui("resume", run.name, "--detach", "--runs-dir", str(runs))
    assert proc.returncode == 0, proc.stderr
    new = Path(proc.stdout.strip().splitlines()[-1])
    assert new != run and _status(new)["resumed_from"] == run.name
    start = wait_until(lambda: next((r for r in records(new) if r["type"] == "start"), None), what="resumed start")
    assert start["resumed_step"] == stop["step"]
    wait_until(lambda: _step(new) > stop["step"], what="steps after resume")
    assert ftui("stop", new.name, "--runs-dir", str(runs), "--wait", "120").returncode == 0
    assert _status(new)["state"] == "stopped"


def test_checkpoint_now_and_kill(tmp_path: Path, write_spec) -> None:
    runs = tmp_path / "runs"
    spec = write_spec(training={**LONG["training"], "save_strategy": "no", "eval_strategy": "no", "logging_steps": 2},
                      dataset=LONG["dataset"], cadence={"auto": False})
    assert ftui("run", str(spec), "--detach", "--runs-dir", str(runs)).returncode == 0
    run = only_run(runs)
    wait_until(lambda: _step(run) >= 3, what="training steps")
    assert "checkpoint requested" in ftui("checkpoint", run.name, "--runs-dir", str(runs)).stdout
    ckpt = wait_until(lambda: next((r for r in records(run) if r["type"] == "checkpoint"), None), what="checkpoint")
    assert Path(ckpt["path"]).is_dir() and _status(run)["state"] == "running"
    refused = ftui("kill", run.name, "--runs-dir", str(runs), stdin=subprocess.DEVNULL)
    assert refused.returncode == 2 and "--yes" in refused.stderr
    pids = [p.pid for p in psutil.Process(_status(run)["job_pid"]).children(recursive=True)] + [_status(run)["job_pid"]]
    assert ftui("kill", run.name, "--yes", "--runs-dir", str(runs)).returncode == 0
    wait_until(lambda: _status(run).get("state") in rundir.TERMINAL_STATES, what="terminal state")
    assert _status(run)["state"] == "killed"
    wait_until(lambda: not _alive(pids), timeout=30, what="every process of the job to end")


def test_job_survives_death_of_ftui(tmp_path: Path, write_spec) -> None:
    runs = tmp_path / "runs"
    spec = write_spec(training={"num_train_epochs": 3})
    front = subprocess.Popen([sys.executable, "-m", "tui", "run", str(spec), "--headless", "--runs-dir", str(runs)],
                             cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    run = wait_until(lambda: next((p for p in runs.glob("*") if rundir.is_run_dir(p)), None) if runs.exists() else None,
                    what="run dir")
    wait_until(lambda: _status(run).get("state") == "running", what="running")
    os.killpg(front.pid, signal.SIGKILL)  # the terminal and ftui die together
    front.wait()
    wait_until(lambda: _status(run).get("state") in rundir.TERMINAL_STATES, timeout=300, what="run end")
    assert _status(run)["state"] == "finished"
    assert any(r["type"] == "finish" for r in records(run))


def test_bad_value_anywhere_in_the_file_is_refused_before_launch(tmp_path: Path) -> None:
    """A text cell that is not text, deep in the file: the whole-file scan before launch (runners/data.py)
    refuses it, where it used to crash the tokenizer at runtime; no run dir is left behind."""
    import pandas as pd
    import yaml

    rows = pd.read_csv(ROOT / "assets" / "demo" / "reviews.csv").head(200).to_dict("records")
    for row in rows[150:]:
        row["text"] = {"not": "a string"}
    data = tmp_path / "broken.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec(dataset={"train": str(data), "max_train_samples": None, "eval_fraction": 0.01})))
    proc = ftui("run", str(spec), "--headless", "--runs-dir", str(tmp_path / "runs"))
    assert proc.returncode == 2 and "dict values" in proc.stderr and "151" in proc.stderr, proc.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_crash_exception_in_model(tmp_path: Path, write_spec) -> None:
    """An empty token-type embedding table fails inside the model's forward (preflight cannot see it;
    positions past the table are refused before launch now)."""
    model = tmp_path / "model"
    model.mkdir()
    cfg = json.loads((ROOT / "assets" / "demo" / "model" / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**cfg, "type_vocab_size": 0}))
    for name in ("vocab.txt", "tokenizer_config.json"):
        (model / name).write_text((ROOT / "assets" / "demo" / "model" / name).read_text())
    proc = ftui("run", str(write_spec(model={"name_or_path": str(model)})), "--headless", "--runs-dir", str(tmp_path / "runs"))
    run = only_run(tmp_path / "runs")
    status = _status(run)
    assert proc.returncode == 1 and status["state"] == "crashed" and status["exit_code"] == 1
    crash = next(r for r in records(run) if r["type"] == "crash")
    assert "Error" in crash["error"] and "modeling_bert" in crash["traceback"] and "Traceback" in crash["traceback"]
    assert crash["error"] in status["error"]


def test_no_rank_outlives_its_launcher(tmp_path: Path, write_spec) -> None:
    """torchrun starts each rank in a session of its own: when the launcher dies (SIGKILL, OOM killer), the
    supervisor still ends every rank instead of leaving them training (and holding GPUs) as orphans."""
    runs = tmp_path / "runs"
    spec = write_spec(hardware={"strategy": "ddp", "num_processes": 2}, dataset=LONG["dataset"],
                      training={**LONG["training"], "logging_steps": 1})
    assert ftui("run", str(spec), "--detach", "--runs-dir", str(runs)).returncode == 0
    run = only_run(runs)
    wait_until(lambda: _step(run) >= 2, timeout=240, what="training steps")
    launcher = psutil.Process(_status(run)["job_pid"])
    ranks = [p for p in launcher.children(recursive=True) if "runners.train" in " ".join(p.cmdline())]
    assert len(ranks) == 2 and all(os.getsid(p.pid) != os.getsid(launcher.pid) for p in ranks), \
        "expected torchrun's ranks in sessions of their own"
    launcher.kill()
    wait_until(lambda: _status(run).get("state") in rundir.TERMINAL_STATES, timeout=60, what="terminal state")
    wait_until(lambda: not _alive([p.pid for p in ranks]), timeout=20, what="the ranks to end with their launcher")
    assert _status(run)["state"] == "killed"  # ended by a signal (SIGKILL), not by an error of its own
    assert ftui("kill", run.name, "--yes", "--runs-dir", str(runs)).stdout.strip() == "not running"
