"""The parent's side of a Try session: starts runners/results/try_worker.py and talks JSON lines to it.

Used by ``ftui try`` and the monitor's Try tab, so neither imports torch: the worker process does, once, and
stays warm between prompts. A reader thread routes each answer line to the request that asked (by id), so a
cancel or a second slot's answer never mixes with another's; the worker's stderr is kept (last lines) to say
why it died, if it does.
"""
from __future__ import annotations

import collections
import itertools
import json
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from runners.errors import UserError

LOAD_TIMEOUT_S = 900.0
STDERR_LINES = 40


class TryError(Exception):
    """A request the worker could not answer (a bad parameter, an input it cannot take): the session goes on."""


class TrySession:
    def __init__(self, nice: bool = False, env: dict[str, str] | None = None) -> None:
        child_env = dict(os.environ if env is None else env)
        if nice:
            child_env["FTUI_TRY_NICE"] = "10"
        self.proc = subprocess.Popen([sys.executable, "-m", "runners.results.try_worker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1,
                                     env=child_env, start_new_session=True)
        self._ids = itertools.count(1)
        self._queues: dict[str, queue.Queue[dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self.stderr: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
        self.ready = threading.Event()
        self.pid: int | None = None
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    # -- the reader threads ----------------------------------------------------------------------

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                message = json.loads(line)
            except ValueError:
                self.stderr.append(line.rstrip())
                continue
            if message.get("event") == "ready":
                self.pid = message.get("pid")
                self.ready.set()
                continue
            with self._lock:
                target = self._queues.get(str(message.get("id")))
            if target is not None:
                target.put(message)
        with self._lock:  # the worker is gone: every waiting request hears it
            for target in self._queues.values():
                target.put({"event": "exit"})

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            if line.strip():
                self.stderr.append(line.rstrip())

    # -- requests --------------------------------------------------------------------------------

    def _send(self, payload: dict[str, Any]) -> queue.Queue[dict[str, Any]]:
        rid = str(payload.setdefault("id", str(next(self._ids))))
        answers: queue.Queue[dict[str, Any]] = queue.Queue()
        with self._lock:
            self._queues[rid] = answers
        if self.proc.poll() is not None:
            answers.put({"event": "exit"})
            return answers
        try:
            with self._write_lock:
                assert self.proc.stdin is not None
                self.proc.stdin.write(json.dumps(payload) + "\n")
                self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            answers.put({"event": "exit"})
        return answers

    def _died(self) -> UserError:
        tail = [line for line in self.stderr if line.strip()][-6:]
        code = self.proc.poll()
        return UserError("The model process ended" + (f" (exit {code})" if code is not None else "")
                         + (": " + " | ".join(tail) if tail else "") + ". Its full output is above, or rerun "
                         "'ftui try' to see it.")

    def events(self, payload: dict[str, Any], timeout: float | None = None) -> Iterator[dict[str, Any]]:
        """Every answer line of one request, ending with its done line; TryError on its error line."""
        answers = self._send(payload)
        rid = str(payload["id"])
        try:
            while True:
                try:
                    message = answers.get(timeout=timeout)
                except queue.Empty:
                    raise UserError(f"The model process gave no answer in {timeout:.0f} s.") from None
                kind = message.get("event")
                if kind == "exit":
                    raise self._died()
                if kind == "error":
                    raise TryError(message.get("error") or "unknown error")
                yield message
                if kind in ("done", "loaded"):
                    return
        finally:
            with self._lock:
                self._queues.pop(rid, None)

    def load(self, run_dir: Path, checkpoint: str | None = None, slot: str = "a") -> dict[str, Any]:
        """Load a checkpoint into a slot; the facts the worker reports (task, device, labels, notes)."""
        for message in self.events({"op": "load", "slot": slot, "run_dir": str(run_dir), "checkpoint": checkpoint},
                                   timeout=LOAD_TIMEOUT_S):
            if message.get("event") == "loaded":
                return {**message["facts"], "load_seconds": message.get("seconds")}
        raise self._died()

    def ask(self, text: str, slot: str = "a", request_id: str | None = None,
            **params: Any) -> Iterator[dict[str, Any]]:
        """Token lines as they come, then the done line (its ``result``)."""
        payload: dict[str, Any] = {"op": "ask", "slot": slot, "text": text, "params": params}
        if request_id is not None:
            payload["id"] = request_id
        yield from self.events(payload)

    def new_id(self) -> str:
        return f"q{next(self._ids)}"

    def cancel(self, request_id: str) -> None:
        try:
            with self._write_lock:
                assert self.proc.stdin is not None
                self.proc.stdin.write(json.dumps({"op": "cancel", "id": request_id}) + "\n")
                self.proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            pass

    def close(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.proc.stdin.close()
            except (BrokenPipeError, OSError, ValueError):
                pass
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> TrySession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
