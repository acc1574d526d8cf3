"""Training entry point, run in every rank: ``python -m runners.train --run-dir DIR``.

Loads the run dir's spec, prefixes this rank's output lines with ``[rank N]`` when there are several
ranks (``[nK rN]``, node and global rank, in a multi-node run), and hands over to the runner module.
Any exception becomes a ``crash`` record (one-line error and traceback) from the failing rank, and exit code 1.
"""
from __future__ import annotations

import argparse
import importlib
import io
import os
import sys
import traceback
from pathlib import Path
from typing import TextIO

from runners import events as ev
from runners import loopback, redaction, rundir
from runners import spec as specmod

RUNNER_MODULES = {
    "hf_trainer": "runners.train.hf",
    "simpletransformers": "runners.train.simpletransformers",
    "sentence_transformers": "runners.train.sentence",
    "sft": "runners.train.sft",
}


class RankPrefixed(io.TextIOBase):
    """Line-buffered writer that prefixes each line with the rank, so stdout.log tells ranks apart."""

    def __init__(self, stream: TextIO, prefix: str) -> None:
        self.stream, self.prefix, self.pending = stream, prefix, ""

    def write(self, text: str) -> int:
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            self.stream.write(f"{self.prefix}{line}\n")
        self.stream.flush()
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return False


def load_run_spec(run_dir: Path) -> specmod.RunSpec:
    """The spec exactly as launched: spec.yaml with the secrets the launcher handed over in the
    environment put back (then removed from it, so no child process inherits them).

    ``training.hub_token`` then moves to ``HF_TOKEN``: the Trainer pickles its arguments into every
    checkpoint (training_args.bin), and with no hub_token it pushes with HF_TOKEN, the same token."""
    slots = redaction.slots_from_env(os.environ, str(run_dir))
    os.environ.pop(redaction.SECRETS_ENV, None)
    spec = specmod.load(run_dir / rundir.SPEC_FILE, secrets=slots)
    token = spec.training.pop("hub_token", None)
    if token and token != redaction.REDACTED:  # another node of a multi-node run is not handed the secrets
        os.environ["HF_TOKEN"] = str(token)
    return spec


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runners.train")
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None)  # passed by the deepspeed launcher
    args, _ = parser.parse_known_args(argv)
    run_dir = Path(args.run_dir).resolve()
    rank = int(os.environ.get("RANK", 0))
    node = int(os.environ.get("FTUI_NODE_RANK") or 0)
    multinode = int(os.environ.get("FTUI_NNODES") or 1) > 1
    if int(os.environ.get("WORLD_SIZE", 1)) > 1 or multinode:
        prefix = f"[n{node} r{rank}] " if multinode else f"[rank{rank}] "
        sys.stdout = RankPrefixed(sys.stdout, prefix)
        sys.stderr = RankPrefixed(sys.stderr, prefix)
    try:
        loopback.hold_loopback_store()  # rank 0: the process-group store listens on loopback only
        spec = load_run_spec(run_dir)
        module = importlib.import_module(RUNNER_MODULES[spec.runner])
        module.train(spec, run_dir)
    except BaseException as exc:  # noqa: BLE001 - every failure must reach the event stream
        if isinstance(exc, SystemExit) and not exc.code:
            return 0
        error = f"{type(exc).__name__}: {exc}".splitlines()[0][:500] if str(exc) else type(exc).__name__
        with ev.EventWriter(run_dir / ev.EVENTS_FILE, rank=rank) as writer:
            writer.emit(ev.CRASH, rank=rank, error=error, traceback=traceback.format_exc()[-8000:],
                        **({"node": node} if multinode else {}))
        traceback.print_exc()
        return 130 if isinstance(exc, KeyboardInterrupt) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
