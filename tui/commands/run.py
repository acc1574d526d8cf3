"""`ftui run/demo/stop/checkpoint/kill/resume/runs`: launch and control detached runs.

Launching validates everything first (spec, model, data, cadence through the real
TrainingArguments), then writes the run dir and starts the job in its own session. `--headless`
follows it with a progress bar and exits with the run's exit code; Ctrl-C detaches and leaves the
run going. `--slurm` submits it to a Slurm cluster instead (runners/launch/slurm.py). Imports neither
Textual nor torch.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

from runners import paths, rundir, runstate
from runners import spec as specmod
from runners.errors import UserError
from runners.events import EVENTS_FILE, TailReader, iter_chunks
from runners.launch import control
from runners.watch.history import RunHistory, listed_duration
from tui.format import clock

ASSETS = paths.ASSETS
DEMO_SPECS = {"hf_trainer": "demo.yaml", "simpletransformers": "demo_simpletransformers.yaml",
              "sentence_transformers": "demo_sentence_transformers.yaml", "sft": "demo_sft.yaml"}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UserError(f"{message}. Run '{self.prog} --help' for its options.")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs-dir", help="where runs live (default: $FTUI_RUNS_DIR or ./runs)")


def _launch_flags(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument("--headless", action="store_true", help="follow the run with a progress bar instead of the dashboard")
    p.add_argument("--detach", action="store_true", help="start the run and return at once")
    p.add_argument("--strategy", choices=list(specmod.STRATEGIES))
    p.add_argument("--num_processes", type=int, help="processes per node (GPUs, or CPU processes without GPUs)")
    p.add_argument("--master-addr", metavar="HOST", help="a multi-node run (hardware.nodes > 1): node 0's name or "
                   "address, which the other nodes reach (default: $FTUI_MASTER_ADDR, else this machine's name)")
    p.add_argument("--master-port", type=int, metavar="PORT", help="a multi-node run: the port node 0 listens on for "
                   "the other nodes (default: $FTUI_MASTER_PORT, else a free one)")
    slurm = p.add_argument_group("Slurm", "submit the run to a Slurm cluster instead of starting it on this machine")
    slurm.add_argument("--slurm", action="store_true", help="write RUN/sbatch.sh (hardware.nodes nodes, one task each) "
                       "and submit it with sbatch; the run is pending while queued")
    slurm.add_argument("--partition", help="sbatch --partition")
    slurm.add_argument("--time", help="sbatch --time (the job's time limit, e.g. 4:00:00)")
    slurm.add_argument("--account", help="sbatch --account")
    slurm.add_argument("--qos", help="sbatch --qos")
    slurm.add_argument("--sbatch-arg", action="append", default=[], metavar="OPTION",
                       help="any other sbatch option, passed as it is; repeatable: --sbatch-arg=--mem=64G")
    slurm.add_argument("--dry-run", action="store_true", help="with --slurm: write the run dir and sbatch.sh and print "
                       "the script, without submitting it")


def parser_for(command: str) -> argparse.ArgumentParser:
    p = _Parser(prog=f"ftui {command}")
    if command == "run":
        p.add_argument("spec", help="run spec YAML")
        _launch_flags(p)
    elif command == "demo":
        _launch_flags(p)
        p.add_argument("--runner", choices=list(DEMO_SPECS), default="hf_trainer")
    elif command == "resume":
        p.add_argument("run", help="run id, unique part of it, path, or 'latest'")
        _launch_flags(p)
        p.add_argument("--num_train_epochs", type=float, metavar="EPOCHS",
                       help="train to this many epochs in all (to train a finished run further)")
        p.add_argument("--max_steps", type=int, metavar="STEPS",
                       help="train to this many optimizer steps in all (overrides the epochs)")
    elif command == "runs":
        _common(p)
        p.add_argument("--json", action="store_true", help="a list of objects: id, state, runner, step, max_steps, "
                       "best, held_out (the newest ftui eval result), duration_s, started, path, slurm_job_id and slurm "
                       "(a Slurm run's queue state)")
        p.add_argument("--wide", action="store_true", help="every column (runner, start time, path)")
    else:
        p.add_argument("run", help="run id, unique part of it, path, or 'latest'")
        _common(p)
        if command == "stop":
            p.add_argument("--wait", type=float, metavar="SECONDS", help="wait for the stop, then kill if it has not happened")
        if command == "kill":
            p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    return p


def find(runs_dir: Path, ref: str) -> Path:
    found = rundir.find_run(runs_dir, ref)
    if found is None:
        known = ", ".join(p.name for p in rundir.list_runs(runs_dir)[:5]) or "none"
        raise UserError(f"No run matches '{ref}' in {runs_dir} (recent runs: {known}). Give a run id, a unique part of "
                        "it, a run dir path, or 'latest'; --runs-dir chooses the runs dir.")
    return found


def follow(run_dir: Path) -> int:
    """Rich progress until the run ends; returns its exit code (Ctrl-C detaches)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console()
    reader, history = TailReader(run_dir / EVENTS_FILE), RunHistory()
    console.print(f"[bold]run[/] {run_dir.name}  (dir {run_dir})\n  log: {run_dir / rundir.LOG_FILE}\n"
                  f"  stop: ftui stop {run_dir.name}   checkpoint: ftui checkpoint {run_dir.name}")
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
               TimeRemainingColumn())
    try:
        with Progress(*columns, console=console, transient=False) as progress:
            task = progress.add_task("starting", total=None, info="")
            while True:
                history.apply(reader.poll())
                status = runstate.effective_status(run_dir) or {}  # an end is seen even if the supervisor died
                info = []
                if "loss" in history.latest:
                    info.append(f"loss {history.latest['loss']:.4f}")
                if history.evals:
                    metrics = history.evals[-1]["metrics"]
                    key = next((k for k in metrics if k not in ("eval_loss", "eval_runtime", "epoch") and "per_second" not in k
                                and "runtime" not in k), "eval_loss")
                    info.append(f"{key} {metrics.get(key, float('nan')):.4f}")
                if history.best:
                    info.append(f"best@{history.best['step']}")
                progress.update(task, description=history.state if history.step else
                                runstate.shown_state(status) if status else "starting",
                                total=history.max_steps, completed=history.step, info="  ".join(info))
                if status.get("state") in rundir.TERMINAL_STATES:
                    history.apply(reader.poll())
                    break
                time.sleep(0.5)
    except KeyboardInterrupt:
        console.print(f"\ndetached: the run goes on. Watch it again with: ftui attach {run_dir}")
        return 0
    status = runstate.effective_status(run_dir) or {}
    state = status.get("state")
    colour = {"finished": "green", "stopped": "yellow"}.get(str(state), "red")
    console.print(f"[{colour}]{state}[/] after {history.step} steps" + (f": {status['error']}" if status.get("error") else ""))
    if history.best:
        best = history.best
        console.print(f"best {best['metric']} = {best['value']} at step {best['step']}: {best['checkpoint']}")
    return int(status.get("exit_code") or 0) if state != "stopped" else 0


