"""The Slurm path without a Slurm (tests/cluster/ has the real one): sbatch.sh for one and two nodes and the
environment it gives each node, squeue/sacct/scontrol output as Slurm 22.05 prints it (captured from the cluster
scripts/slurm_localhost.sh starts), runs reconciled with their queue state, stop/kill through scancel, and the
errors when sbatch is missing or refuses the job (nothing left behind)."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from runners import events as ev
from runners import rundir, runstate, slurm
from runners import spec as specmod
from runners.errors import UserError
from runners.launch import control
from runners.launch import slurm as submit
from runners.watch import slurm as jobs
from tests.conftest import ftui, tiny_spec, wait_until

# captured from Slurm 22.05.8 (Debian 12) with runners.slurm's own formats
SQUEUE = """\
2|PENDING|Resources|2||waits|root|/tmp|N/A|0:00|UNLIMITED|debug|(null)
4|PENDING|Dependency|1||dep|root|/tmp|N/A|0:00|UNLIMITED|debug|(null)
5|PENDING|Priority|1||tl|root|/tmp|N/A|0:00|1:00|debug|(null)
3|PENDING|JobHeldUser|1||held|root|/tmp|N/A|0:00|UNLIMITED|debug|(null)
1|RUNNING|None|2|n[1-2]|blocker|root|/tmp|2026-12-02T02:06:21|0:01|UNLIMITED|debug|(null)
7|COMPLETED|None|2|n[1-2]|ftui-20261202-021738-tiny-9a2d|root|/tmp/ft/runs2/20261202-021738-tiny-9a2d|2026-12-02T02:17:39|1:19|UNLIMITED|debug|/tmp/ft/runs2/20261202-021738-tiny-9a2d/sbatch.sh
8|TIMEOUT|TimeLimit|1|n2|tl|root|/tmp|2026-12-02T02:06:42|1:02|1:00|debug|(null)
"""
SACCT = """\
1|blocker|COMPLETED|0:0|None|2|n[1-2]|2026-12-02T02:06:21|2026-12-02T02:06:41|00:00:20|/tmp
3|held|CANCELLED by 0|0:0|JobHeldUser|1|None assigned|None|2026-12-02T02:06:25|00:00:00|/tmp
4|dep|FAILED|3:0|Dependency|1|n1|2026-12-02T02:06:42|2026-12-02T02:06:42|00:00:00|/tmp
5|tl|RUNNING|0:0|None|1|n2|2026-12-02T02:06:42|Unknown|00:00:08|/tmp
"""
SCONTROL = ("JobId=7 JobName=ftui-20261202-021738-tiny-9a2d UserId=root(0) GroupId=root(0) MCS_label=N/A "
            "Priority=4294901754 Nice=0 Account=root QOS=normal JobState=COMPLETED Reason=None Dependency=(null) "
            "ExitCode=0:0 RunTime=00:01:19 TimeLimit=UNLIMITED AllocNode:Sid=localhost:14598 NodeList=n[1-2] "
            "BatchHost=n1 NumNodes=2 CPUs/Task=1 TRES=cpu=2,node=2,billing=2 Command=/tmp/ft/runs/x/sbatch.sh "
            "WorkDir=/tmp/ft/runs/x StdErr=/tmp/ft/runs/x/slurm-7.out StdIn=/dev/null StdOut=/tmp/ft/runs/x/slurm-7.out "
            "Power= \n")


def tool(bin_dir: Path, name: str, body: str) -> Path:
    """A stand-in for a Slurm command: a bash script on PATH."""
    bin_dir.mkdir(exist_ok=True)
    path = bin_dir / name
    path.write_text("#!/usr/bin/env bash\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


@pytest.fixture
def fake_slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """PATH with only our stand-ins for Slurm's commands (squeue, sacct answer from files the test writes)."""
    bin_dir = tmp_path / "bin"
    tool(bin_dir, "squeue", f'cat "{tmp_path}/squeue.txt" 2>/dev/null || exit 1\n')
    tool(bin_dir, "sacct", f'cat "{tmp_path}/sacct.txt" 2>/dev/null\n')
    tool(bin_dir, "scancel", f'echo "$@" >> "{tmp_path}/scancel.log"\n')
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    slurm.forget()
    yield tmp_path
    slurm.forget()


