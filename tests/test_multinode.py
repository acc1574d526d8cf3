"""Multi-node runs: a real two-node run on one machine (two launchers rendezvousing over loopback, gloo on CPU),
and the command line every launcher gets on each node, read back by that launcher's own parser."""
from __future__ import annotations

import base64
import json
import os
import shlex
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from runners import rundir, runstate
from runners import spec as specmod
from runners.errors import UserError
from runners.launch import control, launcher, multinode
from tests.conftest import free_port, ftui, records, tiny_spec, wait_until

STEPS = 120  # ~60 ms a step here with two CPU ranks: long enough to stop part-way, short enough to resume to the end


def _step(run: Path) -> int:
    return max([r.get("step", 0) for r in records(run) if r["type"] == "log"] or [0])


def _start_both(args: list[str], runs: Path) -> Path:
    """`ftui <args>` starts node 0 (detached); the join command it prints starts node 1."""
    proc = ftui(*args, "--detach", "--runs-dir", str(runs), "--master-addr", "127.0.0.1", "--master-port", str(free_port()))
    assert proc.returncode == 0, proc.stderr
    run = Path(proc.stdout.strip().splitlines()[-1])
    joins = [line.split(": ", 1)[1].strip() for line in proc.stderr.splitlines() if "ftui join " in line]
    assert joins == [f"ftui join {run} --node-rank 1 --master-addr 127.0.0.1 --master-port "
                     f"{rundir.read_status(run)['master_port']}"], proc.stderr
    joined = ftui(*shlex.split(joins[0])[1:])
    assert joined.returncode == 0 and "node 1 of" in joined.stdout, joined.stdout + joined.stderr
    return run


def _ended(run: Path) -> dict[str, Any]:
    status = wait_until(lambda: (s := runstate.effective_status(run) or {}).get("state") in rundir.TERMINAL_STATES and s,
                        what=f"{run.name} to end on both nodes")
    return dict(status)


def _tail(run: Path) -> str:
    return (run / rundir.LOG_FILE).read_text()[-4000:]


def test_two_nodes_stop_at_the_same_step_then_resume(tmp_path: Path, write_spec) -> None:
    runs = tmp_path / "runs"
    spec = write_spec(hardware={"nodes": 2, "num_processes": 1}, cadence={"auto": False},
                      training={"max_steps": STEPS, "save_strategy": "no", "eval_strategy": "no", "logging_steps": 1})
    started: list[Path] = []
    try:
        run = _start_both(["run", str(spec)], runs)
        started.append(run)
        assert (run / rundir.NODES_DIR / "1" / rundir.STATUS_FILE).is_file()  # node 1 never writes node 0's status
        wait_until(lambda: _step(run) >= 3, what="training steps on both nodes")
        out = ftui("stop", run.name, "--runs-dir", str(runs), "--wait", "120")
        assert out.returncode == 0 and "stopped" in out.stdout, out.stdout + out.stderr + _tail(run)
        status = _ended(run)
        assert status["state"] == "stopped" and status["node_states"] == {0: "stopped", 1: "stopped"}, status
        node1 = rundir.read_status(run / rundir.NODES_DIR / "1") or {}
        assert node1["exit_code"] == 0 and node1["node"] == 1
        recs = records(run)
        start = next(r for r in recs if r["type"] == "start")
        assert start["world_size"] == 2 and start["nodes"] == 2
        assert [(p["rank"], p["node"]) for p in start["layout"]] == [(0, 0), (1, 1)]
        assert {(r["rank"], r["node"]) for r in recs if r["type"] == "memory"} == {(0, 0), (1, 1)}
        stop = next(r for r in recs if r["type"] == "stop")["step"]
        assert 3 <= stop < STEPS
        log = (run / rundir.LOG_FILE).read_text()
        for prefix in ("[n0 r0] ", "[n1 r1] "):  # both nodes stop after the same step
            assert f"{prefix}ftui: stop requested: checkpoint at step {stop}, then stop" in log, _tail(run)
        assert rundir.checkpoint_problem(run / "output" / f"checkpoint-{stop}") is None
        assert [r["step"] for r in recs if r["type"] == "checkpoint"] == [stop]

        # resumed from that checkpoint on both nodes (what `ftui resume` does, without its preflight: time)
        spec_ = control.resume_spec(run)
        new = launcher.create_run(spec_, runs, resumed_from=run.name, rdzv=multinode.Rendezvous("127.0.0.1", free_port()))
        started.append(new)
        launcher.start(new)
        launcher.join(new, 1)
        status = _ended(new)
        assert status["state"] == "finished" and status["node_states"] == {0: "finished", 1: "finished"}, _tail(new)
        assert status["resumed_from"] == run.name
        recs = records(new)
        assert next(r for r in recs if r["type"] == "start")["resumed_step"] == stop
        assert next(r for r in recs if r["type"] == "finish")["step"] == STEPS
        assert {r["node"] for r in recs if r["type"] == "memory"} == {0, 1}
    finally:
        for run in started:  # nothing left running when an assertion failed half-way
            if control.is_running(run):
                control.kill(run, grace=2)


