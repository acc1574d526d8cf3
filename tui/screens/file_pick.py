"""A file picker for datasets: a directory tree that shows only CSV/TSV/JSONL/JSON/parquet files."""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DirectoryTree, Static

from runners.data import FILE_TYPES
from tui.widgets.footer import Footer


class DataTree(DirectoryTree):
    """Directories and dataset files only; hidden entries left out."""

    def filter_paths(self, paths: Iterable[Path]) -> Iterable[Path]:
        return [p for p in paths if not p.name.startswith(".")
                and (p.is_dir() or p.suffix.lower() in FILE_TYPES)]


class FilePickScreen(ModalScreen[Path | None]):
    """Returns the chosen file, or None on escape; backspace goes up to the parent folder (the data may live
    beside the working directory, not below it)."""

    BINDINGS = [Binding("escape", "cancel", "Cancel"), Binding("backspace,u", "parent", "Parent folder")]

    def __init__(self, start: Path) -> None:
        super().__init__()
        self.start = start.resolve()

    def _title(self) -> str:
        return f"choose a dataset file under {self.start} (enter selects, backspace: parent folder)"

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="wide"):
            yield Static(self._title(), id="pick-title", classes="screen-title")
            yield DataTree(self.start, id="tree")
            yield Footer()

    def action_parent(self) -> None:
        if self.start.parent == self.start:
            self.notify(f"{self.start} is the top folder.", severity="warning")
            return
        self.start = self.start.parent
        self.query_one(DataTree).path = self.start
        self.query_one("#pick-title", Static).update(self._title())

    def on_directory_tree_file_selected(self, event: DirectoryTree.FileSelected) -> None:
        self.dismiss(event.path)

    def action_cancel(self) -> None:
        self.dismiss(None)
