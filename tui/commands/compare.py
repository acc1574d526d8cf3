"""`ftui compare RUN RUN [...] [--json] [--by step|samples|tokens]`: runs side by side.

Each RUN resolves like `ftui attach`'s target (an ftui run id, a unique part of it, 'latest', or a path to a
run dir, a Trainer output dir, a TensorBoard or wandb dir); the comparison itself is
runners.results.compare's. Prints the runs' best and last metrics, duration and peak memory, the train loss
of all runs at the same steps (or samples or tokens seen), and the spec keys that differ. The table rows
are built here for the dashboard's compare view too. Imports neither Textual nor torch.
"""
from __future__ import annotations

import json
import sys
from typing import Any

from runners import rundir
from runners.results.compare import AXES, ComparedRun, Comparison, compare
from tui.commands.run import _common, _Parser
from tui.format import clock


def _parser() -> _Parser:
    p = _Parser(prog="ftui compare", description="Compare runs: curves on one axis, best metrics, duration, peak "
                "memory and the spec keys that differ. A run is an ftui run id (or a unique part of it, or 'latest') "
                "or a path to an ftui run dir, a Trainer output dir, a TensorBoard or a wandb dir.")
    p.add_argument("runs", nargs="*", metavar="RUN", help="two or more runs")
    p.add_argument("--json", action="store_true", help="the comparison as JSON: runs (curves, best, last eval, duration, "
                   "peak memory, batch), aligned values, spec_diff, notes")
    p.add_argument("--by", choices=AXES, default="step", help="the x axis of the curves: optimizer steps, samples "
                   "seen (step x global batch) or tokens seen (default: step)")
    _common(p)
    return p


def fmt_number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else "-" if value is None else str(value)


def fmt_memory(run: ComparedRun) -> str:
    peak, kind = run.peak_memory()
    if peak is None:
        return "-"
    size = f"{peak / 2**30:.1f} GiB" if peak >= 2**30 else f"{peak / 2**20:.0f} MiB"
    return f"{size} {kind}"


def best_text(run: ComparedRun) -> str:
    best = run.history.best
    if not best or not isinstance(best.get("value"), (int, float)):
        return "-"
    return f"{str(best.get('metric')).removeprefix('eval_')} {best['value']:.4g} @{best.get('step')}"


def run_fields(run: ComparedRun) -> dict[str, str]:
    steps = f"{run.history.step}/{run.history.max_steps}" if run.history.max_steps else str(run.history.step)
    return {"kind": run.kind, "state": run.state, "step": steps, "best": best_text(run),
            "last eval_loss": fmt_number(run.last_eval().get("eval_loss")), "last loss": fmt_number(run.last_loss()),
            "duration": clock(run.duration_s), "peak memory": fmt_memory(run),
            "global batch": fmt_number(run.settings.global_batch) if run.settings.global_batch else "unknown"}


def run_rows(comparison: Comparison) -> list[tuple[str, ...]]:
    """One row per fact (kind, state, best, ...), one column per run: what `ftui compare` and the compare view
    show (runs as columns, as in the spec diff, so that two runs fit in 80 columns)."""
    fields = [run_fields(run) for run in comparison.runs]
    return [(name, *(f[name] for f in fields)) for name in fields[0]] if fields else []


def diff_rows(comparison: Comparison) -> list[tuple[str, ...]]:
    """One row per differing spec key: the key, then each run's value as shown."""
    return [(key, *(comparison.diff_cell(run, key) for run in comparison.runs)) for key in comparison.spec_diff()]


def print_report(comparison: Comparison, by: str) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title="runs", title_justify="left")
    table.add_column("", no_wrap=True)
    for run in comparison.runs:
        table.add_column(run.label, overflow="fold")
    for row in run_rows(comparison):
        table.add_row(*row)
    console.print(table)
    metrics = comparison.metrics()
    if metrics:
        xs, values = comparison.aligned(metrics[0], by)
        aligned = Table(title=f"{metrics[0]} at the same {by}", title_justify="left")
        aligned.add_column("run", overflow="fold")
        for x in xs:
            aligned.add_column(f"{by} {x}", justify="right")
        for label, at_x in values.items():
            aligned.add_row(label, *(fmt_number(v) for v in at_x))
        console.print(aligned)
    diff = diff_rows(comparison)
    if diff:
        spec = Table(title="spec: the keys that differ", title_justify="left")
        spec.add_column("key", no_wrap=True)
        for run in comparison.runs:
            spec.add_column(run.label, overflow="fold")
        for row in diff:
            spec.add_row(*row)
        console.print(spec)
    else:
        console.print("spec: no key differs")
    for note in comparison.notes(by):
        console.print(f"note: {note}", highlight=False)


def main(command: str, argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    comparison = compare(args.runs, rundir.default_runs_dir(args.runs_dir))
    if args.json:
        sys.stdout.write(json.dumps(comparison.to_json(args.by), indent=1) + "\n")
    else:
        print_report(comparison, args.by)
    return 0
