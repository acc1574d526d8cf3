"""Small screens over the others: confirmation and help (the full log is in log_view.py).

Help is generated from the BINDINGS of the screen below it and of the app, so it can never
disagree with the footer.
"""
from __future__ import annotations

import string

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, Static

from tui.widgets.footer import Footer


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


class HelpScreen(ModalScreen[None]):
    """Every key of the screen below and of the app, with what it does."""

    BINDINGS = [Binding("escape,q,question_mark,f1", "close", "Close")]

    def __init__(self, below: Screen) -> None:
        super().__init__()
        self.below = below

    def compose(self) -> ComposeResult:
        below = self.below
        title = getattr(below, "HELP_TITLE", type(below).__name__.removesuffix("Screen"))  # a human name, never a class's
        lines = [f"[b]{title}: keys[/b]"]
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

    def _line(self, binding: BindingType) -> str:
        if not isinstance(binding, Binding):
            binding = Binding(*binding)
        keys = ", ".join(self._key(k.strip()) for k in binding.key.split(","))
        shown = keys.replace("[", "\\[")  # "[" as a key, not as markup
        return f"  [b]{shown}[/b]{' ' * max(0, 14 - len(keys))} {binding.tooltip or binding.description or binding.action}"

    def _key(self, name: str) -> str:
        """A key as typed: "+" for plus, "[" for left_square_bracket; named keys (escape, ctrl+r) as named."""
        shown = self.app.get_key_display(Binding(name, ""))
        return shown if len(name) > 1 and len(shown) == 1 and shown in string.punctuation else name

    def action_close(self) -> None:
        self.dismiss(None)

