"""The monitor's actions: run control, the chart's step window and cursor, and the checkpoints' actions.

:class:`MonitorActionsMixin` is mixed into :class:`tui.screens.monitor.MonitorScreen`, which holds the
BINDINGS (so the footer and help list them), the source, the history and ``checkpoints_on_disk``, and
calls :meth:`MonitorActionsMixin.chart_view` when it redraws. Stop, checkpoint and kill are hidden once the
run has ended (``check_action``); zoom and pan narrow the charts to a step window; the cursor reads train
loss, eval loss and learning rate at one step.
"""
from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual import work
from textual.widgets import TabbedContent

from runners import paths, rundir
from runners.watch.history import RunHistory
from tui.widgets.chart import LineChart, fmt_step
from tui.widgets.panels import ENDED_STATES, CheckpointList

if TYPE_CHECKING:
    import threading

    from textual.screen import Screen

    from runners.watch.sources import Source

    _ScreenBase = Screen[None]
else:  # a plain mixin at run time: it adds no class to the screen's CSS type chain
    _ScreenBase = object

MIN_WINDOW = 8  # steps: the narrowest zoom
READOUT = (("loss", "train"), ("eval_loss", "eval"), ("learning_rate", "lr"))
EXPORT_TIMEOUT = 1800


class MonitorActionsMixin(_ScreenBase):
    """Actions of the monitor; the step window (``window``) and cursor (``cursor``) the charts show."""

    # provided by the screen
    source: Source
    run_dir: Path | None
    history: RunHistory
    history_lock: threading.Lock
    status: dict[str, Any]
    checkpoints_on_disk: dict[str, Path | None] | None
    window: tuple[int, int] | None
    cursor: int | None

    if TYPE_CHECKING:
        @property
        def state(self) -> str: ...

        def redraw(self) -> None: ...

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Stop, checkpoint and kill only while the run can take them: hidden once it has ended (kill stays
        while the source still reports live processes, as a run can hang after its last record)."""
        if action in ("stop", "checkpoint"):
            return self.state not in ENDED_STATES
        if action == "kill":
            return self.state not in ENDED_STATES or self.status.get("state") in ("running", "pending")
        return True

    # -- run control ------------------------------------------------------------------------------

    def _control_dir(self) -> Path | None:
        """The run dir to send control requests to, or None (with a notice) for a read-only source."""
        if self.run_dir is None or not self.source.can_control:
            self.notify("This source is read-only: only runs launched by ftui take stop/checkpoint requests.",
                        severity="warning")
            return None
        return self.run_dir

    def action_stop(self) -> None:
        run_dir = self._control_dir()
        if run_dir is not None:
            from runners.launch import control

            self.notify(control.stop(run_dir))

    def action_checkpoint(self) -> None:
        run_dir = self._control_dir()
        if run_dir is not None:
            from runners.launch import control

            self.notify(control.checkpoint(run_dir))

    def action_kill(self) -> None:
        run_dir = self._control_dir()
        if run_dir is None:
            return
        from tui.screens.dialogs import ConfirmScreen

        def answered(yes: bool | None) -> None:
            if yes:
                self._kill(run_dir)

        self.app.push_screen(ConfirmScreen(f"Kill run {self.source.label} now, without a checkpoint?\n"
                                           "(s stops gracefully after saving one.)"), answered)

    @work(thread=True, group="control")
    def _kill(self, run_dir: Path) -> None:
        from runners.launch import control

        result = control.kill(run_dir)
        self.app.call_from_thread(self.notify, f"kill: {result}")

    # -- views ------------------------------------------------------------------------------------

    def action_open_log(self) -> None:
        if self.run_dir is None:
            self.notify("This source has no log file ftui knows of.", severity="warning")
            return
        from tui.screens.log_view import LogScreen

        self.app.push_screen(LogScreen(self.run_dir / rundir.LOG_FILE))

    def action_view_files(self) -> None:
        if self.run_dir is None:
            self.notify("This source has no run dir: no launch.sh or spec.yaml to show.", severity="warning")
            return
        from tui.screens.log_view import RunFilesScreen

        self.app.push_screen(RunFilesScreen(self.run_dir))

    def action_log_scale(self) -> None:
        chart = self.query_one("#loss", LineChart)
        chart.log_scale = not chart.log_scale

    def action_smoothing(self) -> None:
        chart = self.query_one("#loss", LineChart)
        chart.smoothing = not chart.smoothing

    def action_tab(self, tab: str) -> None:
        """Show a tab and give its list the keys (up/down pick a checkpoint or an evaluation)."""
        self.query_one(TabbedContent).active = tab
        target = {"evals": "#eval-table", "checkpoints": "#checkpoint-list", "try": "#try-input"}.get(tab)
        if target:
            self.query_one(target).focus()

    def action_back(self) -> None:
        self.app.action_show_runs()  # type: ignore[attr-defined]

    # -- the chart's step window and cursor --------------------------------------------------------

    def _steps(self) -> tuple[int, int]:
        """The steps the run's series cover so far (first to last)."""
        with self.history_lock:
            series = [s for s in self.history.series.values() if s.buckets]
            if not series:
                return 0, max(1, self.history.step)
            return min(s.buckets[0].step_lo for s in series), max(s.buckets[-1].step_hi for s in series)

    def _set_window(self, lo: float, hi: float) -> None:
        first, last = self._steps()
        width = max(MIN_WINDOW, hi - lo)
        if width >= last - first:
            self.window = None
        else:
            lo = min(max(first, lo), last - width)
            self.window = (int(lo), int(lo + width))
        self.redraw()

    def action_zoom(self, factor: float) -> None:
        """Zoom in (factor < 1) or out around the cursor, else around the window's centre (the run's end)."""
        first, last = self.window or self._steps()
        centre = self.cursor if self.cursor is not None else (first + last) / 2 if self.window else last
        width = (last - first) * factor
        self._set_window(centre - width / 2, centre + width / 2)

    def action_pan(self, direction: int) -> None:
        if self.window is None:
            self.notify("The charts show the whole run: + zooms in first.", timeout=3)
            return
        lo, hi = self.window
        shift = max(1, (hi - lo) // 4) * direction
        self._set_window(lo + shift, hi + shift)

    def action_reset_view(self) -> None:
        self.window, self.cursor = None, None
        self.redraw()

    def action_move_cursor(self, direction: int) -> None:
        """One chart cell to the left or right; the window follows the cursor."""
        first, last = self._steps()
        lo, hi = self.window or (first, last)
        chart = self.query_one("#loss", LineChart)
        per_cell = max(1, (hi - lo) // max(1, chart.plot_width() // 2))
        start = self.cursor if self.cursor is not None else (hi if direction < 0 else lo)
        self.cursor = int(min(last, max(first, start + (direction * per_cell if self.cursor is not None else 0))))
        if self.window is not None and not lo <= self.cursor <= hi:
            shift = self.cursor - (hi if self.cursor > hi else lo)
            self._set_window(lo + shift, hi + shift)
            return
        self.redraw()

    def chart_view(self) -> tuple[tuple[int, int] | None, str]:
        """The window to draw and the cursor's readout (train loss, eval loss, LR at its step); under the
        history lock."""
        if self.cursor is None:
            return self.window, ""
        values = []
        for name, label in READOUT:
            series = self.history.series.get(name)
            value = series.value_at(self.cursor) if series is not None else None
            if value is not None:
                values.append(f"{label} {value:.4g}")
        return self.window, f"step {fmt_step(self.cursor)}: " + ("  ".join(values) or "no value yet")

    # -- checkpoints ------------------------------------------------------------------------------

    def _chosen_checkpoint(self) -> tuple[str, Path] | None:
        """The highlighted checkpoint of the Checkpoints tab and its folder now (a notice when none)."""
        self.action_tab("checkpoints")
        recorded = self.query_one(CheckpointList).selected_path()
        folder = (self.checkpoints_on_disk or {}).get(recorded) if recorded else None
        if recorded is None or folder is None:
            self.notify("No checkpoint on disk is highlighted (Checkpoints tab: up/down picks one).",
                        severity="warning")
            return None
        return recorded, folder

    def action_copy_checkpoint(self) -> None:
        chosen = self._chosen_checkpoint()
        if chosen is not None:
            self.app.copy_to_clipboard(str(chosen[1]))
            self.notify(f"copied to the clipboard: {chosen[1]}")

    def action_resume_checkpoint(self) -> None:
        """The setup, on this run's spec with training.resume_from_checkpoint set: ctrl+r there starts the
        new run. Without a spec (an attached job), the Trainer call that resumes from it."""
        chosen = self._chosen_checkpoint()
        if chosen is None:
            return
        folder = chosen[1]
        spec_file = self.run_dir / rundir.SPEC_FILE if self.run_dir is not None else None
        if spec_file is None or not spec_file.is_file():
            self.notify(f"No ftui spec for this source: resume it in its own script with "
                        f"trainer.train(resume_from_checkpoint={str(folder)!r})", timeout=15)
            return
        from runners import spec as specmod
        from tui.screens.setup import SetupScreen

        data = specmod.load(spec_file).to_dict()
        data["training"]["resume_from_checkpoint"] = str(folder)
        self.app.push_screen(SetupScreen(specmod.from_dict(data)))
        self.notify(f"setup with training.resume_from_checkpoint: {folder}\nctrl+r launches it as a new run "
                    f"(from a shell, ftui resume {self.run_dir.name if self.run_dir else ''} takes the newest).",
                    timeout=10)

    def export_command(self, folder: Path) -> list[str] | None:
        if self.run_dir is None or not (self.run_dir / rundir.SPEC_FILE).is_file():
            return None
        which = folder.name.removeprefix("checkpoint-")
        return ["ftui", "export", str(self.run_dir), "--checkpoint", which]

    def action_export_checkpoint(self) -> None:
        chosen = self._chosen_checkpoint()
        if chosen is None:
            return
        command = self.export_command(chosen[1])
        if command is None:
            self.notify(f"ftui export needs an ftui run dir; from_pretrained loads this folder as it is: "
                        f"{chosen[1]}", timeout=10)
            return
        from tui.screens.dialogs import ConfirmScreen

        text = shlex.join(command)

        def answered(yes: bool | None) -> None:
            if yes:
                self._export(command)
            else:
                self.app.copy_to_clipboard(text)
                self.notify(f"copied to the clipboard: {text}", timeout=8)

        self.app.push_screen(ConfirmScreen(f"Export {chosen[1].name} now?\n  {text}\n(y runs it; n copies the "
                                           "command)"), answered)

    @work(thread=True, group="export")
    def _export(self, command: list[str]) -> None:
        """ftui export in a subprocess: it reads weights with libraries the UI process never imports."""
        self.app.call_from_thread(self.notify, f"exporting: {shlex.join(command)}", timeout=5)
        try:
            done = subprocess.run([sys.executable, "-m", "tui", *command[1:]], capture_output=True, text=True,
                                  timeout=EXPORT_TIMEOUT, stdin=subprocess.DEVNULL, cwd=paths.ROOT)
        except subprocess.TimeoutExpired:
            self.app.call_from_thread(self.notify, f"export did not finish within {EXPORT_TIMEOUT}s",
                                      severity="error")
            return
        out = (done.stdout if done.returncode == 0 else done.stderr).strip()
        self.app.call_from_thread(self.notify, out[-600:] or f"export exited {done.returncode}",
                                  severity="information" if done.returncode == 0 else "error", timeout=15)
