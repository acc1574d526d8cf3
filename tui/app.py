"""The ftui dashboard application: screens, global keys, telemetry, and launching.

Built through :func:`make_app` so tests hand it what cannot be real on a CPU machine (a fake NVML
inside a real :class:`Telemetry`) and a frozen clock; a live run, an attached job and a recorded
events file differ only in the source given to the monitor. Launching runs `ftui run --detach` as a
subprocess: the checks it does import transformers, which must never load into this process.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual import work
from textual.app import App
from textual.binding import Binding

from runners import rundir
from tui.messages import Launched

if TYPE_CHECKING:  # types only: the UI imports a source's module when one is opened, telemetry on first use
    from runners.watch.sources import Source
    from runners.watch.telemetry import Telemetry

ROOT = Path(__file__).resolve().parent.parent
LAUNCH_TIMEOUT = 300


class FtuiApp(App[int]):
    """Runs list, setup with plan preview, and one monitor per opened run."""

    CSS_PATH = "app.tcss"
    TITLE = "ftui"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("question_mark,f1", "help", "Help"),
        Binding("ctrl+l", "toggle_theme", "Light/dark", show=False),
    ]

    def __init__(self, runs_dir: Path, source: Source | None = None, telemetry: Telemetry | None = None,
                 setup_spec: Any = None, setup_spec_path: str = "", clock: Callable[[], float] = time.time,
                 light: bool = False, start: str = "runs") -> None:
        super().__init__()
        self.runs_dir = runs_dir
        self.initial_source = source
        self.setup_spec = setup_spec
        self.setup_spec_path = setup_spec_path
        self.start = start
        self.clock = clock
        self._telemetry = telemetry
        self._telemetry_lock = threading.Lock()
        self._launch_done: Callable[[bool], None] | None = None
        self._launch_tmp: Path | None = None
        if light:
            self.theme = "textual-light"

    def telemetry(self) -> Telemetry:
        """The shared Telemetry, created on first use (NVML init happens in a worker thread)."""
        with self._telemetry_lock:
            if self._telemetry is None:
                from runners.watch.telemetry import Telemetry

                self._telemetry = Telemetry()
            return self._telemetry

    def on_mount(self) -> None:
        from tui.screens.runs import RunsScreen

        self.push_screen(RunsScreen(self.runs_dir))
        if self.initial_source is not None:
            self.open_source(self.initial_source)
        elif self.start == "setup":
            self.action_new_run()

    # -- navigation --------------------------------------------------------------------------------

    def open_source(self, source: Source) -> None:
        from tui.screens.monitor import MonitorScreen

        self.push_screen(MonitorScreen(source))

    def open_run_dir(self, run_dir: Path) -> None:
        from runners.watch.sources import open_path

        self.open_source(open_path(Path(run_dir), "ftui"))

    def action_show_runs(self) -> None:
        from tui.screens.runs import RunsScreen

        while len(self.screen_stack) > 1 and not isinstance(self.screen, RunsScreen):
            self.pop_screen()
        if not isinstance(self.screen, RunsScreen):
            self.push_screen(RunsScreen(self.runs_dir))

    def action_new_run(self) -> None:
        from tui.screens import setup_fields
        from tui.screens.setup import SetupScreen

        spec = self.setup_spec or setup_fields.new_spec()  # a new run's defaults, never the demo's settings
        self.push_screen(SetupScreen(spec, spec_path=self.setup_spec_path, new_run=self.setup_spec is None))

    def action_help(self) -> None:
        from tui.screens.dialogs import HelpScreen

        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.screen))

    def action_toggle_theme(self) -> None:
        self.theme = "textual-dark" if self.theme == "textual-light" else "textual-light"

    # -- launching ---------------------------------------------------------------------------------

    def launch(self, args: list[str], on_done: Callable[[bool], None] | None = None) -> None:
        """`ftui <args> --detach` in a subprocess; the result arrives as a Launched message."""
        self._launch_done = on_done
        self._launch(args)

    def launch_spec(self, spec: Any, on_done: Callable[[bool], None] | None = None) -> None:
        """Launch a RunSpec: written to a temporary file for `ftui run`, removed when it answered."""
        from runners import spec as specmod

        fd, name = tempfile.mkstemp(prefix="ftui-spec-", suffix=".yaml")
        os.close(fd)
        self._launch_tmp = Path(name)
        specmod.save(spec, self._launch_tmp)
        self.launch(["run", name], on_done)

    @work(thread=True, exclusive=True, group="launch")
    def _launch(self, args: list[str]) -> None:
        command = [sys.executable, "-m", "tui", *args, "--detach", "--runs-dir", str(self.runs_dir)]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT, cwd=ROOT,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            self.post_message(Launched(None, f"the launcher did not answer within {LAUNCH_TIMEOUT}s"))
            return
        # the run dir is printed, but libraries may print after it on the same line: find the path itself
        found = re.search(re.escape(str(self.runs_dir)) + r"/[A-Za-z0-9_.-]+", done.stdout)
        run_dir = Path(found.group(0)) if done.returncode == 0 and found else None
        if run_dir is None or not rundir.is_run_dir(run_dir):
            error = done.stderr.strip().splitlines()
            self.post_message(Launched(None, error[-1] if error else f"launcher exited with {done.returncode}"))
            return
        self.post_message(Launched(run_dir, None))

    def on_launched(self, message: Launched) -> None:
        if self._launch_tmp is not None:
            self._launch_tmp.unlink(missing_ok=True)
            self._launch_tmp = None
        done, self._launch_done = self._launch_done, None
        if done is not None:
            done(message.run_dir is not None)
        if message.run_dir is None:
            self.notify(message.error or "launch failed", title="launch failed", severity="error", timeout=15)
            return
        self.notify(f"launched {message.run_dir.name}")
        self.action_show_runs()
        self.open_run_dir(message.run_dir)


def make_app(runs_dir: Path | str | None = None, source: Source | None = None, telemetry: Telemetry | None = None,
             setup_spec: Any = None, setup_spec_path: str = "", clock: Callable[[], float] = time.time,
             light: bool = False, start: str = "runs") -> FtuiApp:
    """The dashboard with its dependencies injected (tests: a fake-NVML telemetry, a frozen clock)."""
    return FtuiApp(rundir.default_runs_dir(str(runs_dir) if runs_dir else None), source=source, telemetry=telemetry,
                   setup_spec=setup_spec, setup_spec_path=setup_spec_path, clock=clock, light=light, start=start)
