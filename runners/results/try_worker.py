"""The warm process behind ``ftui try`` and the monitor's Try tab: JSON lines in on stdin, JSON lines out.

Requests (one JSON object per line, each with an ``id``):

- ``{"op": "load", "id", "slot", "run_dir", "checkpoint"}`` loads a run's checkpoint into a slot (two slots
  side by side: best against latest, or two runs) and answers ``{"event": "loaded", "facts": {...}}``.
- ``{"op": "ask", "id", "slot", "text", "params": {...}}``: a generative model streams ``{"event": "token"}``
  lines and ends with ``{"event": "done", "result": {...}}``; a classifier answers labels with scores; an
  embedding model the similarity to ``params.pair`` and the nearest rows of the run's eval set.
- ``{"op": "cancel", "id"}`` ends that generation at the next token; ``{"op": "quit"}`` ends the process.

Every failure of one request is an ``{"event": "error", "id", "error"}`` line: the process stays up. The model
code is runners/results/generation.py; this module is the protocol. Stray prints of the libraries go to
stderr, so nothing but protocol lines reaches stdout.
"""
from __future__ import annotations

import json
import os
import queue
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import IO, Any

from runners.errors import UserError


class Worker:
    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.out_lock = threading.Lock()
        self.slots: dict[str, Any] = {}
        self.cancelled: set[str] = set()
        self.requests: queue.Queue[dict[str, Any] | None] = queue.Queue()

    def emit(self, **payload: Any) -> None:
        with self.out_lock:
            self.out.write(json.dumps(payload, default=str) + "\n")
            self.out.flush()

    def read(self, stdin: IO[str]) -> None:
        """The reader thread: a cancel acts at once (the generation in progress checks it); the rest queue up."""
        for line in stdin:
            if not line.strip():
                continue
            try:
                request = json.loads(line)
            except ValueError:
                self.emit(event="error", id=None, error=f"not a JSON line: {line[:80]!r}")
                continue
            if request.get("op") == "cancel":
                self.cancelled.add(str(request.get("id")))
            else:
                self.requests.put(request)
        self.requests.put(None)  # stdin closed: the parent is gone

    def serve(self) -> None:
        while True:
            request = self.requests.get()
            if request is None or request.get("op") == "quit":
                return
            rid = request.get("id")
            try:
                self.handle(request)
            except UserError as exc:
                self.emit(event="error", id=rid, error=str(exc))
            except Exception as exc:  # noqa: BLE001 - one bad request must not end a warm session
                self.emit(event="error", id=rid, error=f"{type(exc).__name__}: {exc}",
                          traceback=traceback.format_exc(limit=6))

    def handle(self, request: dict[str, Any]) -> None:
        from runners.results import generation

        op, rid = request.get("op"), request.get("id")
        if op == "load":
            from runners.results.loading import load

            started = time.monotonic()
            loaded = load(Path(request["run_dir"]), request.get("checkpoint"))
            self.slots[str(request.get("slot", "a"))] = generation.Session(loaded, Path(request["run_dir"]))
            self.emit(event="loaded", id=rid, slot=request.get("slot", "a"), facts=loaded.facts(),
                      seconds=round(time.monotonic() - started, 3))
        elif op == "ask":
            slot = str(request.get("slot", "a"))
            if slot not in self.slots:
                raise UserError(f"nothing is loaded in slot {slot!r}: send a load request first")
            session = self.slots[slot]
            result = session.ask(str(request.get("text", "")), request.get("params") or {},
                                 on_token=lambda text: self.emit(event="token", id=rid, text=text),
                                 cancelled=lambda: str(rid) in self.cancelled)
            self.cancelled.discard(str(rid))
            self.emit(event="done", id=rid, slot=slot, result=result)
        elif op == "unload":
            self.slots.pop(str(request.get("slot", "a")), None)
            self.emit(event="done", id=rid, result={})
        else:
            raise UserError(f"unknown op {op!r}: load, ask, cancel, unload or quit")


def main() -> int:
    protocol = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)  # anything printed by a library lands on stderr, never among the protocol lines
    sys.stdout = sys.stderr
    if os.environ.get("FTUI_TRY_NICE"):
        os.nice(int(os.environ["FTUI_TRY_NICE"]))  # beside a live run on this machine: training goes first
    worker = Worker(protocol)
    threading.Thread(target=worker.read, args=(sys.stdin,), daemon=True).start()
    worker.emit(event="ready", id=None, pid=os.getpid())
    worker.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
