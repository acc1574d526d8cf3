"""The Slurm path on a real Slurm: `make test-cluster` starts one on this machine (scripts/slurm_localhost.sh:
slurmctld, slurmdbd and two slurmd node names on 127.0.0.1) and points SLURM_CONF at it.

The demo (tests/conftest.py tiny_spec, shortened) goes in as a 2-node job behind a job that holds every node:
pending with the reason in `ftui runs` and the monitor, then running once the queue frees, stopped with
`ftui stop` (a checkpoint on the way out), and its run dir checked. Then a kill, a stop while queued, a script
written with --dry-run and submitted by hand, sbatch's refusal, and a job ftui did not start, in `ftui ps` and
`ftui attach`. Not part of `make test` (its pytest ignores tests/cluster).
"""
from __future__ import annotations

import asyncio
import getpass
import io
import json
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from rich.console import Console

from runners import events as ev
from runners import rundir, slurm
from tests.conftest import ftui, records, tiny_spec, wait_until

NODES = 2
SHORT = {"dataset": {"max_train_samples": 64, "max_eval_samples": 16, "max_seq_length": 32},
         "training": {"num_train_epochs": 40, "per_device_train_batch_size": 4, "per_device_eval_batch_size": 16,
                      "learning_rate": 0.001, "seed": 1}}


def sh(*args: str, timeout: float = 60) -> str:
    done = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{args}: {done.stderr}"
    return done.stdout


@pytest.fixture(scope="module", autouse=True)
def cluster() -> Any:
    """The cluster answers and has the nodes; nothing of ours is left in its queue afterwards."""
    assert os.environ.get("SLURM_CONF"), "SLURM_CONF is not set: run `make test-cluster` (it starts the cluster)"
    nodes = sh("sinfo", "-h", "-N", "-o", "%N %t").split("\n")
    idle = [line.split()[0] for line in nodes if line.strip()]
    assert len(idle) >= NODES, f"the cluster has {idle}, the tests need {NODES} nodes"
    yield idle
    subprocess.run(["scancel", "--user", getpass.getuser()], timeout=30)


def queue_of(job_id: str) -> slurm.JobState:
    state = slurm.query(job_id)
    assert state is not None, f"Slurm does not know job {job_id}"
    return state


def blocker() -> str:
    """A job holding every node (so the next one waits with reason Resources), running before this returns."""
    job = sh("sbatch", "--parsable", "--exclusive", f"--nodes={NODES}", "--job-name=blocker", "--output=/dev/null",
             "--wrap", "sleep 900").strip()
    wait_until(lambda: queue_of(job).state == "RUNNING", 60, "the blocking job to run")
    return job


def spec_file(tmp_path: Path, nodes: int, **overrides: Any) -> Path:
    spec = tiny_spec(**{**SHORT, **overrides})
    spec["hardware"] = {"strategy": "cpu", "num_processes": 1, "nodes": nodes}
    path = tmp_path / f"spec-{nodes}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def submitted(tmp_path: Path, nodes: int, *flags: str, **overrides: Any) -> Path:
    done = ftui("run", str(spec_file(tmp_path, nodes, **overrides)), "--slurm", "--detach", "--runs-dir",
                str(tmp_path / "runs"), *flags, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "submitted Slurm job" in done.stderr
    return Path(done.stdout.strip().splitlines()[-1])


def status(run: Path) -> dict[str, Any]:
    return rundir.read_status(run) or {}


def listed(run: Path) -> dict[str, Any]:
    rows = json.loads(ftui("runs", "--json", "--runs-dir", str(run.parent), timeout=120).stdout)
    return next(r for r in rows if r["id"] == run.name)


def steps(run: Path) -> int:
    return max([r.get("step", 0) for r in records(run) if r["type"] == ev.LOG] or [0])


def screen_text(app: Any) -> str:
    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), record=True, force_terminal=True)
    console.print(app.screen._compositor.render_update(full=True))
    return console.export_text(styles=False)


async def until(pilot: Any, predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f}s waiting for {what}"
        await pilot.pause(0.5)


