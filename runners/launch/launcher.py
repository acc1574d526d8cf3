"""Making a run and starting it detached.

The job runs under a supervisor (runners/launch/supervise.py) in a new session, so closing the terminal,
losing SSH or killing ftui never kills training. Everything a run needs is in its run dir, written
before the supervisor starts; ``status.json`` is written last, so a directory without it is never
presented as a run.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

from runners import loopback, paths, rundir, runstate, strategies
from runners import spec as specmod
from runners.errors import UserError
from runners.launch import multinode
from runners.launch.commands import accelerate_config, build_command, choose_launcher, deepspeed_config, gpu_env, launch_script
from runners.spec import RunSpec


def apply_overrides(spec: RunSpec, strategy: str | None, num_processes: int | None) -> RunSpec:
    hw = replace(spec.hardware, strategy=strategy or spec.hardware.strategy,
                 num_processes=num_processes or spec.hardware.num_processes)
    if num_processes is not None and num_processes < 1:
        raise UserError(f"--num_processes must be at least 1, got {num_processes}.")
    new = replace(spec, hardware=hw)
    specmod.validate(new, "command line")
    return new


def create_run(spec: RunSpec, runs_dir: Path, resumed_from: str | None = None,
               rdzv: multinode.Rendezvous | None = None) -> Path:
    """Write a complete run dir (spec, configs, launch.sh, status pending). Nothing is started.

    A multi-node run's ``rdzv`` (node 0's address; multinode.rendezvous() when not given) becomes
    launch.sh's defaults and is recorded in status.json with ``nodes``."""
    nodes = spec.hardware.nodes
    if nodes > 1 and rdzv is None:
        rdzv = multinode.rendezvous()
    try:
        run_dir = rundir.create_run_dir(runs_dir, spec.name)
    except OSError as exc:
        raise UserError(f"Cannot create a run in the runs dir '{runs_dir}' ({exc.strerror or exc}). Choose a writable "
                        "runs dir with --runs-dir or $FTUI_RUNS_DIR, or make this one writable (or free space).") from exc
    try:
        specmod.save(spec, run_dir / rundir.SPEC_FILE)
        if spec.hardware.strategy in strategies.DEEPSPEED:
            mixed = "bf16" if spec.training.get("bf16") else "fp16" if spec.training.get("fp16") else None
            (run_dir / "ds_config.json").write_text(json.dumps(deepspeed_config(spec.hardware.strategy, mixed), indent=1))
        if choose_launcher(spec) == "accelerate":
            (run_dir / "accelerate.yaml").write_text(accelerate_config(spec, rdzv))
        command = build_command(spec, run_dir)
        script = run_dir / "launch.sh"
        if rdzv is not None and nodes > 1:
            if choose_launcher(spec) == "deepspeed":
                (run_dir / multinode.HOSTFILE).write_text(multinode.hostfile(nodes, spec.hardware.num_processes))
            script.write_text(launch_script(command, run_dir, {**multinode.node_env(rdzv), **gpu_env(spec)},
                                            multinode.prelude(nodes, rdzv)))
        else:
            script.write_text(launch_script(command, run_dir, {**loopback.launcher_env(choose_launcher(spec)),
                                                               **gpu_env(spec)}))
        script.chmod(0o755)
        (run_dir / rundir.CONTROL_DIR).mkdir()
        from runners.plan.planner import write_run_plan

        write_run_plan(spec, run_dir)  # plan.json: what the monitor compares the run against
        rundir.update_status(run_dir, state="pending", run_id=run_dir.name, command=command, spec_hash=spec.spec_hash(),
                             runner=spec.runner, strategy=spec.hardware.strategy, launcher=choose_launcher(spec),
                             num_processes=spec.hardware.num_processes, created_at=time.time(), resumed_from=resumed_from,
                             **({"nodes": nodes, "master_addr": rdzv.addr, "master_port": rdzv.port}
                                if rdzv is not None and nodes > 1 else {}))
    except BaseException as exc:
        shutil.rmtree(run_dir, ignore_errors=True)  # never leave a half-written run dir behind
        if isinstance(exc, OSError):
            raise UserError(f"Cannot write the run dir in '{runs_dir}' ({exc.strerror or exc}): nothing was left "
                            "behind. Free space there, or choose another runs dir with --runs-dir or $FTUI_RUNS_DIR.") from exc
        raise
    return run_dir


