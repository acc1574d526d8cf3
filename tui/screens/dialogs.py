"""Small screens over the others: confirmation, the full log, and help.

Help is generated from the BINDINGS of the screen below it and of the app, so it can never
disagree with the footer.
"""
from __future__ import annotations

from pathlib import Path

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, Footer, Log, Static

LOG_SCREEN_BYTES = 1024 * 1024  # the log screen shows at most the last MiB


class ConfirmScreen(ModalScreen[bool]):
    """Yes/no; y and n answer, escape is no."""

    BINDINGS = [Binding("y", "answer(True)", "Yes"), Binding("n,escape", "answer(False)", "No")]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(self.question, id="question")
            with Horizontal(id="buttons"):
                yield Button("Yes (y)", id="yes", variant="error")
                yield Button("No (n)", id="no", variant="primary")
            yield Footer()

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class LogScreen(Screen[None]):
    """The run's stdout.log, following new lines while open."""

    BINDINGS = [Binding("escape,q", "close", "Back"), Binding("f", "follow", "Follow")]

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self.read_offset = 0

    def compose(self) -> ComposeResult:
        yield Static(f"log · {self.path}", classes="screen-title")
        yield Log(id="log", max_lines=20_000, auto_scroll=True)
        yield Footer()

    def on_mount(self) -> None:
        self._read()
        self.set_interval(1.0, self._read)

    @work(thread=True, exclusive=True, group="log")
    def _read(self) -> None:
        try:
            size = self.path.stat().st_size
            with self.path.open("rb") as fh:
                if self.read_offset == 0 and size > LOG_SCREEN_BYTES:
                    self.read_offset = size - LOG_SCREEN_BYTES
                fh.seek(self.read_offset)
                data = fh.read()
        except OSError:
            return
        end = data.rfind(b"\n")
        if end < 0:
            return
        self.read_offset += end + 1
        text = data[: end + 1].decode("utf-8", "replace").replace("\r", "\n")
        self.app.call_from_thread(self.query_one(Log).write, text)

    def action_follow(self) -> None:
        log = self.query_one(Log)
        log.auto_scroll = True
        log.scroll_end(animate=False)

    def action_close(self) -> None:
        self.dismiss(None)


class HelpScreen(ModalScreen[None]):
    """Every key of the screen below and of the app, with what it does."""

    BINDINGS = [Binding("escape,q,question_mark,f1", "close", "Close")]

    def __init__(self, below: Screen) -> None:
        super().__init__()
        self.below = below

    def compose(self) -> ComposeResult:
        below = self.below
        lines = [f"[b]{getattr(below, 'HELP_TITLE', type(below).__name__)}: keys[/b]"]
        for binding in getattr(below, "BINDINGS", []):
            lines.append(self._line(binding))
        lines.append("\n[b]Everywhere[/b]")
        for binding in self.app.BINDINGS:
            lines.append(self._line(binding))
        lines.append("\nQuitting never stops a run: reopen it with ftui (runs list) or ftui attach.")
        with Vertical(id="dialog"):
            with VerticalScroll():
                yield Static("\n".join(lines), id="help-text")
            yield Footer()

    @staticmethod
    def _line(binding: BindingType) -> str:
        if not isinstance(binding, Binding):
            binding = Binding(*binding)
        keys = ", ".join(k.strip().replace("question_mark", "?") for k in binding.key.split(","))
        return f"  [b]{keys:<14}[/b] {binding.tooltip or binding.description or binding.action}"

    def action_close(self) -> None:
        self.dismiss(None)