def test_a_one_machine_run_has_no_other_node(tmp_path: Path) -> None:
    run = launcher.create_run(specmod.from_dict(tiny_spec()), tmp_path / "runs")
    with pytest.raises(UserError, match="one-machine run"):
        launcher.join(run, 1)
    assert "FTUI_NODE_RANK" not in (run / "launch.sh").read_text()  # one machine: launch.sh as it always was
    assert "nodes" not in (rundir.read_status(run) or {})
    with pytest.raises(UserError, match="hardware.nodes is 1"):
        multinode.for_run(1, "gpu-a", None)  # ftui run --master-addr on a one-machine spec


@pytest.mark.parametrize("hardware, needle", [
    ({"nodes": 0}, "hardware.nodes must be a whole number of at least 1"),
    ({"nodes": 2, "launcher": "python"}, "hardware.launcher python runs one process on one machine"),
    ({"nodes": 2, "strategy": "single"}, "hardware.strategy single trains on one GPU"),
])
def test_nodes_are_validated(hardware: dict, needle: str) -> None:
    with pytest.raises(UserError, match=needle):
        specmod.from_dict(tiny_spec(hardware=hardware))


def test_a_node_joins_a_live_run_once(tmp_path: Path) -> None:
    run = launcher.create_run(specmod.from_dict(tiny_spec(hardware={"nodes": 3})), tmp_path / "runs",
                              rdzv=multinode.Rendezvous("127.0.0.1", free_port()))
    with pytest.raises(UserError, match="between 1 and 2"):
        launcher.join(run, 3)
    rundir.update_status(run, state="stopped")
    with pytest.raises(UserError, match="nothing to join"):
        launcher.join(run, 1)
    assert not (run / rundir.NODES_DIR).exists()


def _node_argv(run: Path, node: int) -> list[str]:
    """The argv launch.sh hands its launcher on node ``node``: the script itself, run with exec printing."""
    script = (run / "launch.sh").read_text()
    head, command = script.rsplit("\nexec ", 1)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FTUI_")}
    out = subprocess.run(["bash", "-c", f"{head}\nexec printf '%s\\n' {command}"], env={**env, "FTUI_NODE_RANK": str(node)},
                         capture_output=True, text=True, check=True)
    return out.stdout.splitlines()


def _multinode_run(tmp_path: Path, **hardware: Any) -> tuple[Path, int]:
    port = free_port()
    spec = specmod.from_dict(tiny_spec(hardware={"nodes": 2, **hardware}))
    return launcher.create_run(spec, tmp_path / "runs", rdzv=multinode.Rendezvous("10.1.2.3", port)), port


def test_torchrun_gets_its_node(tmp_path: Path) -> None:
    from torch.distributed.run import config_from_args, get_args_parser

    run, port = _multinode_run(tmp_path, num_processes=2)
    argv = _node_argv(run, 1)
    assert Path(argv[0]).name == "torchrun"
    config, entry, entry_args = config_from_args(get_args_parser().parse_args(argv[1:]))
    assert (config.min_nodes, config.max_nodes, config.nproc_per_node) == (2, 2, 2)
    assert config.rdzv_backend == "static" and config.rdzv_endpoint == f"10.1.2.3:{port}"
    assert config.rdzv_configs["rank"] == 1  # the static rendezvous: node 1's ranks are 2 and 3
    assert entry_args[-4:] == ["-m", "runners.train", "--run-dir", str(run)]
    script = (run / "launch.sh").read_text()
    assert "GLOO_SOCKET_IFNAME" not in script  # nodes on other machines: not loopback
    status = rundir.read_status(run) or {}
    assert (status["nodes"], status["master_addr"], status["master_port"]) == (2, "10.1.2.3", port)