def a_run(tmp_path: Path, nodes: int = 1, **status: object) -> Path:
    run = tmp_path / "runs" / "20261202-000000-tiny-abcd"
    run.mkdir(parents=True)
    (run / rundir.CONTROL_DIR).mkdir()
    rundir.update_status(run, **{"run_id": run.name, "state": "pending", "nodes": nodes, "scheduler": "slurm",
                                 "slurm_script": "sbatch.sh", "created_at": 1.0, **status})
    return run


def spec_of(**hardware: object) -> specmod.RunSpec:
    return specmod.from_dict(tiny_spec(hardware={"strategy": "cpu", "num_processes": 1, **hardware}))


# -- sbatch.sh ------------------------------------------------------------------------------------------------

def directive_lines(script: str) -> list[str]:
    return [line.removeprefix("#SBATCH ") for line in script.splitlines() if line.startswith("#SBATCH ")]


def test_the_script_for_one_node_asks_for_one_task_and_runs_the_supervisor(tmp_path: Path) -> None:
    run = tmp_path / "20261202-000000-tiny-abcd"
    script = submit.sbatch_script(spec_of(), run, submit.SlurmOptions())
    assert directive_lines(script) == [
        "--job-name=ftui-20261202-000000-tiny-abcd", "--nodes=1", "--ntasks-per-node=1", "--cpus-per-task=1",
        f"--chdir={run}", f"--output={run}/slurm-%j.out", "--signal=B:USR1@300"]
    assert "--gpus-per-node" not in script
    assert "srun --nodes=\"$SLURM_NNODES\" --ntasks=\"$SLURM_NNODES\" --ntasks-per-node=1 --cpus-per-task=1" in script
    assert "-m runners.launch.supervise" in script and f"{rundir.LOG_FILE}" in script
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0


def test_the_script_for_two_gpu_nodes_carries_every_option(tmp_path: Path) -> None:
    options = submit.SlurmOptions(partition="gpu", time="4:00:00", account="proj", qos="high",
                                  extra=["--mem=64G", "--cpus-per-task=32", "--exclusive"])
    script = submit.sbatch_script(spec_of(strategy="ddp", num_processes=4, nodes=2), tmp_path / "r", options)
    lines = directive_lines(script)
    assert lines[:4] == ["--job-name=ftui-r", "--nodes=2", "--ntasks-per-node=1", "--gpus-per-node=4"]
    assert {"--partition=gpu", "--time=4:00:00", "--account=proj", "--qos=high"} <= set(lines)
    assert lines[-3:] == ["--mem=64G", "--cpus-per-task=32", "--exclusive"]  # ours gave way to the user's
    assert sum(line.startswith("--cpus-per-task") for line in lines) == 1
    assert "--cpus-per-task=32 --gpus-per-node=4 --kill-on-bad-exit=1" in script  # srun: the same per task


def test_a_pass_through_that_is_no_option_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--sbatch-arg 'mem=64G' is not an sbatch option"):
        submit.sbatch_script(spec_of(), tmp_path, submit.SlurmOptions(extra=["mem=64G"]))


def test_each_node_gets_its_rank_and_the_first_nodes_address(tmp_path: Path) -> None:
    """sbatch.sh run by bash as Slurm would, with stand-ins for scontrol, srun (one task per node) and the
    supervisor: every node sees FTUI_NODE_RANK = SLURM_NODEID and the same rendezvous."""
    run = a_run(tmp_path, nodes=2)
    script = submit.sbatch_script(spec_of(nodes=2), run, submit.SlurmOptions())
    bin_dir = tmp_path / "bin"
    tool(bin_dir, "scontrol", 'case "$1 $2" in\n  "show hostnames") printf "gpu07\\ngpu08\\n";;\n'
                              '  "show node") echo "   NodeAddr=10.1.0.7 NodeHostName=gpu07 Port=6818";;\nesac\n')
    # srun: run the task's command once per node, with the python that starts the supervisor swapped for a recorder
    tool(bin_dir, "srun", 'while [ "$1" != bash ]; do shift; done; shift\n'
                          f'for k in $(seq 0 $((SLURM_NNODES - 1))); do SLURM_NODEID=$k bash "$1" "$2" "$3" '
                          f'"{bin_dir}/recorder" "$5"; done\n')
    record = f'"{tmp_path}/node-$SLURM_NODEID.env"'
    tool(bin_dir, "recorder", f'env | grep -E "^FTUI_(NODE|NNODES|MASTER)" | sort > {record}; echo "$@" >> {record}\n')
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_NNODES": "2", "SLURM_JOB_ID": "4242",
           "SLURM_JOB_NODELIST": "gpu[07-08]"}
    done = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    for k in (0, 1):
        lines = (tmp_path / f"node-{k}.env").read_text().splitlines()
        assert lines[:4] == ["FTUI_MASTER_ADDR=10.1.0.7", f"FTUI_MASTER_PORT={20000 + 4242}", "FTUI_NNODES=2",
                             f"FTUI_NODE_RANK={k}"]
        assert lines[4] == f"-m runners.launch.supervise {run}"
    status = rundir.read_status(run) or {}
    assert status["slurm_job_id"] == "4242" and status["slurm_nodelist"] == "gpu[07-08]"  # recorded at the start


