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

from runners import loopback, paths, rundir, strategies
from runners import spec as specmod
from runners.errors import UserError
from runners.launch.commands import accelerate_config, build_command, choose_launcher, deepspeed_config, launch_script
from runners.spec import RunSpec


def apply_overrides(spec: RunSpec, strategy: str | None, num_processes: int | None) -> RunSpec:
    hw = replace(spec.hardware, strategy=strategy or spec.hardware.strategy,
                 num_processes=num_processes or spec.hardware.num_processes)
    if num_processes is not None and num_processes < 1:
        raise UserError(f"--num_processes must be at least 1, got {num_processes}.")
    new = replace(spec, hardware=hw)
    specmod.validate(new, "command line")
    return new


def create_run(spec: RunSpec, runs_dir: Path, resumed_from: str | None = None) -> Path:
    """Write a complete run dir (spec, configs, launch.sh, status pending). Nothing is started."""
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
            (run_dir / "accelerate.yaml").write_text(accelerate_config(spec))
        command = build_command(spec, run_dir)
        script = run_dir / "launch.sh"
        script.write_text(launch_script(command, run_dir, loopback.launcher_env(choose_launcher(spec))))
        script.chmod(0o755)
        (run_dir / rundir.CONTROL_DIR).mkdir()
        from runners.plan.planner import write_run_plan

        write_run_plan(spec, run_dir)  # plan.json: what the monitor compares the run against
        rundir.update_status(run_dir, state="pending", run_id=run_dir.name, command=command, spec_hash=spec.spec_hash(),
                             runner=spec.runner, strategy=spec.hardware.strategy, launcher=choose_launcher(spec),
                             num_processes=spec.hardware.num_processes, created_at=time.time(), resumed_from=resumed_from)
    except BaseException as exc:
        shutil.rmtree(run_dir, ignore_errors=True)  # never leave a half-written run dir behind
        if isinstance(exc, OSError):
            raise UserError(f"Cannot write the run dir in '{runs_dir}' ({exc.strerror or exc}): nothing was left "
                            "behind. Free space there, or choose another runs dir with --runs-dir or $FTUI_RUNS_DIR.") from exc
        raise
    return run_dir


def start(run_dir: Path, secrets: dict[str, str] | None = None) -> int:
    """Start the supervisor in a new session (detached from this terminal); returns its pid.

    ``secrets`` (runners.redaction.secrets_env) go into the supervisor's environment only, never into
    launch.sh: the ranks inherit them and fill the redacted slots of spec.yaml back."""
    log = open(run_dir / rundir.LOG_FILE, "ab")  # noqa: SIM115 - handed to the child
    pythonpath = str(paths.ROOT) + (os.pathsep + os.environ.get("PYTHONPATH", "") if os.environ.get("PYTHONPATH") else "")
    env = {**{k: v for k, v in os.environ.items() if k != specmod.redaction.SECRETS_ENV}, **(secrets or {}),
           "PYTHONPATH": pythonpath}
    proc = subprocess.Popen([sys.executable, "-m", "runners.launch.supervise", str(run_dir)], stdin=subprocess.DEVNULL,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, close_fds=True, env=env, cwd=run_dir)
    log.close()
    for _ in range(100):  # wait until the supervisor has recorded the job's pids
        status = rundir.read_status(run_dir) or {}
        if status.get("state") != "pending" or proc.poll() is not None:
            break
        time.sleep(0.05)
    return proc.pid


def launch(spec: RunSpec, runs_dir: Path, resumed_from: str | None = None) -> Path:
    import contextlib

    from runners.launch.preflight import check_all, check_runs_dir

    check_runs_dir(runs_dir)
    with contextlib.redirect_stdout(sys.stderr):  # library import chatter must not mix with our stdout
        check_all(spec)
    run_dir = create_run(spec, runs_dir, resumed_from)
    start(run_dir, specmod.redaction.secrets_env(spec.to_dict(), str(run_dir)))
    return run_dir
