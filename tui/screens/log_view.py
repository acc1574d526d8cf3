"""Read-only views of a run's files: the full log (following, searchable) and launch.sh with the spec.

The log is read in a worker thread and keeps at most its last MiB and 20,000 lines, so a long run's log
opens as fast as a short one's; the run files are a few KiB, read when the view opens.
"""
from __future__ import annotations

import re
from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.content import Content
from textual.screen import Screen
from textual.widgets import Input, Log, Static, TabbedContent, TabPane, TextArea

from tui.widgets.footer import Footer

LOG_SCREEN_BYTES = 1024 * 1024  # the log screen shows at most the last MiB
RUN_FILES = ("launch.sh", "spec.yaml", "ds_config.json", "accelerate.yaml")  # what a run was started with


class LogScreen(Screen[None]):
    """The run's stdout.log, following new lines while open; ``/`` searches, n/N go to the next/previous match."""

    HELP_TITLE = "Full log"
    BINDINGS = [
        Binding("escape,q", "close", "Back", tooltip="back to the monitor (a search box open: close it)"),
        Binding("f", "follow", "Follow", tooltip="follow new lines (jump to the end)"),
        Binding("slash", "search", "Search", tooltip="search the log (case-insensitive; enter to find)"),
        Binding("n", "match(1)", "Next", tooltip="next match"),
        Binding("N", "match(-1)", "Prev", tooltip="previous match"),
    ]

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self.read_offset = 0
        self.query_text = ""
        self.matches: list[int] = []  # line numbers of the search's matches
        self.match = -1  # index into matches of the one shown

    def compose(self) -> ComposeResult:
        yield Static(f"log · {self.path}", classes="screen-title")
        yield Log(id="log", max_lines=20_000, auto_scroll=True)
        yield Input(placeholder="search the log, enter to find (escape closes)", id="log-search")
        yield Static(id="log-found")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#log-search").display = False
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

    def action_search(self) -> None:
        box = self.query_one("#log-search", Input)
        box.display = True
        box.focus()

    @on(Input.Submitted, "#log-search")
    def _searched(self, event: Input.Submitted) -> None:
        self.query_one("#log-search").display = False
        log = self.query_one(Log)
        log.focus()
        self.query_text = event.value.strip()
        wanted = self.query_text.lower()
        self.matches = [i for i, line in enumerate(log.lines) if wanted and wanted in line.lower()]
        if not self.matches:
            self.match = -1
            self._found(Content.styled(f"no match for {self.query_text!r}" if wanted else "", "$warning"))
            return
        top = int(log.scroll_y)  # the first match from the top of what is shown, wrapping to the first
        self.match = next((k for k, line in enumerate(self.matches) if line >= top), 0)
        self._go()

    def action_match(self, step: int) -> None:
        if not self.matches:
            self.notify("No search yet: / searches the log.", timeout=3)
            return
        self.match = (self.match + step) % len(self.matches)
        self._go()

    def _go(self) -> None:
        log = self.query_one(Log)
        line = self.matches[self.match]
        log.auto_scroll = False  # a new line must not move the match out of sight (f follows again)
        log.scroll_to(y=max(0, line - 2), animate=False)
        text = log.lines[line] if line < len(log.lines) else ""
        self._found(Content.assemble((f"match {self.match + 1}/{len(self.matches)} · line {line + 1}: ", "bold"),
                                     Content(text[:200]).highlight_regex(f"(?i){re.escape(self.query_text)}",
                                                                         style="reverse")))

    def _found(self, content: Content) -> None:
        self.query_one("#log-found", Static).update(content)

    def action_close(self) -> None:
        box = self.query_one("#log-search", Input)
        if box.display:
            box.display = False
            self.query_one(Log).focus()
            return
        self.dismiss(None)


class RunFilesScreen(Screen[None]):
    """The files a run was started with, read-only: its exact launch.sh, spec.yaml and launcher configs."""

    HELP_TITLE = "Run files"
    BINDINGS = [Binding("escape,q", "close", "Back", tooltip="back to the monitor")]

    def __init__(self, run_dir: Path) -> None:
        super().__init__()
        self.run_dir = run_dir
        self.files = [name for name in RUN_FILES if (run_dir / name).is_file()]

    def compose(self) -> ComposeResult:
        yield Static(f"run files · {self.run_dir} (read-only)", classes="screen-title")
        with TabbedContent(id="run-files"):
            for name in self.files:
                with TabPane(name, id=name.replace(".", "-")):
                    yield TextArea(self._text(name), read_only=True, show_line_numbers=True, soft_wrap=False)
        if not self.files:
            yield Static(f"no launch.sh or spec.yaml in {self.run_dir}", id="run-files-none")
        yield Footer()

    def _text(self, name: str) -> str:
        try:
            return (self.run_dir / name).read_text(errors="replace")
        except OSError as e:
            return f"cannot read {name}: {e}"

    def action_close(self) -> None:
        self.dismiss(None)
