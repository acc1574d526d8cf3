"""``ftui attach TARGET`` and ``ftui ps``: watch any training job, and list the ones on this machine.

``attach`` opens the dashboard on a source (tui.commands.ui, when installed) or, with ``--once``, prints
one snapshot (``--json``: the RunHistory snapshot plus source, state, processes and warnings).
``--stop`` signals a job ftui did not start; only ftui runs can stop gracefully after a checkpoint
(``ftui stop RUN``), so for those it points there instead. ``ps`` lists training jobs grouped by
launcher with their output dirs and GPU memory, then this user's Slurm training jobs (runners/watch/slurm.py;
a Slurm job id attaches like a PID). Neither imports torch, transformers or wandb
(a wandb source imports wandb's protobufs only when opened).
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

from runners import events as ev
from runners.errors import UserError
from runners.watch.history import RunHistory

TERMINAL = ("finished", "stopped", "crashed", "killed")
SIGNALS = {"INT": signal.SIGINT, "TERM": signal.SIGTERM}


def attach_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ftui attach", description=(
        "Watch a training job: an ftui run dir or run id, a Trainer / sentence-transformers / simpletransformers "
        "output dir, a TensorBoard log dir, a wandb run dir, a PID, or a Slurm job id (see 'ftui ps')."))
    p.add_argument("target", help="path, run id, PID, or Slurm job id (slurm:JOBID; a bare number that is no "
                   "training process here is tried as one)")
    p.add_argument("--once", action="store_true", help="print one snapshot and exit")
    p.add_argument("--json", action="store_true", help="with --once: the snapshot as JSON")
    p.add_argument("--runs-dir", help="where ftui run ids are looked up (default $FTUI_RUNS_DIR or ./runs)")
    p.add_argument("--stop", action="store_true", help="signal the job's process group (asks first)")
    p.add_argument("--signal", default="INT", type=str.upper, choices=sorted(SIGNALS),
                   help="signal for --stop (INT lets the Trainer exit its loop; TERM ends it)")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation with --stop")
    return p


def ps_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ftui ps", description="List training jobs on this machine, grouped by launcher, "
                                "and this user's Slurm training jobs (ftui's and others) when Slurm is here.")
    p.add_argument("--json", action="store_true", help="print the jobs as JSON")
    return p


def combined_state(history: RunHistory, status: dict[str, Any]) -> str:
    """Records say finished/crashed/stopped; otherwise the source's own view (process, file times)."""
    st = status.get("state") or "unknown"
    if st in ("killed",) or (st in TERMINAL and history.state not in TERMINAL):
        return st
    if history.state in TERMINAL:
        return history.state
    return st if st != "unknown" else "unknown"


def _processes(pids: list[int], telemetry: Any) -> list[dict[str, Any]]:
    gpu = telemetry.gpu_processes() if telemetry is not None else {}
    return [{"pid": pid, "gpu_memory": {str(k): v for k, v in gpu.get(pid, {}).items()}} for pid in pids]


def snapshot(source: Any, history: RunHistory | None = None, max_polls: int = 50) -> dict[str, Any]:
    """Poll until the source has nothing new (bounded), then the attach --once --json object."""
    from runners.watch.telemetry import Telemetry

    history = history or RunHistory(source=source.kind)
    for _ in range(max_polls):
        records = source.poll()
        if not records:
            break
        history.apply(records)
    status = source.status()
    snap = history.snapshot()
    telemetry = Telemetry()
    snap.update({
        "source": source.kind, "label": source.label, "state": combined_state(history, status),
        "processes": _processes(list(status.get("pids") or []), telemetry),
        "gpu_state": telemetry.gpu_state, "status": status, "warnings": list(source.warnings),
        "final_metrics": dict(history.final_metrics), "can_control": source.can_control,
    })
    telemetry.close()
    return ev._clean(snap)