async def test_a_two_node_job_queued_watched_stopped(tmp_path: Path) -> None:
    from runners.watch.sources import open_source
    from runners.watch.telemetry import Telemetry
    from tui.app import make_app
    from tui.screens.monitor import MonitorScreen

    held = await asyncio.to_thread(blocker)
    run = await asyncio.to_thread(submitted, tmp_path, NODES, "--time=20:00", "--sbatch-arg=--comment=ftui-cluster-test")
    job = str(status(run)["slurm_job_id"])
    assert status(run)["state"] == "pending" and status(run)["nodes"] == NODES
    row = await asyncio.to_thread(wait_until, lambda: (r := listed(run))["shown_state"] == "pending (Resources)" and r,
                                  60, "ftui runs to show the job waiting for resources")
    assert row["state"] == "pending" and row["slurm"]["state"] == "PENDING" and row["slurm_job_id"] == job

    app = make_app(runs_dir=run.parent, source=open_source(str(run)), telemetry=Telemetry())
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, MonitorScreen) and app.screen.polls > 0, 60, "the monitor")
        monitor = app.screen
        await until(pilot, lambda: "pending (Resources)" in screen_text(app), 30, "the monitor to show the queue")
        assert f"Slurm job {job} PENDING (Resources)" in screen_text(app)
        await asyncio.to_thread(sh, "scancel", held)  # the queue frees: the job starts on both nodes
        await until(pilot, lambda: monitor.state == "running" and monitor.history.step >= 3, 300,
                    "the monitor to see the job running and training")
        text = screen_text(app)  # (the status line now shows the run's own warning: a random init)
        assert " running  step " in text and monitor.status["slurm"]["state"] == "RUNNING", text
        host = socket.gethostname()  # both slurmd node names run on this machine
        await until(pilot, lambda: all(f"node {k} {host} rank {k}" in screen_text(app) for k in range(NODES)), 60,
                    "a resources line per node (each node's first memory record)")
        assert (queue_of(job).state, queue_of(job).nodes) == ("RUNNING", NODES)
        stopped = await asyncio.to_thread(ftui, "stop", run.name, "--runs-dir", str(run.parent), "--wait", "240",
                                          timeout=300)
        assert stopped.returncode == 0 and "stopped (stopped)" in stopped.stdout, stopped.stdout + stopped.stderr
        await until(pilot, lambda: monitor.state == "stopped", 60, "the monitor to show the stop")

    # the run dir: status of both nodes, the events, the script, Slurm's output, the checkpoint
    final = status(run)
    assert (final["state"], final["exit_code"], final["slurm_job_id"]) == ("stopped", 0, job)
    assert (rundir.read_status(rundir.node_dir(run, 1)) or {})["state"] == "stopped"
    recs = records(run)
    start = next(r for r in recs if r["type"] == ev.START)
    assert start["nodes"] == NODES and len(start["layout"]) == NODES
    stop = next(r for r in recs if r["type"] == ev.STOP)
    ckpt = [r for r in recs if r["type"] == ev.CHECKPOINT][-1]
    assert ckpt["step"] == stop["step"] and rundir.checkpoint_problem(Path(ckpt["path"])) is None
    script = (run / "sbatch.sh").read_text()
    assert f"#SBATCH --nodes={NODES}" in script and "#SBATCH --time=20:00" in script and "--comment=ftui-cluster-test" in script
    assert (run / f"slurm-{job}.out").is_file()
    log = (run / rundir.LOG_FILE).read_text()
    assert "[n0 r0]" in log and "[n1 r1]" in log
    assert not (run / "control" / "stop").exists()
    ended = wait_until(lambda: (q := queue_of(job)).phase == "ended" and q, 60, "Slurm to end the job")
    assert ended.state == "COMPLETED"
    accounted = slurm.parse_sacct(sh("sacct", "-n", "-P", "-X", "-j", job, "-o", ",".join(slurm.SACCT_FIELDS)))[job]
    assert (accounted.state, accounted.nodes, accounted.exit_code) == ("COMPLETED", NODES, "0:0")
    assert listed(run)["shown_state"] == "stopped"


def test_kill_cancels_the_job_and_nothing_is_left(tmp_path: Path) -> None:
    run = submitted(tmp_path, 1)
    job = str(status(run)["slurm_job_id"])
    wait_until(lambda: steps(run) >= 2, 300, "training steps")
    killed = ftui("kill", run.name, "--yes", "--runs-dir", str(run.parent), timeout=120)
    assert killed.returncode == 0 and killed.stdout.startswith(f"scancel {job}: killed"), killed.stdout + killed.stderr
    assert status(run)["state"] == "killed"
    wait_until(lambda: queue_of(job).state == "CANCELLED", 60, "Slurm to cancel the job")
    left = subprocess.run(["pgrep", "-f", "--", f"--run-dir {run}"], capture_output=True, text=True)
    assert left.stdout.strip() == "", f"processes of the killed run are left: {left.stdout}"


