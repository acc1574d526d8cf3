"""The setup form's model entry: the field, and the known models whose id contains what is typed (any part of
it, case-insensitive: 'Llama-3' finds meta-llama/Llama-3.1-8B), one line each, under it. Down moves into the
list; enter there fills the field in.
"""
from __future__ import annotations

from textual.binding import Binding
from textual.widgets import Input, OptionList
from textual.widgets.option_list import Option

from tui.screens import setup_fields as sf


class ModelInput(Input):
    """The model field; down goes to its matches."""

    BINDINGS = [Binding("down", "matches", "Matching models", show=False)]

    def action_matches(self) -> None:
        matches = self.screen.query_one(ModelMatches)
        if matches.display:
            matches.focus()


class ModelMatches(OptionList):
    """Known models (local, HF cache, bundled) matching the model field's text."""

    def __init__(self, choices: list[tuple[str, str]], **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.choices = choices
        self.display = False

    def show_for(self, text: str) -> None:
        found = sf.match_models(self.choices, text)
        self.clear_options()
        self.add_options([Option(label, id=value) for label, value in found])
        self.display = bool(found) and [value for _, value in found] != [text.strip()]
        if found:
            self.highlighted = 0