def test_the_warning_signal_asks_the_run_to_stop(tmp_path: Path) -> None:
    """--signal=B:USR1@300 reaches the batch shell: it writes the stop request while srun goes on."""
    run = a_run(tmp_path)
    script = submit.sbatch_script(spec_of(), run, submit.SlurmOptions())
    bin_dir = tmp_path / "bin"
    tool(bin_dir, "scontrol", 'echo n1\n')
    tool(bin_dir, "srun", f'touch "{tmp_path}/srun.started"\n'
                          f'for _ in $(seq 100); do [ -f "{run}/control/stop" ] && exit 0; sleep 0.1; done; exit 7\n')
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_NNODES": "1", "SLURM_JOB_ID": "9",
           "SLURM_JOB_NODELIST": "n1"}
    proc = subprocess.Popen(["bash", "-c", script], env=env)

    wait_until(lambda: (tmp_path / "srun.started").exists(), 60, "srun (the trap is set before it)")
    proc.send_signal(10)  # SIGUSR1, as Slurm sends it 300 s before the time limit
    assert proc.wait(timeout=30) == 0
    assert (run / "control" / "stop").is_file()


# -- submitting -----------------------------------------------------------------------------------------------

def test_no_sbatch_is_a_clear_error_and_writes_nothing(tmp_path: Path, write_spec) -> None:  # noqa: ANN001
    spec = write_spec()
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    done = ftui("run", str(spec), "--slurm", "--detach", "--runs-dir", str(tmp_path / "runs"),
                env={**os.environ, "PATH": str(empty)}, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "--slurm needs Slurm's sbatch, and it is not on PATH here" in done.stderr
    assert not (tmp_path / "runs").exists() or list((tmp_path / "runs").iterdir()) == []


def test_slurm_options_without_slurm_are_refused(write_spec) -> None:  # noqa: ANN001
    done = ftui("run", str(write_spec()), "--partition", "gpu", timeout=120)
    assert done.returncode == 2 and "add --slurm" in done.stderr


@pytest.fixture
def no_preflight(monkeypatch: pytest.MonkeyPatch) -> None:
    """The submit path alone: the spec checks are preflight's own tests."""
    from runners.launch import preflight

    monkeypatch.setattr(preflight, "check_all", lambda spec: None)


def test_a_refused_job_quotes_sbatch_and_leaves_no_run_dir(fake_slurm: Path, no_preflight: None) -> None:
    tool(fake_slurm / "bin", "sbatch", 'echo "sbatch: error: invalid partition specified: nope" >&2\n'
                                       'echo "sbatch: error: Batch job submission failed: Invalid partition name specified" >&2\n'
                                       'exit 1\n')
    runs = fake_slurm / "runs"
    with pytest.raises(UserError) as err:
        submit.launch(spec_of(), runs, submit.SlurmOptions(partition="nope"))
    assert "sbatch refused the job: sbatch: error: invalid partition specified: nope / sbatch: error: Batch job " \
           "submission failed: Invalid partition name specified" in str(err.value)
    assert list(runs.iterdir()) == []


def test_a_submitted_job_is_held_until_its_id_is_recorded(fake_slurm: Path, no_preflight: None) -> None:
    log = fake_slurm / "calls.log"
    tool(fake_slurm / "bin", "sbatch", f'echo "sbatch $@" >> "{log}"; echo "4711;cluster"\n')
    recorded = '$(grep -o slurm_job_id $(dirname "$0")/../runs/*/status.json)'  # what status.json held by then
    tool(fake_slurm / "bin", "scontrol", f'echo "scontrol $@ {recorded}" >> "{log}"\n')
    run = submit.launch(spec_of(), fake_slurm / "runs", submit.SlurmOptions(time="1:00:00"))
    calls = log.read_text().splitlines()
    assert calls[0] == f"sbatch --parsable --hold {run / 'sbatch.sh'}"
    assert calls[1] == "scontrol release 4711 slurm_job_id"  # the id was in status.json before the release
    status = rundir.read_status(run) or {}
    assert status["state"] == "pending" and status["slurm_job_id"] == "4711" and status["scheduler"] == "slurm"
    assert status["slurm_options"]["time"] == "1:00:00"
    assert "--time=1:00:00" in (run / "sbatch.sh").read_text()


def test_dry_run_writes_the_script_without_sbatch(tmp_path: Path, no_preflight: None, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch at all
    run = submit.launch(spec_of(nodes=1), tmp_path / "runs", submit.SlurmOptions(), dry_run=True)
    status = rundir.read_status(run) or {}
    assert (run / "sbatch.sh").is_file() and "slurm_job_id" not in status
    assert runstate.shown_state(runstate.effective_status(run) or {}) == "pending (not submitted)"


# -- squeue, sacct, scontrol ----------------------------------------------------------------------------------

def test_squeue_lines_parse_into_queue_states() -> None:
    states = {job_id: slurm.state_from_squeue(f) for job_id, f in slurm.parse_squeue(SQUEUE).items()}
    assert (states["2"].state, states["2"].reason, states["2"].nodes, states["2"].nodelist) == ("PENDING", "Resources", 2, None)
    assert [states[j].reason for j in ("4", "5", "3")] == ["Dependency", "Priority", "JobHeldUser"]
    assert {j: s.phase for j, s in states.items()} == {"2": "queued", "4": "queued", "5": "queued", "3": "queued",
                                                       "1": "running", "7": "ended", "8": "ended"}
    assert (states["1"].reason, states["1"].nodelist) == (None, "n[1-2]")
    fields = slurm.parse_squeue(SQUEUE)["7"]
    assert fields["work_dir"] == "/tmp/ft/runs2/20261202-021738-tiny-9a2d" and fields["command"].endswith("/sbatch.sh")
    assert fields["start"] == "2026-12-02T02:17:39" and slurm.parse_squeue(SQUEUE)["2"]["start"] is None


def test_sacct_lines_parse_after_the_job_left_the_queue() -> None:
    states = slurm.parse_sacct(SACCT)
    assert (states["3"].state, states["3"].reason, states["3"].nodelist) == ("CANCELLED", "JobHeldUser", None)
    assert (states["4"].state, states["4"].exit_code, states["4"].source) == ("FAILED", "3:0", "sacct")
    assert states["1"].phase == "ended" and states["5"].phase == "running"
    again = slurm.parse_sacct(SACCT + "1|blocker|TIMEOUT|0:0|TimeLimit|2|n[1-2]|x|y|z|/tmp\n")
    assert again["1"].state == "TIMEOUT"  # an id Slurm reused: the newest line


def test_scontrol_show_job_keeps_values_with_spaces_and_equals() -> None:
    fields = slurm.parse_scontrol(SCONTROL)
    assert fields["StdOut"] == "/tmp/ft/runs/x/slurm-7.out" and fields["WorkDir"] == "/tmp/ft/runs/x"
    assert fields["TRES"] == "cpu=2,node=2,billing=2" and fields["AllocNode:Sid"] == "localhost:14598"
    assert slurm.parse_scontrol("JobId=1 Command=python train.py --lr=3 Comment=two words\n")["Command"] == \
        "python train.py --lr=3"


def test_no_slurm_here_is_an_answer_not_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    slurm.forget()
    assert slurm.job_state("12") is None and jobs.list_jobs() is None and slurm.job_details("12") is None
    run = a_run(tmp_path, slurm_job_id="12")
    assert (runstate.effective_status(run) or {})["state"] == "pending"  # as written: nothing to ask


def test_the_queue_is_asked_once_per_few_seconds(fake_slurm: Path) -> None:
    (fake_slurm / "squeue.txt").write_text("12|PENDING|Priority|1||x|root|/tmp|N/A|0:00|UNLIMITED|debug|(null)\n")
    assert slurm.job_state("12").reason == "Priority"  # type: ignore[union-attr]
    (fake_slurm / "squeue.txt").write_text("12|RUNNING|None|1|n1|x|root|/tmp|N/A|0:01|UNLIMITED|debug|(null)\n")
    assert slurm.job_state("12").state == "PENDING"  # type: ignore[union-attr]
    assert slurm.job_state("12", max_age=0).state == "RUNNING"  # type: ignore[union-attr]


# -- the run's state ------------------------------------------------------------------------------------------

def queue(tmp_path: Path, line: str) -> None:
    (tmp_path / "squeue.txt").write_text(line + "\n")
    slurm.forget()


def test_a_queued_run_is_pending_with_the_reason_then_running(fake_slurm: Path) -> None:
    run = a_run(fake_slurm, slurm_job_id="12")
    queue(fake_slurm, "12|PENDING|Resources|1||ftui-x|root|/tmp|N/A|0:00|UNLIMITED|debug|(null)")
    status = runstate.effective_status(run) or {}
    assert status["state"] == "pending" and status["slurm"]["reason"] == "Resources"
    assert runstate.shown_state(status) == "pending (Resources)"
    from tui.commands.run import run_rows

    row = run_rows(run.parent)[0]
    assert row["shown_state"] == "pending (Resources)" and row["slurm"]["phase"] == "queued"
    queue(fake_slurm, "12|RUNNING|None|1|n1|ftui-x|root|/tmp|2026-12-02T02:00:00|0:05|UNLIMITED|debug|(null)")
    status = runstate.effective_status(run) or {}
    assert status["state"] == "running" and runstate.shown_state(status) == "running"
    assert control.is_running(run)


@pytest.mark.parametrize("slurm_line, status_extra, state, error", [
    ("12|CANCELLED|None|1|n1|x|root|/tmp|2026-12-02T02:00:00|0:05|UNLIMITED|debug|(null)", {"started_at": 5.0},
     "killed", "Slurm job 12 ended CANCELLED; see slurm-12.out"),
    ("12|CANCELLED|Resources|1||x|root|/tmp|N/A|0:00|UNLIMITED|debug|(null)", {"stop_requested": 5.0}, "stopped", None),
    ("12|TIMEOUT|TimeLimit|1|n1|x|root|/tmp|2026-12-02T02:00:00|1:02|1:00|debug|(null)", {"started_at": 5.0},
     "killed", "Slurm job 12 ended TIMEOUT (TimeLimit); see slurm-12.out"),
    ("12|NODE_FAIL|NodeDown|1|n1|x|root|/tmp|2026-12-02T02:00:00|1:02|1:00|debug|(null)", {"started_at": 5.0},
     "crashed", "Slurm job 12 ended NODE_FAIL (NodeDown); see slurm-12.out"),
])
def test_a_job_slurm_ended_without_a_recorded_end_takes_slurms_word(fake_slurm: Path, slurm_line: str,
                                                                      status_extra: dict, state: str, error: str | None) -> None:
    run = a_run(fake_slurm, slurm_job_id="12", host="a-compute-node", pid=999999, **status_extra)
    queue(fake_slurm, slurm_line)
    status = runstate.effective_status(run) or {}
    assert status["state"] == state and status.get("error") == error and status["reconciled"]
    written = rundir.read_status(run) or {}
    assert written["state"] == state and written["slurm"]["state"] == slurm_line.split("|")[1]


def test_the_events_win_over_slurm_and_every_node_agrees(fake_slurm: Path) -> None:
    """A 2-node job Slurm ended after the run's last event: the stop event says stopped, also for node 1
    whose file (on another host) still said running."""
    run = a_run(fake_slurm, nodes=2, slurm_job_id="12", host="node-a", state="running", started_at=5.0)
    node1 = rundir.node_dir(run, 1)
    node1.mkdir(parents=True)
    rundir.update_status(node1, state="running", host="node-b", pid=999999)
    (run / ev.EVENTS_FILE).write_text(json.dumps({"type": "stop", "t": 9.0, "step": 4}) + "\n")
    queue(fake_slurm, "12|COMPLETED|None|2|n[1-2]|x|root|/tmp|2026-12-02T02:00:00|1:02|1:00|debug|(null)")
    status = runstate.effective_status(run) or {}
    assert status["state"] == "stopped" and status["node_states"] == {0: "stopped", 1: "stopped"}
    assert (rundir.read_status(node1) or {})["state"] == "stopped"
    assert not control.is_running(run)


def test_stop_cancels_a_queued_job_and_kill_cancels_a_running_one(fake_slurm: Path) -> None:
    run = a_run(fake_slurm, slurm_job_id="12")
    queue(fake_slurm, "12|PENDING|Priority|1||x|root|/tmp|N/A|0:00|UNLIMITED|debug|(null)")
    said = control.stop(run)
    assert said.startswith("Slurm job 12 was still queued, so nothing had run: scancel 12")
    assert not (run / "control" / "stop").exists() and (rundir.read_status(run) or {}).get("stop_requested")
    queue(fake_slurm, "12|CANCELLED|Priority|1||x|root|/tmp|N/A|0:00|UNLIMITED|debug|(null)")
    assert (runstate.effective_status(run) or {})["state"] == "stopped"

    other = a_run(fake_slurm / "b", slurm_job_id="13", state="running", started_at=5.0, host="node-a")
    queue(fake_slurm, "13|RUNNING|None|1|n1|x|root|/tmp|2026-12-02T02:00:00|0:05|UNLIMITED|debug|(null)")
    assert control.stop(other) == "stop requested: the run saves a checkpoint at its next step and stops"
    assert (other / "control" / "stop").is_file()  # the file first: a checkpoint, then the end
    tool(fake_slurm / "bin", "scancel", f'echo "$@" >> "{fake_slurm}/scancel.log"; '
                                        f'cp "{fake_slurm}/ended.txt" "{fake_slurm}/squeue.txt"\n')
    (fake_slurm / "ended.txt").write_text("13|CANCELLED|None|1|n1|x|root|/tmp|2026-12-02T02:00:00|0:05|UNLIMITED|debug|(null)\n")
    assert control.kill(other, grace=0.5).startswith("scancel 13: killed")
    assert (fake_slurm / "scancel.log").read_text().splitlines() == ["12", "13"]
    assert (rundir.read_status(other) or {})["state"] == "killed"


# -- ftui ps and attach ---------------------------------------------------------------------------------------

def test_jobs_are_told_apart_by_their_work_dir_and_script(tmp_path: Path) -> None:
    run = a_run(tmp_path)
    line = "21|RUNNING|None|2|n[1-2]|ftui-x|me|{wd}|2026-12-02T02:00:00|0:05|UNLIMITED|debug|{wd}/sbatch.sh"
    ftui_job = jobs.classify(slurm.parse_squeue(line.format(wd=run))["21"], None)
    assert (ftui_job.run_dir, ftui_job.evidence, ftui_job.output_dir) == (str(run), "ftui run", str(run / "output"))
    work = tmp_path / "work"
    work.mkdir()
    script = "#!/bin/bash\n#SBATCH -N 2\nsrun torchrun --nproc_per_node=4 train.py --output_dir out --lr 3e-5\n"
    foreign = jobs.classify(slurm.parse_squeue(line.format(wd=work))["21"], script)
    assert (foreign.evidence, foreign.output_dir, foreign.output_dir_from) == ("torchrun", str(work / "out"), "--output_dir")
    plain = jobs.classify(slurm.parse_squeue(line.format(wd=work))["21"], "#!/bin/bash\nsleep 100\n")
    assert plain.evidence is None  # not a training job: ftui ps leaves it out
    assert [jobs.parse_job_id(t) for t in ("123", "slurm:123", "123_4", "12a", "slurm:")] == ["123", "123", "123_4", None, None]


def test_ps_lists_the_slurm_jobs_and_attach_resolves_a_job_id(fake_slurm: Path) -> None:
    run = a_run(fake_slurm, slurm_job_id="21")
    queue(fake_slurm, f"21|PENDING|Priority|1||ftui-x|me|{run}|N/A|0:00|UNLIMITED|debug|{run}/sbatch.sh")
    tool(fake_slurm / "bin", "scontrol", "exit 1\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    done = subprocess.run([sys.executable, "-m", "tui", "ps", "--json"], capture_output=True, text=True, env=env, timeout=120)
    listed = json.loads(done.stdout)["slurm_jobs"]
    assert [(j["job_id"], j["state"], j["reason"], j["run_dir"]) for j in listed] == [("21", "PENDING", "Priority", str(run))]
    text = subprocess.run([sys.executable, "-m", "tui", "ps"], capture_output=True, text=True, env=env, timeout=120).stdout
    assert f"slurm job 21  PENDING (Priority)  1 node(s)   ftui-x  ftui run {run.name}" in text
    snap = subprocess.run([sys.executable, "-m", "tui", "attach", "slurm:21", "--once", "--json"], capture_output=True,
                          text=True, env=env, timeout=120)
    assert snap.returncode == 0, snap.stderr
    got = json.loads(snap.stdout)
    assert (got["source"], got["label"], got["state"], got["status"]["slurm"]["reason"]) == ("ftui", run.name, "pending",
                                                                                           "Priority")


def test_the_docs_name_the_new_status_keys() -> None:
    text = (Path(__file__).resolve().parent.parent / "docs" / "rundir.md").read_text()
    for key in ("sbatch.sh", "slurm-<job id>.out", "slurm_job_id", "slurm_options", "stop_requested"):
        assert key in text, key