def test_stop_while_queued_takes_the_job_out_of_the_queue(tmp_path: Path) -> None:
    held = blocker()
    run = submitted(tmp_path, 1)
    job = str(status(run)["slurm_job_id"])
    wait_until(lambda: listed(run)["shown_state"] == "pending (Resources)", 60, "the queue state")
    said = ftui("stop", run.name, "--runs-dir", str(run.parent), timeout=120)
    assert said.returncode == 0 and f"Slurm job {job} was still queued, so nothing had run" in said.stdout
    wait_until(lambda: listed(run)["state"] == "stopped", 60, "the stop to be read from Slurm")
    assert queue_of(job).state == "CANCELLED" and records(run) == [] and status(run)["state"] == "stopped"
    sh("scancel", held)


def test_a_dry_run_script_submitted_by_hand_is_followed(tmp_path: Path) -> None:
    done = ftui("run", str(spec_file(tmp_path, 1, training={"num_train_epochs": 1})), "--slurm", "--dry-run",
                "--runs-dir", str(tmp_path / "runs"), timeout=300)
    assert done.returncode == 0 and done.stdout.startswith("#!/usr/bin/env bash"), done.stderr
    run = next((tmp_path / "runs").iterdir())
    assert done.stdout == (run / "sbatch.sh").read_text() and "slurm_job_id" not in status(run)
    assert listed(run)["shown_state"] == "pending (not submitted)"
    job = sh("sbatch", "--parsable", str(run / "sbatch.sh")).strip()
    wait_until(lambda: status(run).get("slurm_job_id") == job, 120, "the job to record its id")
    wait_until(lambda: listed(run)["state"] == "finished", 300, "the run to finish")
    assert status(run)["slurm_nodelist"] and queue_of(job).state == "COMPLETED"


def test_sbatch_refusing_the_job_leaves_nothing(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    done = ftui("run", str(spec_file(tmp_path, 1)), "--slurm", "--partition", "nosuch", "--runs-dir", str(runs),
                timeout=300)
    assert done.returncode == 2
    assert "sbatch refused the job: sbatch: error: invalid partition specified: nosuch" in done.stderr, done.stderr
    assert not runs.exists() or list(runs.iterdir()) == []


FAKE_TRAINER = '''
import json, os, sys, time
out = sys.argv[sys.argv.index("--output_dir") + 1]
os.makedirs(out, exist_ok=True)
for step in range(1, 1000):
    state = {"global_step": step, "max_steps": 1000, "epoch": step / 100,
             "log_history": [{"step": s, "loss": 1.0 / s, "epoch": s / 100} for s in range(1, step + 1)]}
    with open(os.path.join(out, "trainer_state.json.tmp"), "w") as fh:
        json.dump(state, fh)
    os.replace(os.path.join(out, "trainer_state.json.tmp"), os.path.join(out, "trainer_state.json"))
    time.sleep(0.5)
'''


def test_a_job_ftui_did_not_start_in_ps_and_attach(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "train.py").write_text(FAKE_TRAINER)
    script = work / "job.sh"
    script.write_text(f"#!/bin/bash\n#SBATCH --job-name=theirs\n#SBATCH --chdir={work}\n#SBATCH --output={work}/out.log\n"
                      f"srun python3 train.py --output_dir {work}/out --learning_rate 3e-5\n")
    job = sh("sbatch", "--parsable", str(script)).strip()
    wait_until(lambda: (work / "out" / "trainer_state.json").is_file(), 120, "the foreign job to write its state")
    jobs = json.loads(ftui("ps", "--json", timeout=120).stdout)["slurm_jobs"]
    theirs = next(j for j in jobs if j["job_id"] == job)
    assert (theirs["name"], theirs["state"], theirs["run_dir"]) == ("theirs", "RUNNING", None)
    assert (theirs["output_dir"], theirs["output_dir_from"], theirs["evidence"]) == (str(work / "out"), "--output_dir",
                                                                                    "--output_dir")
    assert f"slurm job {job}  RUNNING" in ftui("ps", timeout=120).stdout
    snap = ftui("attach", f"slurm:{job}", "--once", "--json", timeout=120)
    assert snap.returncode == 0, snap.stderr
    got = json.loads(snap.stdout)
    assert (got["source"], got["state"], got["status"]["inner_kind"], got["can_control"]) == ("slurm", "running", "trainer",
                                                                                            False)
    assert got["step"] >= 1 and got["status"]["slurm"]["state"] == "RUNNING"
    stop = ftui("attach", job, "--stop", "--signal", "TERM", "--yes", timeout=120)  # a bare id: no such PID here
    assert stop.returncode == 0 and f"scancel {job}" in stop.stdout, stop.stdout + stop.stderr
    wait_until(lambda: queue_of(job).phase == "ended", 60, "the foreign job to be cancelled")
    assert queue_of(job).state == "CANCELLED"
