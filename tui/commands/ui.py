"""`ftui` / `ftui ui`: the dashboard; also the entry other commands use to show a run or a source.

Textual and the app are imported only here, after argument parsing, and nothing reachable from
this module imports torch, transformers or deepspeed (a test checks sys.modules).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

from runners.errors import UserError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UserError(f"{message}. Run 'ftui ui --help' for its options.")


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="ftui ui", description="The dashboard: runs, setup with a live plan, and live monitors.")
    p.add_argument("--runs-dir", help="where runs live (default: $FTUI_RUNS_DIR or ./runs)")
    p.add_argument("--spec", help="open the setup screen on this run spec")
    p.add_argument("--new", action="store_true", help="start on the setup screen (pre-filled with the demo)")
    p.add_argument("--run", help="open the monitor on this run dir (or attach target)")
    p.add_argument("--light", action="store_true", help="light theme (ctrl+l toggles)")
    return p


HEAVY = ("torch", "transformers", "deepspeed", "pandas")


def _run(app: Any) -> int:
    if not sys.stdout.isatty():
        raise UserError("The dashboard needs a terminal (stdout is not a TTY). For scripts use 'ftui runs', "
                        "'ftui attach TARGET --once --json' or 'ftui run --headless'.")
    result = app.run()
    return int(result or 0)


def main(command: str, argv: list[str]) -> int:
    args = parser().parse_args(argv)
    from tui.app import make_app

    setup_spec = None
    if args.spec:
        from runners import spec as specmod

        setup_spec = specmod.load(args.spec)
    source = None
    if args.run:
        from runners.watch.sources import open_source as resolve

        source = resolve(args.run, args.runs_dir)
    app = make_app(runs_dir=args.runs_dir, source=source, setup_spec=setup_spec, setup_spec_path=args.spec or "",
                   light=args.light, start="setup" if (args.new or args.spec) else "runs")
    return _run(app)


def open_run(run_dir: Path, runs_dir: Path | None = None) -> int:
    """The monitor on an ftui run dir (what `ftui run` / `ftui demo` show after launching).

    Launching validated the spec with transformers in this process; the dashboard must not carry
    that weight (start-up, memory), so it replaces this process with a fresh `ftui ui --run`.
    """
    run_dir = Path(run_dir)
    runs_dir = runs_dir or run_dir.parent
    if sys.stdout.isatty() and any(name.split(".")[0] in HEAVY for name in list(sys.modules)):
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, [sys.executable, "-m", "tui", "ui", "--run", str(run_dir), "--runs-dir", str(runs_dir)])
    from runners.watch.sources import open_path
    from tui.app import make_app

    return _run(make_app(runs_dir=runs_dir, source=open_path(run_dir, "ftui")))


def open_source(source: Any, runs_dir: Path | None = None) -> int:
    """The monitor on any Source (what `ftui attach TARGET` shows)."""
    from tui.app import make_app

    return _run(make_app(runs_dir=runs_dir, source=source))
