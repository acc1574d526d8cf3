"""`ftui ps`, PID attach and --stop against a real torchrun job (2 processes, CPU, gloo) started
outside ftui, the way a user would start it."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from scripts.watch import ENV, ROOT, SCRIPTS

from runners.watch import procs
from runners.watch.telemetry import Telemetry
from tests.conftest import free_port, wait_until
from tests.fakes import fake_nvml, two_gpus


def ftui(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tui", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout, env=ENV, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def torchrun_job(tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("torchrun")
    torchrun = Path(sys.executable).with_name("torchrun")
    log = open(work / "train.log", "w")
    # a relative --output_dir: ftui must resolve it against the job's working dir
    proc = subprocess.Popen([str(torchrun), "--nproc_per_node", "2", "--master_port", str(free_port()),
                             str(SCRIPTS / "train_trainer.py"), "--output_dir", "out", "--max_steps", "400",
                             "--step_delay", "0.3", "--report_to", "tensorboard"],
                            cwd=work, env=ENV, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def both_workers():  # the job once torchrun has started both workers
            assert proc.poll() is None, (work / "train.log").read_text()[-3000:]  # it died: say why, now
            jobs = [j for j in procs.find_jobs()[0] if j.pid == proc.pid]
            return jobs[0] if jobs and len(jobs[0].workers) == 2 else None

        job = wait_until(both_workers, timeout=180, every=1.0,
                         what=f"torchrun and its 2 workers (log: {work / 'train.log'})")
        yield proc, work, job
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()


def test_ps_finds_the_torchrun_job_and_its_output_dir(torchrun_job) -> None:
    proc, work, _ = torchrun_job
    done = ftui("ps", "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    job = next(j for j in data["jobs"] if j["pid"] == proc.pid)
    assert job["launcher"] == "torchrun" and job["num_workers"] == 2
    assert job["output_dir"] == str((work / "out").resolve()) and job["output_dir_from"] == "--output_dir"
    workers = [p for p in job["processes"] if p["role"] == "worker"]
    assert {p["ppid"] for p in workers} == {proc.pid}
    assert all("torch" in p["libraries"] for p in workers)
    assert any("N/A (no GPU)" in n for n in data["notes"])
    text = ftui("ps")
    assert f"job {proc.pid}  torchrun  2 worker(s)" in text.stdout and str(work / "out") in text.stdout


def test_gpu_memory_per_process_through_nvml(torchrun_job) -> None:
    _, _, job = torchrun_job
    worker = job.workers[0].pid
    jobs, notes = procs.find_jobs(Telemetry(nvml=fake_nvml(two_gpus(pids=(worker,)))))
    found = next(j for j in jobs if j.pid == job.pid)
    by_pid = {p.pid: p.gpu_memory for p in found.processes}
    assert by_pid[worker] == {0: 512 * 2**20, 1: None} and by_pid[job.pid] == {}
    assert notes == []
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    _, notes = procs.find_jobs(Telemetry(nvml=fake_nvml(two_gpus(pids=(gone.pid,)))))
    assert any("PID namespace" in n for n in notes)


def test_attach_by_pid_of_launcher_or_worker(torchrun_job) -> None:
    proc, work, job = torchrun_job

    def attached_at_step_4() -> dict | None:
        done = ftui("attach", str(job.workers[1].pid), "--once", "--json")
        assert done.returncode == 0, done.stderr
        snap = json.loads(done.stdout)
        return snap if snap["step"] >= 4 else None

    snap = wait_until(attached_at_step_4, timeout=120, what="attach to report step 4", every=2.0)
    assert snap["source"] == "pid" and snap["state"] == "running"
    assert snap["status"]["job_pid"] == proc.pid and snap["status"]["inner_kind"] == "trainer"
    assert {p["pid"] for p in snap["processes"]} == set(job.pids)
    assert snap["latest"]["loss"] > 0


def test_stop_asks_then_signals_the_process_group(torchrun_job) -> None:
    proc, _, job = torchrun_job
    refused = ftui("attach", str(proc.pid), "--stop")
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert proc.poll() is None
    done = ftui("attach", str(proc.pid), "--stop", "--signal", "TERM", "--yes", timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "only possible for ftui-launched runs" in done.stdout
    assert f"sent SIGTERM to process group {proc.pid}" in done.stdout  # its own session: pgid == pid
    assert "The job has ended." in done.stdout
    proc.wait(timeout=30)
    assert not [p for p in job.pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]


def test_no_such_pid_is_a_user_error() -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    done = ftui("attach", str(gone.pid), "--once")
    assert done.returncode == 2 and f"PID {gone.pid}" in done.stderr and "ftui ps" in done.stderr


def test_a_launcher_is_not_grouped_under_the_python_process_that_started_it() -> None:
    """pytest / a notebook running transformers that starts torchrun: the job is torchrun and its workers."""
    def proc(pid: int, ppid: int, role: str, *cmd: str) -> procs.Proc:
        return procs.Proc(pid=pid, ppid=ppid, pgid=pid, cmdline=list(cmd), cwd="/", create_time=pid, rss=0, role=role)

    found = {
        10: proc(10, 0, "worker", "python", "-m", "pytest"),
        20: proc(20, 10, "torchrun", "torchrun", "--nproc_per_node", "2", "train.py", "--output_dir", "/o"),
        21: proc(21, 20, "worker", "python", "train.py", "--output_dir", "/o"),
        22: proc(22, 20, "worker", "python", "train.py", "--output_dir", "/o"),
        23: proc(23, 21, "worker", "python", "-c", "dataloader"),
    }
    jobs = {j.pid: j for j in procs.group(found)}
    assert sorted(jobs) == [10, 20]
    assert jobs[20].pids == [20, 21, 22, 23] and jobs[20].launcher == "torchrun" and jobs[20].output_dir == "/o"
    assert jobs[10].pids == [10] and jobs[10].launcher == "python"


def test_launcher_kinds_from_real_command_lines() -> None:
    assert procs.launcher_kind(["/venv/bin/python3", "/venv/bin/torchrun", "--nproc_per_node", "2", "t.py"]) == "torchrun"
    assert procs.launcher_kind(["python", "-m", "torch.distributed.run", "t.py"]) == "torchrun"
    assert procs.launcher_kind(["/venv/bin/python", "/venv/bin/accelerate", "launch", "t.py"]) == "accelerate"
    assert procs.launcher_kind(["/venv/bin/python", "/venv/bin/deepspeed", "--num_gpus", "2", "t.py"]) == "deepspeed"
    assert procs.launcher_kind(["python", "-u", "-m", "deepspeed.launcher.launch", "--world_info=x"]) == "deepspeed"
    assert procs.launcher_kind(["python", "-m", "runners.launch.supervise", "/runs/x"]) == "ftui"
    assert procs.launcher_kind(["python", "-m", "runners.supervise", "/runs/x"]) == "ftui"  # runs from before the move
    assert procs.launcher_kind(["/venv/bin/python", "/venv/bin/ftui", "ps"]) is None
    assert procs.launcher_kind(["python", "train.py", "--note", "torchrun"]) is None


PYTEST_LIKE = '''
import pathlib
import time

import safetensors.torch  # noqa: F401  what a test module importing transformers maps
import tokenizers  # noqa: F401
import torch  # noqa: F401
import transformers  # noqa: F401

pathlib.Path("imported").write_text("1")


def test_waits() -> None:
    time.sleep(300)
'''


def test_pytest_importing_transformers_is_not_a_training_job(tmp_path: Path) -> None:
    """Issue 13: `ftui ps` listed a pytest run as a training job. ML libraries mapped are no evidence;
    a Trainer script with its --output_dir is, even beside the same old outputs."""
    tests_dir, train_dir = tmp_path / "tests", tmp_path / "train"
    for work in (tests_dir, train_dir):
        stale = work / "old" / "trainer_state.json"  # an old training output in the working dir
        stale.parent.mkdir(parents=True)
        stale.write_text("{}")
        os.utime(stale, (time.time() - 3600, time.time() - 3600))
    (tests_dir / "test_imports.py").write_text(PYTEST_LIKE)
    log = open(tmp_path / "procs.log", "w")
    started = [
        subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_imports.py"],
                         cwd=tests_dir, env=ENV, stdout=log, stderr=subprocess.STDOUT, start_new_session=True),
        subprocess.Popen([sys.executable, str(SCRIPTS / "train_trainer.py"), "--output_dir", "out", "--max_steps",
                          "400", "--step_delay", "0.2"], cwd=train_dir, env=ENV, stdout=log, stderr=subprocess.STDOUT,
                         start_new_session=True),
    ]
    pytest_proc, trainer = started
    try:
        wait_until(lambda: (tests_dir / "imported").exists()
                   and procs.has_ml_libraries(procs.mapped_libraries(pytest_proc.pid)), timeout=180,
                   what="the pytest process to map torch and tokenizers/safetensors")

        def trainer_listed() -> list[procs.Job] | None:
            assert trainer.poll() is None, (tmp_path / "procs.log").read_text()[-3000:]
            jobs = procs.find_jobs()[0]
            return jobs if any(trainer.pid in j.pids for j in jobs) else None

        jobs = wait_until(trainer_listed, timeout=180, every=1.0, what="the Trainer script to be listed")
        assert not any(pytest_proc.pid in j.pids for j in jobs)
        assert pytest_proc.poll() is None  # still alive, still mapping torch: not listed all the same
        listed = {p["pid"] for j in json.loads(ftui("ps", "--json").stdout)["jobs"] for p in j["processes"]}
        assert trainer.pid in listed and pytest_proc.pid not in listed
    finally:
        for proc in started:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def test_training_evidence_from_command_lines() -> None:
    ml = ["torch", "tokenizers"]
    assert procs.training_evidence(["python", "-m", "runners.train", "--run-dir", "/r"], "/", 0, []) == "ftui run dir"
    assert procs.training_evidence(["python", "train.py", "--output_dir", "out"], "/", 0, ml) == "--output_dir"
    assert procs.training_evidence(["python", "-m", "pytest", "tests/test_simpletransformers.py"], "/", 0, ml) is None
    assert procs.training_evidence(["python", "-c", "import transformers"], "/nonexistent", 0, ml) is None
    assert procs.entry_point(["python", "-u", "-m", "pytest", "-x"]) == "pytest"