def _open_or_follow(run_dir: Path, args: argparse.Namespace) -> int:
    if args.detach:
        print(run_dir)
        return 0
    if not args.headless:
        try:
            from tui.commands.ui import open_run
        except ImportError:
            pass
        else:
            if sys.stdout.isatty():
                return int(open_run(run_dir) or 0)
    return follow(run_dir)


def main(command: str, argv: list[str]) -> int:
    args = parser_for(command).parse_args(argv)
    runs_dir = rundir.default_runs_dir(getattr(args, "runs_dir", None))
    if command in ("run", "demo", "resume"):
        from runners.launch import launcher, multinode

        resumed_from = None
        if command == "run":
            spec = specmod.load(args.spec)
        elif command == "demo":
            spec = specmod.load(ASSETS / "specs" / DEMO_SPECS[args.runner])
        else:
            old = find(runs_dir, args.run)
            notes: list[str] = []
            spec = control.resume_spec(old, num_train_epochs=args.num_train_epochs, max_steps=args.max_steps, notes=notes)
            resumed_from = old.name
            for note in notes:
                print(f"ftui resume: {note}", file=sys.stderr)
            print(f"ftui resume: from {spec.training['resume_from_checkpoint']}", file=sys.stderr)
        spec = launcher.apply_overrides(spec, args.strategy, args.num_processes)
        if args.slurm or args.dry_run or args.partition or args.time or args.account or args.qos or args.sbatch_arg:
            return _submit(command, spec, runs_dir, resumed_from, args)
        rdzv = multinode.for_run(spec.hardware.nodes, args.master_addr, args.master_port)
        run_dir = launcher.launch(spec, runs_dir, resumed_from=resumed_from, rdzv=rdzv)
        for line in multinode.announce(run_dir, spec.hardware.nodes, rdzv) if rdzv else []:
            print(f"ftui {command}: {line}", file=sys.stderr)
        return _open_or_follow(run_dir, args)
    if command == "runs":
        return list_runs(runs_dir, args.json, args.wide)
    run_dir = find(runs_dir, args.run)
    if command == "stop":
        grace = args.wait
        if grace is None and (rundir.read_status(run_dir) or {}).get("slurm_job_id"):
            from runners.launch import slurm

            grace = float(slurm.STOP_GRACE_SECONDS)  # a job on the cluster: scancel if the stop stalls
            print(f"ftui stop: asking {run_dir.name} to stop; waiting up to {grace:.0f}s for its checkpoint and end, then "
                  "scancel (--wait SECONDS changes it)", file=sys.stderr, flush=True)
        print(control.stop(run_dir, timeout=grace, escalate=grace is not None))
    elif command == "checkpoint":
        print(control.checkpoint(run_dir))
    elif command == "kill":
        if not args.yes:
            if not sys.stdin.isatty():
                raise UserError("ftui kill needs confirmation: pass --yes (a graceful, checkpointed stop is 'ftui stop').")
            if input(f"Kill run {run_dir.name} without a checkpoint? [y/N] ").strip().lower() != "y":
                print("not killed")
                return 1
        print(control.kill(run_dir))
    return 0


