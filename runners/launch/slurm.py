"""A run on a Slurm cluster: ``ftui run SPEC --slurm`` writes ``sbatch.sh`` into the run dir, submits it and
records the job id; ``scancel`` for stop's fallback and kill.

``sbatch.sh`` is meant to be read: its ``#SBATCH`` lines ask for ``hardware.nodes`` nodes with one task each,
and that task runs the run's ``launch.sh`` (the same on every node) with the rendezvous taken from Slurm's
environment: ``FTUI_NODE_RANK`` (``SLURM_NODEID``), ``FTUI_NNODES`` (``SLURM_NNODES``), ``FTUI_MASTER_ADDR``
(the first node of the allocation) and ``FTUI_MASTER_PORT``. Each task is that node's ftui supervisor
(runners/launch/supervise.py, as ``ftui join`` starts it), so node 0 records the run's state in ``status.json``
and node K its own in ``nodes/K/status.json``, exactly as a multi-node run started by hand.
``--signal`` warns the job before its time limit: the batch shell then drops the stop request ``ftui stop``
writes, so the run saves a checkpoint and ends ``stopped`` instead of being killed.

The job is submitted held and released once its id is in ``status.json``, so the job's own first writes
there can never race ours. Nothing is left behind when sbatch is missing or refuses the script.
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from runners import paths, rundir
from runners import slurm as slurmq
from runners import spec as specmod
from runners.errors import UserError
from runners.launch import multinode
from runners.spec import RunSpec

SCRIPT = "sbatch.sh"
OUTPUT = slurmq.OUTPUT
SIGNAL_WARNING_SECONDS = 300  # --signal: how long before the time limit the run is asked to stop
CPUS_PER_GPU_PROCESS = 4  # --cpus-per-task for GPU runs, per process (data loading, tokenization)
SUBMIT_TIMEOUT = 60.0
STOP_GRACE_SECONDS = 300  # `ftui stop` on a Slurm run: how long the checkpoint and the end may take before scancel
KILL_WAIT_SECONDS = 30  # Slurm's default KillWait: SIGTERM to SIGKILL after scancel
PLACEMENT = (multinode.NODE_RANK_ENV, multinode.NNODES_ENV, multinode.MASTER_ADDR_ENV, multinode.MASTER_PORT_ENV)


@dataclass
class SlurmOptions:
    """The flags of ``ftui run --slurm``: what sbatch is asked for beyond what the spec decides."""

    partition: str | None = None
    time: str | None = None
    account: str | None = None
    qos: str | None = None
    extra: list[str] = field(default_factory=list)  # --sbatch-arg, passed through as they are

    def to_json(self) -> dict[str, object]:
        return {"partition": self.partition, "time": self.time, "account": self.account, "qos": self.qos,
                "extra": list(self.extra)}


def _option_name(arg: str) -> str:
    return arg.split("=", 1)[0].strip()


def directives(spec: RunSpec, run_dir: Path, options: SlurmOptions) -> list[str]:
    """The ``#SBATCH`` options, in order. An option also given with --sbatch-arg is left to that one."""
    hw = spec.hardware
    gpus = hw.strategy != "cpu"
    cpus = hw.num_processes * (CPUS_PER_GPU_PROCESS if gpus else 1)
    wanted = [f"--job-name=ftui-{run_dir.name}", f"--nodes={hw.nodes}", "--ntasks-per-node=1", f"--cpus-per-task={cpus}"]
    if gpus:
        wanted.append(f"--gpus-per-node={hw.num_processes}")
    for name, value in (("partition", options.partition), ("time", options.time), ("account", options.account),
                        ("qos", options.qos)):
        if value:
            wanted.append(f"--{name}={value}")
    wanted += [f"--chdir={run_dir}", f"--output={run_dir / OUTPUT}", f"--signal=B:USR1@{SIGNAL_WARNING_SECONDS}"]
    given = {_option_name(a) for a in options.extra}
    return [w for w in wanted if _option_name(w) not in given] + list(options.extra)