def start(run_dir: Path, secrets: dict[str, str] | None = None, node: int = 0,
          rdzv: multinode.Rendezvous | None = None) -> int:
    """Start the supervisor of one node (0: the run's own) in a new session (detached from this terminal);
    returns its pid.

    ``secrets`` (runners.redaction.secrets_env) go into the supervisor's environment only, never into
    launch.sh: the ranks inherit them and fill the redacted slots of spec.yaml back. ``node`` and ``rdzv``
    (else launch.sh's defaults) place a node of a multi-node run; nothing inherited from this shell does."""
    log = open(run_dir / rundir.LOG_FILE, "ab")  # noqa: SIM115 - handed to the child
    pythonpath = str(paths.ROOT) + (os.pathsep + os.environ.get("PYTHONPATH", "") if os.environ.get("PYTHONPATH") else "")
    placement = (multinode.NODE_RANK_ENV, multinode.NNODES_ENV, multinode.MASTER_ADDR_ENV, multinode.MASTER_PORT_ENV)
    env = {**{k: v for k, v in os.environ.items() if k != specmod.redaction.SECRETS_ENV and k not in placement},
           **(secrets or {}), "PYTHONPATH": pythonpath, multinode.NODE_RANK_ENV: str(node)}
    if rdzv is not None:
        env.update({multinode.MASTER_ADDR_ENV: rdzv.addr, multinode.MASTER_PORT_ENV: str(rdzv.port)})
    proc = subprocess.Popen([sys.executable, "-m", "runners.launch.supervise", str(run_dir)], stdin=subprocess.DEVNULL,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, close_fds=True, env=env, cwd=run_dir)
    log.close()
    for _ in range(100):  # wait until the supervisor has recorded the job's pids
        status = rundir.read_status(rundir.node_dir(run_dir, node)) or {}
        if status.get("state") != "pending" or proc.poll() is not None:
            break
        time.sleep(0.05)
    return proc.pid


def launch(spec: RunSpec, runs_dir: Path, resumed_from: str | None = None,
           rdzv: multinode.Rendezvous | None = None) -> Path:
    """Check everything, write the run dir and start it (node 0 of a multi-node run: see join for the others)."""
    import contextlib

    from runners.launch.preflight import check_all, check_runs_dir

    check_runs_dir(runs_dir)
    with contextlib.redirect_stdout(sys.stderr):  # library import chatter must not mix with our stdout
        check_all(spec)
    run_dir = create_run(spec, runs_dir, resumed_from, rdzv)
    start(run_dir, specmod.redaction.secrets_env(spec.to_dict(), str(run_dir)))
    return run_dir


def join(run_dir: Path, node: int, addr: str | None = None, port: int | None = None) -> Path:
    """Start node ``node`` (1 or more) of a multi-node run on this machine: its own detached supervisor runs the
    run's launch.sh with ``FTUI_NODE_RANK=node`` and records ``nodes/<node>/status.json``. Returns that dir.

    ``addr``/``port`` replace launch.sh's defaults for node 0's rendezvous address (the one not given stays as
    written). The run dir must be the one node 0 uses (shared storage). Secrets redacted in spec.yaml do not reach this
    node's ranks: they are used by rank 0, on node 0; a token every node needs (HF_TOKEN) comes from its environment."""
    status = rundir.read_status(run_dir) or {}
    nodes = status.get("nodes")
    if not isinstance(nodes, int) or nodes < 2:
        raise UserError(f"Run {run_dir.name} is a one-machine run (hardware.nodes 1): there is no other node to join. "
                        "Set hardware.nodes in the spec to run on several machines.")
    if not 0 < node < nodes:
        raise UserError(f"--node-rank must be between 1 and {nodes - 1} for this {nodes}-node run (node 0 is started by "
                        f"ftui run), got {node}.")
    rdzv = None
    if addr or port:
        rdzv = multinode.Rendezvous(multinode.check_addr(addr or str(status.get("master_addr"))),
                                    multinode.check_port(port or status.get("master_port")))
    first = runstate.node_status(run_dir, 0) or {}
    if first.get("state") not in runstate.LIVE_STATES:
        raise UserError(f"Run {run_dir.name} has ended ({first.get('state')} on node 0): there is nothing to join. "
                        f"Resume it (ftui resume {run_dir.name}), then join the new run.")
    where = rundir.node_dir(run_dir, node)
    current = runstate.node_status(run_dir, node) or {}
    if current.get("state") in runstate.LIVE_STATES:
        raise UserError(f"Node {node} of run {run_dir.name} is already {current['state']} (host {current.get('host')}, "
                        f"supervisor pid {current.get('pid')}). Each node joins once.")
    if current:
        raise UserError(f"Node {node} of run {run_dir.name} already ran and ended {current.get('state')}: a run is never "
                        f"restarted in place. Resume it instead (ftui resume {run_dir.name}), then join the new run.")
    try:
        where.mkdir(parents=True, exist_ok=True)
        rundir.update_status(where, state="pending", run_id=run_dir.name, node=node, created_at=time.time())
    except OSError as exc:
        raise UserError(f"Cannot write {where} ({exc.strerror or exc}): the run dir must be writable from every node "
                        "(shared storage).") from exc
    start(run_dir, node=node, rdzv=rdzv)
    return where
