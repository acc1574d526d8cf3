"""`ftui eval RUN --data FILE [--checkpoint best|latest|final|N|PATH] [--json]`: a run's metrics on a file it never saw.

Checks first, without a model (runners/results/evaluate.py): the run's checkpoint, the file read by the run's data
rules, its labels against the model's; a problem is a UserError (exit 2) and nothing is recorded. Then the worker
(``python -m runners.results.evaluate_worker``, the only process here that imports torch) evaluates with the
runner's own code, while a progress bar runs on stderr (not with --json, nor when stderr is not a terminal).
The result is written to ``RUN/evaluations/`` (the runs list and the monitor show it) and printed: the metrics
and, for classification, the confusion matrix; ``--json`` prints the record as one JSON object.
"""
from __future__ import annotations

import collections
import json
import subprocess
import sys
import threading
import time
from typing import IO, Any

from runners import rundir
from runners.errors import UserError
from runners.results import evaluate
from tui.commands.run import _common, _Parser, find

STDERR_LINES = 30


def _parser() -> _Parser:
    p = _Parser(prog="ftui eval", description="Evaluate a run's checkpoint on a held-out file: the run's own metrics, "
                "a confusion matrix for classification, perplexity for language models; recorded in the run dir.")
    p.add_argument("run", help="run id, unique part of it, path, or 'latest'")
    p.add_argument("--data", required=True, metavar="FILE", help="CSV, TSV, JSONL, JSON or parquet with the run's columns")
    p.add_argument("--checkpoint", metavar="best|latest|final|N|PATH",
                   help="which save: default the best the run marked, else final, else the last checkpoint")
    p.add_argument("--json", action="store_true", help="print the recorded result as one JSON object")
    _common(p)
    return p


class _Worker:
    """The evaluation process: protocol lines read as they come, the last lines of its stderr kept for a failure."""

    def __init__(self, prepared: evaluate.Prepared) -> None:
        command = [sys.executable, "-m", "runners.results.evaluate_worker", "--run-dir", str(prepared.run_dir),
                   "--data", str(prepared.data), "--checkpoint", str(prepared.checkpoint.path.resolve())]
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
        self.stderr: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
        assert self.proc.stderr is not None
        threading.Thread(target=self._drain, args=(self.proc.stderr,), daemon=True).start()

    def _drain(self, stream: IO[str]) -> None:
        for line in stream:
            self.stderr.append(line.rstrip())

    def messages(self) -> Any:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                yield json.loads(line)
            except ValueError:
                self.stderr.append(line.rstrip())

    def failure(self, error: str | None) -> str:
        code = self.proc.wait()
        tail = "\n".join(f"  {line}" for line in list(self.stderr)[-12:])
        return (f"the evaluation failed (worker exit {code}): {error or 'no result'}" + (f"\n{tail}" if tail else ""))


def run_worker(prepared: evaluate.Prepared, show: bool) -> dict[str, Any]:
    """The worker's result; a UserError for the user's problems, RuntimeError for the rest."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    worker = _Worker(prepared)
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=Console(stderr=True), transient=True, disable=not show)
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    try:
        with progress:
            task = progress.add_task(f"loading {prepared.checkpoint.name}", total=None)
            for message in worker.messages():
                if "done" in message:
                    progress.update(task, description=f"evaluating {prepared.data.name}", completed=message["done"],
                                    total=message["total"])
                elif "result" in message:
                    result = message["result"]
                elif "error" in message:
                    error = message
    except KeyboardInterrupt:
        worker.proc.terminate()
        worker.proc.wait()
        raise
    code = worker.proc.wait()
    if error is not None and error.get("user"):
        raise UserError(str(error["error"]))
    if result is None or code != 0:
        raise RuntimeError(worker.failure(error.get("error") if error else None))
    return result


def _print(content: dict[str, Any], path: str) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    data, ckpt = content["data"], content["checkpoint"]
    console.print(f"[bold]{content['run']}[/] · {ckpt['name']} ({ckpt['why']}) on {data['name']} "
                  f"({data['rows']:,} rows, {content['seconds']:.1f}s on {content['device']})")
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    table.add_column("metric")
    table.add_column("value", justify="right")
    primary = content.get("primary")
    for name, value in content["metrics"].items():
        label = name.removeprefix("eval_") + (" *" if name == primary else "")
        if name == "perplexity" and content.get("tokens"):
            label += f" (over {content['tokens']:,} tokens)"
        table.add_row(label, f"{value:.4g}")
    console.print(table)
    matrix = content.get("confusion_matrix")
    if matrix:
        console.print("confusion matrix (rows: true label, columns: predicted)")
        grid = Table(box=None)
        grid.add_column("")
        for name in matrix["labels"]:
            grid.add_column(name, justify="right")
        for name, row in zip(matrix["labels"], matrix["matrix"]):
            grid.add_row(name, *(str(n) for n in row))
        console.print(grid)
    console.print(f"* the run's ranking metric · recorded in {path}")


def main(command: str, argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    run_dir = find(rundir.default_runs_dir(args.runs_dir), args.run)
    prepared = evaluate.prepare(run_dir, args.data, args.checkpoint)
    for note in prepared.notes:
        print(f"ftui eval: {note}", file=sys.stderr)
    warning = evaluate.overlap_warning(prepared)
    if warning:
        print(f"ftui eval: warning: {warning}", file=sys.stderr)
    started = time.time()
    try:
        result = run_worker(prepared, show=not args.json and sys.stderr.isatty())
    except RuntimeError as exc:
        print(f"ftui eval: error: {exc}", file=sys.stderr)
        return 1
    path, content = evaluate.record(prepared, result, time.time() - started)
    if args.json:
        print(json.dumps({**content, "file": str(path)}, indent=1))
    else:
        _print(content, str(path))
    return 0