def print_summary(snap: dict[str, Any]) -> None:
    out = sys.stdout
    steps = f"{snap['step']}/{snap['max_steps']}" if snap.get("max_steps") else str(snap["step"])
    out.write(f"{snap['label']} [{snap['source']}]: {snap['state']}, step {steps}")
    out.write(f", epoch {snap['epoch']:.2f}\n" if isinstance(snap.get("epoch"), (int, float)) else "\n")
    if snap["latest"]:
        out.write("  latest: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                          for k, v in snap["latest"].items()) + "\n")
    if snap["eval"]:
        last = snap["eval"][-1]
        out.write(f"  eval ({len(snap['eval'])}), last at step {last['step']}: " + ", ".join(
            f"{k}={v:.4g}" for k, v in last["metrics"].items() if isinstance(v, (int, float))) + "\n")
    if snap["best"]:
        b = snap["best"]
        out.write(f"  best: {b['metric']}={b['value']} at step {b['step']} ({b['checkpoint']})\n")
    for proc in snap["processes"]:
        out.write(f"  pid {proc['pid']}" + (f" gpu memory {proc['gpu_memory']}" if proc["gpu_memory"] else "") + "\n")
    for warning in snap["warnings"]:
        out.write(f"  warning: {warning}\n")


def open_monitor(source: Any) -> int | None:
    """Hand the source to the dashboard (tui.commands.ui.open_source); None when it is not installed."""
    try:
        import tui.commands.ui as cmd_ui
    except ImportError:
        return None
    entry = getattr(cmd_ui, "open_source", None)
    return int(entry(source) or 0) if callable(entry) else None


def stop(source: Any, signame: str, yes: bool) -> int:
    from runners.watch import procs

    if source.can_control:
        raise UserError(
            f"'{source.label}' is an ftui run: stop it gracefully, after a checkpoint, with 'ftui stop {source.label}' "
            f"(or 'ftui kill {source.label}' to end it now). --stop is for jobs ftui did not start.")
    if source.kind == "slurm":
        return stop_slurm(source, signame, yes)
    status = source.status()
    job = getattr(source, "job", None)
    if job is None:
        out_dir = status.get("output_dir") or status.get("log_dir") or status.get("run_dir")
        pids = set(status.get("pids") or []) | set(procs.processes_for_dir(out_dir) if out_dir else [])
        jobs = [j for j in procs.group(procs.scan()) if pids & set(j.pids)]
        job = jobs[0] if len(jobs) == 1 else None
        if job is None:
            raise UserError(f"No running process found for '{source.label}' ({out_dir}). Find its PID with "
                            f"'ftui ps' and run 'ftui attach PID --stop'.")
    sig = SIGNALS[signame]
    sys.stdout.write(
        f"Job {job.pid} ({job.launcher}, pids {', '.join(map(str, job.pids))}) was not started by ftui: "
        f"a graceful, checkpointed stop is only possible for ftui-launched runs. SIG{signame} goes to its "
        f"process group; the Trainer saves nothing on the way out, so progress since the last checkpoint is lost.\n")
    if not yes:
        if not sys.stdin.isatty():
            raise UserError("--stop needs confirmation and stdin is not a terminal: add --yes to send the signal.")
        if input(f"Send SIG{signame} to job {job.pid}? [y/N] ").strip().lower() not in ("y", "yes"):
            sys.stdout.write("Nothing sent.\n")
            return 1
    for line in procs.signal_job(job, sig):
        sys.stdout.write(line + "\n")
    left = procs.wait_gone(job.pids, 15.0)
    sys.stdout.write(f"Still running after 15 s: {left}. Try --signal TERM.\n" if left else "The job has ended.\n")
    return 0 if not left else 1


def stop_slurm(source: Any, signame: str, yes: bool) -> int:
    """--stop on a foreign Slurm job: scancel --signal=INT (the Trainer leaves its loop), or TERM: cancel it."""
    from runners.launch import slurm

    job_id = source.job.job_id
    sys.stdout.write(f"{source.label} was not started by ftui: a graceful, checkpointed stop is only possible for "
                     f"ftui-launched runs. " + ("SIGINT goes to its steps (scancel --signal=INT)" if signame == "INT" else
                                                 "It is cancelled (scancel)") + "; progress since the last checkpoint "
                     "is lost.\n")
    if not yes:
        if not sys.stdin.isatty():
            raise UserError("--stop needs confirmation and stdin is not a terminal: add --yes to send the signal.")
        if input(f"Stop Slurm job {job_id}? [y/N] ").strip().lower() not in ("y", "yes"):
            sys.stdout.write("Nothing sent.\n")
            return 1
    ok, done = slurm.scancel(job_id, "INT" if signame == "INT" else None)
    sys.stdout.write(done + "\n")
    return 0 if ok else 1


def attach(argv: list[str]) -> int:
    from runners.watch.sources import open_source

    args = attach_parser().parse_args(argv)
    if not args.target.strip():
        raise UserError("ftui attach needs a TARGET: a run dir, output dir, TensorBoard or wandb dir, or a PID.")
    source = open_source(args.target, args.runs_dir)
    if args.stop:
        return stop(source, args.signal, args.yes)
    if not args.once:
        if not sys.stdout.isatty():
            sys.stderr.write("ftui: stdout is not a terminal, so no dashboard; printing one snapshot "
                             "(ftui attach TARGET --once [--json]).\n")
        else:
            code = open_monitor(source)
            if code is not None:
                return code
            sys.stderr.write("ftui: the dashboard (tui.commands.ui) is not available in this install; "
                             "printing one snapshot instead (ftui attach TARGET --once).\n")
    snap = snapshot(source)
    if args.json:
        sys.stdout.write(json.dumps(snap, indent=1, default=str) + "\n")
    else:
        print_summary(snap)
    return 0


def _gib(n: int | None) -> str:
    return "N/A" if n is None else f"{n / 2**30:.1f}G"


def write_slurm_jobs(jobs: list[Any]) -> None:
    """`ftui ps`'s Slurm section: one line per job, ftui's (its run) and foreign (its output dir)."""
    for job in jobs:
        where = f"ftui run {Path(job.run_dir).name}" if job.run_dir else \
            f"output: {job.output_dir or '?'}" + (f" ({job.output_dir_from})" if job.output_dir else f" ({job.evidence})")
        sys.stdout.write(f"slurm job {job.job_id}  {job.state}" + (f" ({job.reason})" if job.reason else "")
                         + f"  {job.nodes or '?'} node(s) {job.nodelist or ''}  {job.name or ''}  {where}\n")
    if jobs:
        sys.stdout.write("Attach with: ftui attach slurm:JOBID\n")


def ps(argv: list[str]) -> int:
    from runners.watch import slurm
    from runners.watch.procs import find_jobs
    from runners.watch.telemetry import Telemetry

    args = ps_parser().parse_args(argv)
    telemetry = Telemetry()
    t0 = time.perf_counter()
    jobs, notes = find_jobs(telemetry)
    telemetry.close()
    queued = slurm.list_jobs() or []  # this user's Slurm training jobs (none without Slurm: the normal case)
    if args.json:
        sys.stdout.write(json.dumps({"jobs": [j.to_json() for j in jobs], "notes": notes,
                                     "slurm_jobs": [j.to_json() for j in queued],
                                     "scan_seconds": round(time.perf_counter() - t0, 3)}, indent=1) + "\n")
        return 0
    write_slurm_jobs(queued)
    if not jobs:
        sys.stdout.write("No training processes found on this machine.\n")
    for job in jobs:
        sys.stdout.write(f"job {job.pid}  {job.launcher}  {len(job.workers)} worker(s)  output: "
                         f"{job.output_dir or '?'}" + (f" ({job.output_dir_from})" if job.output_dir else "") + "\n")
        for proc in job.processes:
            gpus = " ".join(f"gpu{i}:{_gib(m)}" for i, m in sorted(proc.gpu_memory.items())) or "-"
            sys.stdout.write(f"  {proc.pid:>7} {proc.role:<10} {gpus:<14} {proc.command[:110]}\n")
    for note in notes:
        sys.stdout.write(f"note: {note}\n")
    if jobs:
        sys.stdout.write("Attach with: ftui attach PID\n")
    return 0


def main(command: str, argv: list[str]) -> int:
    return ps(argv) if command == "ps" else attach(argv)