def sbatch_script(spec: RunSpec, run_dir: Path, options: SlurmOptions) -> str:
    """The batch script (see the module doc); ``bash -n`` accepts it, ``sbatch`` submits it as it is."""
    for arg in options.extra:
        if not arg.startswith("-") or "\n" in arg:
            raise UserError(f"--sbatch-arg '{arg}' is not an sbatch option: give one option per flag, with its value "
                            "after '=' (e.g. --sbatch-arg=--mem=64G or --sbatch-arg=--exclusive).")
    cpus = next(d.split("=", 1)[1] for d in directives(spec, run_dir, options) + ["--cpus-per-task=1"]
                if d.startswith("--cpus-per-task="))
    run, python = shlex.quote(str(run_dir)), shlex.quote(sys.executable)
    pythonpath = str(paths.ROOT) + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else "")
    gpus = f" --gpus-per-node={spec.hardware.num_processes}" if spec.hardware.strategy != "cpu" else ""
    lines = [
        "#!/usr/bin/env bash",
        f"# Written by ftui for run {run_dir.name}: {spec.hardware.nodes} node(s), one task each; every task is its",
        "# node's ftui supervisor, running launch.sh with the rendezvous from Slurm's environment. Review it;",
        "# `sbatch sbatch.sh` submits it as it is (ftui run --slurm did).",
        *(f"#SBATCH {shlex.quote(d)}" for d in directives(spec, run_dir, options)),
        "set -euo pipefail",
        f"RUN_DIR={run}",
        f"PYTHON={python}",
        f"export PYTHONPATH={shlex.quote(pythonpath)}",
        '"$PYTHON" -m runners.launch.slurm started "$RUN_DIR"  # the job id and its nodes, into status.json',
        'export FTUI_NNODES="$SLURM_NNODES"',
        "# the first node of the allocation (no `| head`: pipefail would take its SIGPIPE for a failure)",
        'FTUI_MASTER_NODE="$(scontrol show hostnames "$SLURM_JOB_NODELIST")"',
        "FTUI_MASTER_NODE=\"${FTUI_MASTER_NODE%%$'\\n'*}\"",
        "# as Slurm reaches it (its NodeAddr), else by its name",
        'FTUI_MASTER_ADDR="$(scontrol show node "$FTUI_MASTER_NODE" 2>/dev/null | sed -n \'s/.*NodeAddr=\\([^ ]*\\).*/\\1/p\' '
        '|| true)"',
        'export FTUI_MASTER_ADDR="${FTUI_MASTER_ADDR:-$FTUI_MASTER_NODE}"',
        'export FTUI_MASTER_PORT="${FTUI_MASTER_PORT:-$((20000 + SLURM_JOB_ID % 20000))}"',
        "# --signal's warning before the time limit: the stop request of `ftui stop` (a checkpoint, then the end)",
        f"trap 'date +%s > \"$RUN_DIR/{rundir.CONTROL_DIR}/{rundir.STOP_REQUEST}\"' USR1",
        f'srun --nodes="$SLURM_NNODES" --ntasks="$SLURM_NNODES" --ntasks-per-node=1 --cpus-per-task={cpus}{gpus} '
        "--kill-on-bad-exit=1 \\",
        "  bash -c 'export FTUI_NODE_RANK=\"$SLURM_NODEID\"; "
        f"exec \"$1\" -m runners.launch.supervise \"$2\" >> \"$2/{rundir.LOG_FILE}\" 2>&1' node \"$PYTHON\" \"$RUN_DIR\" &",
        "srun_pid=$!",
        "code=0",
        "# wait in the background so the USR1 trap runs at once; wait again after it",
        'wait "$srun_pid" || code=$?',
        'while kill -0 "$srun_pid" 2>/dev/null; do code=0; wait "$srun_pid" || code=$?; done',
        'exit "$code"',
    ]
    return "\n".join(lines) + "\n"


def write_script(spec: RunSpec, run_dir: Path, options: SlurmOptions) -> Path:
    path = run_dir / SCRIPT
    path.write_text(sbatch_script(spec, run_dir, options))
    path.chmod(0o755)
    return path


def find_sbatch() -> str:
    found = shutil.which("sbatch")
    if found is None:
        raise UserError("--slurm needs Slurm's sbatch, and it is not on PATH here. Run ftui on a machine that submits "
                        "to your cluster (a login node), add Slurm's bin dir to PATH, or run without --slurm. "
                        "Nothing was written.")
    return found


def _quoted(stderr: str) -> str:
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    return " / ".join(lines[-5:]) or "no message"


