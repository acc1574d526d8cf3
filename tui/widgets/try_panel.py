"""The monitor's Try tab: type a prompt, see the run's model answer, streamed; best against latest side by side.

The model lives in a warm child process (runners/results/try_session.py), started the first time the tab is
used and closed with the monitor, so this process never imports torch. A thread worker sends each prompt and
posts the streamed tokens as :class:`tui.messages.TryAnswered` messages, coalesced to one per FLUSH_S, which
the UI thread appends. A running
run's latest saved checkpoint is loaded (reading files only: training is not touched) in a process of lower
priority. Settings are typed as ``key=value`` words (lists comma-separated): ``max_new_tokens=32 temperature=0.7
stop=### forbid=bad,worse force=please pair="a second text"``.
"""
from __future__ import annotations

import shlex
import threading
import time
from pathlib import Path
from typing import Any

from rich.markup import escape
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Input, Static

from runners import rundir
from runners.errors import UserError
from tui.messages import TryAnswered

LIST_PARAMS = ("stop", "forbid", "force")
FLUSH_S = 0.05  # streamed tokens are shown at most this often (a redraw per token costs more as the answer grows)
SLOTS = {"a": None, "b": "latest"}  # slot -> checkpoint: the default (best; a live run's latest), and latest


def parse_settings(text: str) -> dict[str, Any]:
    """``key=value`` words as request parameters (the worker checks names and ranges)."""
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise UserError(f"settings: {exc}") from None
    params: dict[str, Any] = {}
    for word in words:
        key, sep, value = word.partition("=")
        if not sep or not key:
            raise UserError(f"settings: '{word}' is not key=value (e.g. max_new_tokens=32 temperature=0.7)")
        params[key.replace("-", "_")] = [v for v in value.split(",") if v] if key in LIST_PARAMS else value
    return params


def render_result(result: dict[str, Any]) -> str:
    """A done line's result as markup (a generation's own text was streamed already)."""
    lines: list[str] = []
    for r in result.get("labels") or []:
        full = round(r["score"] * 20)
        lines.append(f"{escape(r['label'])}  {r['score']:.3f}  [$primary]{'█' * full}[/]{'·' * (20 - full)}")
    if "value" in result:
        lines.append(f"value {result['value']:.6g}")
    if "similarity" in result:
        lines.append(f"cosine similarity {result['similarity']:.4f}")
    for r in result.get("nearest") or []:
        lines.append(f"{r['score']:.3f}  {escape(r['text'][:80])}" + (f"  [{escape(r['label'])}]" if "label" in r else ""))
    if "text" in result:
        ft = result.get("first_token_s")
        lines.append(f"[dim]{result['tokens']} tokens"
                     + (f" · first token {ft * 1000:.0f} ms" if ft is not None else "")
                     + (f" · {result['tokens_per_s']:.0f} tok/s" if result.get("tokens_per_s") else "")
                     + f" · {result['stopped']}[/]")
    return "\n".join(lines)


