"""`ftui export RUN [--checkpoint best|last|final|N] [--merge] [--to DIR] [--force]`: a run's model, loadable.

Resolves RUN like stop/resume (an id, a unique part of it, a path or 'latest'), exports with
runners.results.export and prints what was written (path, size, kind) and how to load it. Imports
torch, transformers and peft only through the export, and only when there is something to merge or load.
"""
from __future__ import annotations

import sys

from runners import rundir
from runners.results import export as exportmod
from tui.commands.run import _common, _Parser, find


def _parser() -> _Parser:
    p = _Parser(prog="ftui export", description="Export a run's checkpoint: its LoRA adapter, the base with the adapter "
                "merged in (--merge), or a full fine-tune's model folder.")
    p.add_argument("run", help="run id, unique part of it, path, or 'latest'")
    _common(p)
    p.add_argument("--checkpoint", metavar="best|last|final|N",
                   help="which save: default the best the run marked, else final, else the last checkpoint")
    p.add_argument("--merge", action="store_true", help="merge the LoRA adapter into its base: a plain full model")
    p.add_argument("--to", metavar="DIR", help="where to write it (default RUN/export/<checkpoint>[-merged])")
    p.add_argument("--force", action="store_true", help="replace an existing, non-empty --to folder")
    return p


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


def main(command: str, argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    run_dir = find(rundir.default_runs_dir(args.runs_dir), args.run)
    result = exportmod.export(run_dir, args.checkpoint, merge=args.merge, to=args.to, force=args.force)
    for note in result.notes:
        print(f"ftui export: {note}", file=sys.stderr)
    what = {"adapter": "LoRA adapter", "merged": "full model (LoRA adapter merged into its base)",
            "full": "full model"}[result.kind]
    print(f"exported {result.checkpoint.name} of run {run_dir.name} ({result.checkpoint.why})\n"
          f"  path: {result.path}\n  size: {_human(result.size)} in {result.files} files\n  kind: {what}\n"
          f"  load: {result.load}")
    return 0