def _submit(command: str, spec: specmod.RunSpec, runs_dir: Path, resumed_from: str | None, args: argparse.Namespace) -> int:
    """``--slurm``: the run dir and sbatch.sh, submitted (or, with --dry-run, printed for review)."""
    from runners.launch import slurm

    if not args.slurm:
        raise UserError("--partition, --time, --account, --qos, --sbatch-arg and --dry-run are for a Slurm job: add "
                        f"--slurm (ftui {command} ... --slurm --partition P).")
    if args.master_addr or args.master_port:
        raise UserError("--master-addr and --master-port place the nodes of a run started by hand; under --slurm the "
                        "first node Slurm allocates hosts the rendezvous. Leave them out.")
    options = slurm.SlurmOptions(partition=args.partition, time=args.time, account=args.account, qos=args.qos,
                                 extra=list(args.sbatch_arg))
    run_dir = slurm.launch(spec, runs_dir, options, dry_run=args.dry_run, resumed_from=resumed_from)
    script = run_dir / slurm.SCRIPT
    if args.dry_run:
        sys.stdout.write(script.read_text())
        print(f"ftui {command}: wrote {script} (not submitted). Submit it as it is with: sbatch {script}", file=sys.stderr)
        return 0
    job = (rundir.read_status(run_dir) or {}).get("slurm_job_id")
    print(f"ftui {command}: submitted Slurm job {job} ({script}); the run is pending while it is queued",
          file=sys.stderr)
    return _open_or_follow(run_dir, args)


def run_rows(runs_dir: Path) -> list[dict[str, Any]]:
    """One JSON-ready object per run, newest first: what `ftui runs --json` prints."""
    rows: list[dict[str, Any]] = []
    for path in rundir.list_runs(runs_dir):
        status = runstate.effective_status(path) or {}  # reconciled: the same state every reader shows
        history = RunHistory()
        for chunk in iter_chunks(path / EVENTS_FILE):  # the whole file, however long
            history.apply(chunk)
        start = status.get("started_at")
        duration = listed_duration(history.started_at, history.last_event_at, status, time.time())  # as the runs screen
        started = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(start)) if start else None
        rows.append({"id": path.name, "run": path.name, "state": status.get("state"), "runner": status.get("runner"),
                     "step": history.step, "max_steps": history.max_steps, "best": history.best,
                     "held_out": held_out(path),
                     "duration_s": round(duration, 1) if duration is not None else None, "started": started, "path": str(path),
                     "orphaned": bool(status.get("orphaned")), "error": status.get("error"),
                     "note": status.get("note"), "shown_state": runstate.shown_state(status),
                     "slurm_job_id": status.get("slurm_job_id"), "slurm": status.get("slurm")})
    return rows