def test_accelerate_gets_its_machine(tmp_path: Path) -> None:
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import _filter_args, prepare_multi_gpu_env
    from torch.distributed.run import config_from_args, get_args_parser

    run, port = _multinode_run(tmp_path, num_processes=2, launcher="accelerate")
    argv = _node_argv(run, 1)
    assert Path(argv[0]).name == "accelerate" and argv[1] == "launch"
    args, _, _ = _validate_launch_command(launch_command_parser().parse_args(argv[2:]))
    assert (args.num_processes, args.num_machines, args.machine_rank) == (4, 2, 1)  # accelerate counts every machine's
    prepare_multi_gpu_env(args)  # turns them into torchrun's arguments, which accelerate then runs, as here
    torchrun = _filter_args(args, get_args_parser(), ["--training_script", args.training_script,
                                                      "--training_script_args", args.training_script_args])
    config, _, _ = config_from_args(torchrun)
    assert (config.min_nodes, config.max_nodes, config.nproc_per_node) == (2, 2, 2)
    assert config.rdzv_backend == "static" and config.rdzv_endpoint == f"10.1.2.3:{port}"
    assert config.rdzv_configs["rank"] == 1


def test_deepspeed_gets_its_node_without_ssh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from deepspeed.launcher import launch, runner

    run, port = _multinode_run(tmp_path, num_processes=2, strategy="zero2")
    argv = _node_argv(run, 1)
    assert Path(argv[0]).name == "deepspeed" and "--no_ssh" in argv

    class Started:
        returncode = 0

        def __init__(self, cmd: list[str], env: dict[str, str]) -> None:
            seen.append(cmd)

        def wait(self) -> int:
            return 0

    seen: list[list[str]] = []
    monkeypatch.setattr(runner.subprocess, "Popen", Started)
    runner.main(argv[1:])  # the real runner, up to starting this node's local launcher
    (cmd,) = seen
    monkeypatch.setattr("sys.argv", cmd[cmd.index("deepspeed.launcher.launch"):])
    local = launch.parse_args()  # the local launcher's own parser, on what the runner starts it with
    world = json.loads(base64.urlsafe_b64decode(local.world_info))
    assert world == {"node0": [0, 1], "node1": [0, 1]} and local.node_rank == 1
    assert (local.master_addr, local.master_port) == ("10.1.2.3", port) and local.module
    assert local.training_script == "runners.train" and local.training_script_args[-2:] == ["--run-dir", str(run)]


def test_a_loopback_rendezvous_keeps_the_transport_on_loopback(tmp_path: Path) -> None:
    port = free_port()
    spec = specmod.from_dict(tiny_spec(hardware={"nodes": 2}))
    run = launcher.create_run(spec, tmp_path / "runs", rdzv=multinode.Rendezvous("127.0.0.1", port))
    script = (run / "launch.sh").read_text()
    assert "export GLOO_SOCKET_IFNAME=lo\n" in script
    argv = _node_argv(run, 0)
    assert "--master_addr=127.0.0.1" in argv and f"--master_port={port}" in argv and "--node_rank=0" in argv


def test_the_run_is_live_while_any_node_is(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / rundir.NODES_DIR / "1").mkdir(parents=True)
    now = time.time()
    rundir.update_status(run, state="stopped", nodes=2, ended_at=now)
    me = {"pid": os.getpid(), "pid_started_at": runstate.process_start_time(os.getpid()), "node": 1}
    rundir.update_status(run / rundir.NODES_DIR / "1", state="running", **me)
    status = runstate.effective_status(run) or {}
    assert status["state"] == "running" and status["node_states"] == {0: "stopped", 1: "running"}
    assert control.is_running(run) and not control.wait(run, 0.3)
    rundir.update_status(run / rundir.NODES_DIR / "1", state="crashed", error="RuntimeError: gloo lost a peer")
    status = runstate.effective_status(run) or {}
    assert status["state"] == "crashed" and status["error"] == "node 1: RuntimeError: gloo lost a peer"


def test_the_monitor_shows_a_line_per_node() -> None:
    from tui.widgets.panels import node_lines

    memory = {r: {"rank": r, "node": r // 2, "host": f"gpu{r // 2}", "peak_allocated": (r + 1) * 2**30} for r in range(4)}
    lines = ["".join(p if isinstance(p, str) else p[0] for p in line) for line in node_lines(memory, 3 * 2**30)]
    assert lines == ["node 0 gpu0 ranks 0-1 peak 2.0G / plan 3.0G", "node 1 gpu1 ranks 2-3 peak 4.0G / plan 3.0G"]
    assert node_lines({0: {"rank": 0, "rss": 1}}, None) == []  # one machine: the per-rank lines as before
