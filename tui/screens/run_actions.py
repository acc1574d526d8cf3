"""What the runs list does to the run under the cursor: view its spec, clone it, resume, archive, delete.

:class:`RunActionsMixin` is mixed into :class:`tui.screens.runs.RunsScreen`, which provides
``chosen()`` (the selected run's row, or None after saying why), ``start_launch(args, label)`` (an
`ftui` launch with a placeholder row) and ``action_rescan``. Archive and delete ask first and refuse a
live run: its supervisor still writes into the dir. Resume is `ftui resume RUN` (a new run from the
newest complete checkpoint, see runners.launch.control.resume_spec), in a subprocess like every launch.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runners import rundir, runstate
from runners.errors import UserError

if TYPE_CHECKING:
    from textual.screen import Screen

    _ScreenBase = Screen[None]
else:  # a plain mixin at run time: it adds no class to the screen's CSS type chain
    _ScreenBase = object

def clone_name(name: str) -> str:
    """A new run's name for a copy: ``demo`` -> ``demo-clone``, ``demo-clone`` -> ``demo-clone2``."""
    stem, _, n = name.rpartition("-clone")
    if stem and (n == "" or n.isdigit()):
        return f"{stem}-clone{int(n or 1) + 1}"
    return f"{name}-clone"


class RunActionsMixin(_ScreenBase):
    def chosen(self) -> dict[str, Any] | None:
        raise NotImplementedError  # provided by the screen

    def start_launch(self, args: list[str], label: str) -> None:
        raise NotImplementedError  # provided by the screen

    def action_rescan(self) -> None:
        raise NotImplementedError  # provided by the screen

    def action_view_spec(self) -> None:
        from tui.screens.log_view import RunFilesScreen

        row = self.chosen()
        if row is not None:
            self.app.push_screen(RunFilesScreen(row["path"]))

    def action_clone(self) -> None:
        """The setup screen on a copy of the run's spec under a new name (secrets stay redacted: set them again)."""
        from runners import spec as specmod
        from tui.screens.setup import SetupScreen

        row = self.chosen()
        if row is None:
            return
        try:
            spec = specmod.load(row["path"] / rundir.SPEC_FILE)
        except (UserError, OSError) as exc:
            self.notify(f"Cannot clone {row['run']}: {exc}", severity="error", timeout=10)
            return
        self.app.push_screen(SetupScreen(replace(spec, name=clone_name(spec.name))))

    def action_resume(self) -> None:
        row = self.chosen()
        if row is None:
            return
        if runstate.is_live(row["path"]):
            self.notify(f"{row['run']} is still running: nothing to resume.", severity="warning")
            return
        self.start_launch(["resume", str(row["path"])], f"resume of {row['run']}")

    def action_archive(self) -> None:
        self._remove(archive=True)

    def action_delete(self) -> None:
        self._remove(archive=False)

    def _remove(self, archive: bool) -> None:
        from tui.screens.dialogs import ConfirmScreen

        row = self.chosen()
        if row is None:
            return
        path: Path = row["path"]
        verb = "archive" if archive else "delete"
        if runstate.is_live(path):
            self.notify(f"{row['run']} is {runstate.state(path)}: a live run is never {verb}d. Stop it first "
                        f"(s on its monitor, or ftui stop {row['run']}).", severity="error", timeout=10)
            return
        question = (f"Archive run {row['run']}?\nIt moves to {path.parent / rundir.ARCHIVE_DIR}/ (out of this list, "
                    "kept whole)." if archive else
                    f"Delete run {row['run']}?\n{path} is removed with its checkpoints. This cannot be undone.")

        def answered(yes: bool | None) -> None:
            if not yes:
                return
            try:
                if archive:
                    where = rundir.archive_run(path)
                    self.notify(f"archived {row['run']} to {where}")
                else:
                    rundir.delete_run(path)
                    self.notify(f"deleted {row['run']}")
            except OSError as exc:
                self.notify(f"Could not {verb} {row['run']}: {exc}", severity="error", timeout=10)
            self.action_rescan()

        self.app.push_screen(ConfirmScreen(question), answered)