def held_out(run_dir: Path) -> dict[str, Any] | None:
    """The newest `ftui eval` result of a run, in short: its ranking metric, checkpoint, file and record."""
    from runners.results import evaluate

    content = evaluate.latest(run_dir)
    top = evaluate.headline(content) if content else None
    if content is None or top is None:
        return None
    return {"metric": top[0], "value": top[1], "checkpoint": (content.get("checkpoint") or {}).get("name"),
            "data": (content.get("data") or {}).get("path"), "created_at": content.get("created_at"),
            "record": content["file"]}


NARROW = ("id", "state", "step", "best", "duration")
WIDE = ("id", "state", "runner", "step", "best", "duration", "started", "path")
FOLDED = {"runner": 10, "best": 8, "held-out": 8, "started": 10, "path": 16}  # folded columns: their narrowest


def _cells(r: dict[str, Any]) -> dict[str, str]:
    best = r["best"]
    return {"id": r["id"], "state": r["shown_state"],
            "runner": str(r["runner"] or ""), "step": f"{r['step']}/{r['max_steps'] or '?'}",
            "best": f"{str(best['metric']).removeprefix('eval_')}={best['value']:.4g}"
            if best and best.get("value") is not None else "",
            "held-out": f"{r['held_out']['metric'].removeprefix('eval_')}={r['held_out']['value']:.4g}" if r["held_out"] else "",
            "duration": clock(r["duration_s"]) if r["duration_s"] is not None else "",
            "started": (r["started"] or "")[:16].replace("T", " "), "path": r["path"]}


def fit_widths(natural: dict[str, int], room: int) -> dict[str, int]:
    """Column widths within ``room``: only the FOLDED columns give way, each down to its narrowest."""
    widths = dict(natural)
    while sum(widths.values()) > room:
        shrinkable = [c for c in widths if c in FOLDED and widths[c] > min(natural[c], FOLDED[c])]
        if not shrinkable:
            break
        widest = max(shrinkable, key=lambda c: widths[c])
        widths[widest] -= 1
    return widths


def list_runs(runs_dir: Path, as_json: bool, wide: bool = False) -> int:
    """The runs as a table whose ids are never cut (every other command takes one) or as JSON."""
    import json

    rows = run_rows(runs_dir)
    if as_json:
        print(json.dumps(rows, indent=1))
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console()
    columns: tuple[str, ...] = WIDE if wide else NARROW
    if any(r["held_out"] for r in rows):  # a held-out column once any run has an ftui eval result
        at = columns.index("best") + 1
        columns = (*columns[:at], "held-out", *columns[at:])
    cells = [_cells(r) for r in rows]
    widths = fit_widths({c: max([len(c)] + [len(row[c]) for row in cells]) for c in columns},
                        console.width - 3 * len(columns) - 1)
    table = Table(title=f"runs in {runs_dir}")
    for col in columns:  # ids, states, steps and durations whole; the longer texts fold into lines
        table.add_column(col, width=widths[col], **({"overflow": "fold"} if col in FOLDED else {"no_wrap": True}))
    for row in cells:
        table.add_row(*(row[c] for c in columns))
    # when even folded columns do not fit, the table is printed wider than the terminal (its lines wrap)
    # rather than cutting an id: every other command takes one
    needed = sum(widths.values()) + 3 * len(columns) + 1
    if needed > console.width:
        console = Console(width=needed)
    console.print(table)
    if not rows:
        console.print(f"No runs in {runs_dir} yet: 'ftui demo' trains the bundled demo, 'ftui run SPEC' a spec.")
    return 0
