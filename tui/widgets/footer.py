"""The footer every screen shows: its keys, cut to the width so that the help key is always there.

Textual's footer lays the keys out in binding order (the screen's, then the app's) and clips what
does not fit, so at 80 columns the app's help key, the one that lists every other key, fell off the
right edge first. This one leaves out whole keys that do not fit instead, never the help key; the
keys left out still work and are all on the help screen.
"""
from __future__ import annotations

from textual import events
from textual.app import ComposeResult
from textual.widgets import Footer as TextualFooter
from textual.widgets._footer import FooterKey

HELP_ACTIONS = ("help", "app.help")


def key_width(key: FooterKey) -> int:
    """Cells a key takes in the footer: " key " then "description " (Textual's padding)."""
    return len(key.key_display) + 2 + (len(key.description) + 1 if key.description else 0)


class Footer(TextualFooter):
    _room = 0  # the width the keys were last chosen for

    def compose(self) -> ComposeResult:
        keys = list(super().compose())
        room = self._room = self.size.width or self.app.size.width
        helps = [k for k in keys if isinstance(k, FooterKey) and k.action in HELP_ACTIONS]
        used = sum(key_width(k) for k in helps)
        for key in keys:
            if key in helps:
                yield key
                continue
            width = key_width(key) if isinstance(key, FooterKey) else 0
            if used + width <= room:
                used += width
                yield key

    def on_resize(self, event: events.Resize) -> None:
        if event.size.width != self._room:
            self.call_after_refresh(self.recompose)