class TryPanel(Vertical):
    """A prompt, settings, and one answer column per loaded checkpoint."""

    BINDINGS = [
        Binding("ctrl+b", "side_by_side", "Best vs latest", tooltip="Try: answer with the best and the latest "
                "checkpoint side by side"),
        Binding("escape", "leave", "Leave prompt", tooltip="Try: leave the prompt (the monitor's keys work again)"),
    ]

    def __init__(self, run_dir: Path | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.run_dir = run_dir
        self.session: Any = None
        self.facts: dict[str, dict[str, Any]] = {}
        self.both = False
        self.answers: dict[str, str] = {"a": "", "b": ""}
        self.pieces: dict[str, int] = {"a": 0, "b": 0}  # streamed pieces shown for the current answer
        self.results: dict[str, dict[str, Any]] = {}  # slot -> the last answer's result
        self.current: dict[str, str] = {}  # slot -> request id being answered
        self._lock = threading.Lock()

    def compose(self) -> ComposeResult:
        yield Static(self._intro(), id="try-status")
        yield Input(placeholder="a prompt; enter sends it", id="try-input")
        yield Input(placeholder="settings: max_new_tokens=64 temperature=0 top_p=1 stop=… forbid=… force=… pair=…",
                    id="try-settings")
        with Horizontal(id="try-answers"):
            with VerticalScroll(id="try-col-a", classes="try-col"):
                yield Static(id="try-answer-a")
            with VerticalScroll(id="try-col-b", classes="try-col"):
                yield Static(id="try-answer-b")

    def _intro(self) -> str:
        if self.run_dir is None or not (self.run_dir / rundir.SPEC_FILE).is_file():
            return "Try needs an ftui run: its spec says the task and the base model."
        return "Type a prompt (the model loads on first use); ctrl+b: best vs latest side by side."

    def on_mount(self) -> None:
        self.query_one("#try-col-b").display = False

    def on_unmount(self) -> None:
        session, self.session = self.session, None
        if session is not None:
            threading.Thread(target=session.close, daemon=True).start()

    def status(self, text: str) -> None:
        self.query_one("#try-status", Static).update(text)

    def action_leave(self) -> None:
        self.screen.set_focus(None)  # off the prompt: the monitor's keys act again

    def action_side_by_side(self) -> None:
        self.both = not self.both
        self.query_one("#try-col-b").display = self.both
        self.status("best and latest side by side: the next prompt loads both" if self.both
                    else "one checkpoint: the default (best; a running run's latest)")

    @on(Input.Submitted, "#try-input")
    def _submitted(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        if not text:
            return
        if self.run_dir is None or not (self.run_dir / rundir.SPEC_FILE).is_file():
            self.status(self._intro())
            return
        try:
            params = parse_settings(self.query_one("#try-settings", Input).value)
        except UserError as exc:
            self.status(f"[$error]{escape(str(exc))}[/]")
            return
        self._cancel_current()
        slots = ["a", "b"] if self.both else ["a"]
        for slot in slots:
            self.answers[slot], self.pieces[slot] = "", 0
            self.results.pop(slot, None)
            self.query_one(f"#try-answer-{slot}", Static).update("[dim]…[/]")
        self._ask(text, params, slots)

    def _cancel_current(self) -> None:
        with self._lock:
            current, self.current = dict(self.current), {}
        if self.session is not None:
            for rid in current.values():
                self.session.cancel(rid)

    @work(thread=True, group="try")
    def _ask(self, text: str, params: dict[str, Any], slots: list[str]) -> None:
        from runners.results.try_session import TryError, TrySession

        assert self.run_dir is not None  # checked before a prompt is sent
        try:
            if self.session is None:
                live = (rundir.read_status(self.run_dir) or {}).get("state") in ("running", "pending")
                self.session = TrySession(nice=live)
            for slot in slots:
                if slot not in self.facts:
                    self.post_message(TryAnswered(slot, status="loading the model…"))
                    self.facts[slot] = self.session.load(self.run_dir, SLOTS[slot], slot=slot)
                    self.post_message(TryAnswered(slot, facts=self.facts[slot]))
            for slot in slots:
                rid = self.session.new_id()
                with self._lock:
                    self.current[slot] = rid
                pending: list[str] = []
                posted = time.monotonic()
                for message in self.session.ask(text, slot=slot, request_id=rid, **params):
                    if message["event"] == "token":  # coalesced: one redraw per FLUSH_S, however fast tokens come
                        pending.append(message["text"])
                        if time.monotonic() - posted >= FLUSH_S:
                            self.post_message(TryAnswered(slot, token="".join(pending), pieces=len(pending)))
                            pending, posted = [], time.monotonic()
                    elif message["event"] == "done":
                        if pending:
                            self.post_message(TryAnswered(slot, token="".join(pending), pieces=len(pending)))
                        self.post_message(TryAnswered(slot, result=message["result"]))
        except (TryError, UserError) as exc:
            self.post_message(TryAnswered(slots[0], error=str(exc)))
        finally:
            with self._lock:
                self.current = {}

    @on(TryAnswered)
    def _answered(self, message: TryAnswered) -> None:
        slot = message.slot
        widget = self.query_one(f"#try-answer-{slot}", Static)
        if message.error is not None:
            self.status(f"[$error]{escape(message.error)}[/]")
            widget.update("")
        elif message.status is not None:
            self.status(message.status)
        elif message.facts is not None:
            self.status(self._loaded_text())
        elif message.token is not None:
            self.answers[slot] += message.token
            self.pieces[slot] += message.pieces
            widget.update(self._column(slot, escape(self.answers[slot])))
        elif message.result is not None:
            self.results[slot] = message.result
            body = escape(message.result.get("text", self.answers[slot])) if "text" in message.result else ""
            widget.update(self._column(slot, "\n".join(x for x in (body, render_result(message.result)) if x)))

    def _column(self, slot: str, body: str) -> str:
        facts = self.facts.get(slot)
        head = f"[b]{escape(facts['checkpoint'])}[/]\n" if facts and self.both else ""
        return head + body

    def _loaded_text(self) -> str:
        parts = []
        for slot in ("a", "b"):
            facts = self.facts.get(slot)
            if facts:
                parts.append(f"{facts['checkpoint']} ({facts['why']})")
        first = next(iter(self.facts.values()))
        same = len(self.facts) == 2 and self.facts["a"]["path"] == self.facts["b"]["path"]
        return escape(" vs ".join(parts) + f" · {first['task']} on {first['device']}"
                      + (" · best and latest are the same checkpoint" if same else ""))