def submit(run_dir: Path, secrets: dict[str, str] | None = None) -> str:
    """``sbatch --parsable --hold sbatch.sh``: the job id, or a UserError quoting sbatch (nothing submitted then).

    The job gets this environment (sbatch's default), with ``secrets`` (runners.redaction.secrets_env) added
    as for a local run's supervisor, never in a file of the run dir; a node's place comes from sbatch.sh only."""
    sbatch = find_sbatch()
    script = run_dir / SCRIPT
    env = {**{k: v for k, v in os.environ.items() if k not in PLACEMENT}, **(secrets or {})}
    try:
        done = subprocess.run([sbatch, "--parsable", "--hold", str(script)], capture_output=True, text=True,
                              timeout=SUBMIT_TIMEOUT, cwd=run_dir, stdin=subprocess.DEVNULL, env=env)
    except subprocess.TimeoutExpired as exc:
        raise UserError(f"sbatch did not answer within {SUBMIT_TIMEOUT:.0f}s (is slurmctld reachable?). If it still "
                        f"queued the job, it is held: find it with squeue -n ftui-{run_dir.name} and scancel it.") from exc
    if done.returncode != 0:
        raise UserError(f"sbatch refused the job: {_quoted(done.stderr)}. Fix the option it names (--partition, --time, "
                        "--account, --qos or an --sbatch-arg), or see the script with --dry-run. Nothing was submitted.")
    job_id = done.stdout.strip().split(";")[0]  # --parsable: "id" or "id;cluster"
    if not job_id:
        raise UserError(f"sbatch answered without a job id ({_quoted(done.stdout + done.stderr)}).")
    return job_id


def release(job_id: str) -> None:
    done = subprocess.run(["scontrol", "release", job_id], capture_output=True, text=True, timeout=SUBMIT_TIMEOUT,
                          stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        cancel(job_id)
        raise UserError(f"Slurm queued job {job_id} but would not release it ({_quoted(done.stderr)}); it was "
                        "cancelled. Nothing was left behind.")


def scancel(job_id: str, signal: str | None = None) -> tuple[bool, str]:
    """``scancel`` (``--signal`` only signals the job's steps): (whether Slurm took it, what happened)."""
    args = ["scancel", *([f"--signal={signal}"] if signal else []), str(job_id)]
    if shutil.which("scancel") is None:
        return False, f"scancel is not on PATH here: cancel job {job_id} where Slurm is"
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=slurmq.TIMEOUT, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return False, f"scancel {job_id} did not answer within {slurmq.TIMEOUT:.0f}s"
    finally:
        slurmq.forget(job_id)
    if done.returncode != 0:
        return False, f"scancel {job_id} failed: {_quoted(done.stderr)}"
    return True, shlex.join(args)


def cancel(job_id: str, signal: str | None = None) -> str:
    return scancel(job_id, signal)[1]


def launch(spec: RunSpec, runs_dir: Path, options: SlurmOptions, dry_run: bool = False,
           resumed_from: str | None = None) -> Path:
    """Check, write the run dir and sbatch.sh, submit (unless ``dry_run``) and record the job id.

    A failure at any point removes the run dir: a run exists only once its job is queued (or, with
    ``dry_run``, once its script is written for review)."""
    import contextlib

    from runners.launch import launcher
    from runners.launch.preflight import check_all, check_runs_dir

    if not dry_run:
        find_sbatch()
    check_runs_dir(runs_dir)
    with contextlib.redirect_stdout(sys.stderr):  # library import chatter must not mix with our stdout
        check_all(spec)
    run_dir = launcher.create_run(spec, runs_dir, resumed_from)
    try:
        write_script(spec, run_dir, options)
        rundir.update_status(run_dir, scheduler="slurm", slurm_script=SCRIPT, slurm_options=options.to_json(),
                             nodes=spec.hardware.nodes)
        if not dry_run:
            job_id = submit(run_dir, specmod.redaction.secrets_env(spec.to_dict(), str(run_dir)))
            try:
                rundir.update_status(run_dir, slurm_job_id=job_id, submitted_at=time.time())
            except BaseException:
                cancel(job_id)
                raise
            release(job_id)
            slurmq.forget(job_id)
    except BaseException:
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    return run_dir


def record_start(run_dir: Path) -> None:
    """Run by sbatch.sh when the job starts: its id and nodes into status.json (a script submitted by hand, after
    ``--dry-run``, is known to ftui from then on)."""
    env = os.environ
    rundir.update_status(run_dir, scheduler="slurm", slurm_job_id=env.get("SLURM_JOB_ID"),
                         slurm_nodelist=env.get("SLURM_JOB_NODELIST"), slurm_started_at=time.time())


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "started":
        record_start(Path(argv[1]))
        return 0
    print("usage: python -m runners.launch.slurm started RUN_DIR  (run by sbatch.sh)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
