"""The saved models of a run: which ones there are, what each holds, and which one to export.

A run's ``output/`` holds the Trainer's ``checkpoint-N/`` folders and ``final/`` (simpletransformers and
sentence-transformers runs also ``best_model/``). Each is either a LoRA **adapter** (peft's
``adapter_config.json`` + ``adapter_model.safetensors``) or a **full** model (``config.json`` + weights).
A ``checkpoint-N`` counts only when complete: the Trainer writes ``trainer_state.json`` last, so a save cut
short (a full disk, a kill) is skipped. The best checkpoint is the one the run's events marked
(``checkpoint`` records with ``is_best``, folded by :class:`runners.watch.history.RunHistory`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from runners import events as ev
from runners import rundir
from runners.errors import UserError
from runners.plan.models import WEIGHT_FILES
from runners.watch.history import RunHistory

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
# The base model a LoRA run saved before training (config with its labels, and weights): the only way to
# merge a model.init: random run, whose base cannot be rebuilt from the spec. Written by the LoRA runner.
BASE_DIR = rundir.BASE_DIR
CHOICES = ("best", "last", "final")
NO_BEST = "the run marked no best"
FINAL_NAMES = ("final", "best_model")  # the Trainer's final save; simpletransformers/sentence-transformers' best


@dataclass
class Checkpoint:
    name: str          # checkpoint-8, final, best_model
    path: Path
    kind: str          # "adapter" or "full"
    step: int | None
    why: str           # how it was chosen, for the report: "best eval_accuracy = 0.91 (step 8)"


def kind_of(path: Path) -> str | None:
    """'adapter', 'full', or None when the folder holds no model that from_pretrained can load."""
    if not path.is_dir():
        return None
    if (path / ADAPTER_CONFIG).is_file() and any((path / w).is_file() for w in ADAPTER_WEIGHTS):
        return "adapter"
    weights = any((path / f).is_file() for f in WEIGHT_FILES) or any(
        not p.name.startswith("adapter_") for p in path.glob("*.safetensors"))
    return "full" if (path / "config.json").is_file() and weights else None


def problem(path: Path) -> str | None:
    """Why a saved folder cannot be exported, or None when it can."""
    if next(path.glob("*.tmp"), None) is not None:
        return "a partially written file is left in it"
    why = rundir.checkpoint_problem(path) if re.fullmatch(r"checkpoint-\d+", path.name) else None
    if why and why != rundir.NO_WEIGHTS:  # no weights: said more precisely below
        return why
    if kind_of(path) is None:
        if next(path.glob("global_step*"), None) is not None:
            return ("its weights are only in DeepSpeed's global_step*/ shards: gather them first with the "
                    "zero_to_fp32.py script in that folder")
        return "no model in it (neither adapter_config.json with adapter weights nor config.json with weights)"
    return None


numbered = rundir.numbered_checkpoints  # every checkpoint-N folder, oldest first (complete or not)


def history(run_dir: Path) -> RunHistory:
    h = RunHistory()
    for chunk in ev.iter_chunks(run_dir / ev.EVENTS_FILE):
        h.apply(chunk)
    return h


def _local(run_dir: Path, recorded: str) -> Path:
    """A recorded checkpoint path, inside this run dir (the run dir may have moved since it was written)."""
    here = run_dir / rundir.OUTPUT_DIR / Path(recorded).name
    return here if here.exists() or not Path(recorded).exists() else Path(recorded)


def on_disk(run_dir: Path | None, recorded: list[str]) -> dict[str, Path | None]:
    """Where each recorded checkpoint path is on disk now (in this run dir's output/ when it has one),
    or None for one that is gone: rotated away by save_total_limit, or deleted since."""
    found: dict[str, Path | None] = {}
    for path in recorded:
        here = _local(run_dir, path) if run_dir is not None else Path(path)
        found[path] = here if here.is_dir() else None
    return found


def _make(path: Path, why: str, step: int | None = None) -> Checkpoint:
    kind = kind_of(path)
    assert kind is not None, "callers check problem() first"
    if step is None and path.name.startswith("checkpoint-"):
        step = int(path.name.split("-")[1])
    return Checkpoint(path.name, path, kind, step, why)


def _best(run_dir: Path) -> Checkpoint | str:
    """The checkpoint the run marked best, or why there is none."""
    best = history(run_dir).best
    if not best or not best.get("checkpoint"):
        return f"{NO_BEST} checkpoint (it needs cadence.metric_for_best_model and evaluations)"
    path = _local(run_dir, str(best["checkpoint"]))
    if not path.is_dir():
        return f"its best checkpoint {path.name} is gone from {path.parent}"
    trouble = problem(path)
    if trouble:
        return f"its best checkpoint {path.name} cannot be exported: {trouble}"
    value = best.get("value")
    shown = f"{value:.4g}" if isinstance(value, (int, float)) else str(value)
    return _make(path, f"best {best.get('metric')} = {shown} at step {best.get('step')}", best.get("step"))


def _final(run_dir: Path) -> Checkpoint | str:
    for name in FINAL_NAMES:
        path = run_dir / rundir.OUTPUT_DIR / name
        if path.is_dir():
            trouble = problem(path)
            return f"{name}/ cannot be exported: {trouble}" if trouble else _make(path, "the final model")
    return "it saved no final model (output/final/ is written when training ends)"


def _last(run_dir: Path, notes: list[str]) -> Checkpoint | str:
    for path in reversed(numbered(run_dir)):
        trouble = problem(path)
        if trouble is None:
            return _make(path, "the last complete checkpoint")
        notes.append(f"skipping {path.name}: {trouble}")
    return "it has no complete checkpoint-N"


def available(run_dir: Path) -> str:
    names = [p.name for p in numbered(run_dir) if problem(p) is None]
    names += [n for n in FINAL_NAMES if (run_dir / rundir.OUTPUT_DIR / n).is_dir()]
    return ", ".join(names) or "none"


def select(run_dir: Path, which: str | None = None, notes: list[str] | None = None,
           purpose: str = "export") -> Checkpoint:
    """The checkpoint ``which`` names (best, last, final, N or checkpoint-N); by default the best one the
    run marked, else its final model, else its last complete checkpoint. A UserError when there is none;
    ``purpose`` (export, load) is the verb its messages use."""
    notes = notes if notes is not None else []
    done = {"export": "exported", "load": "loaded"}.get(purpose, purpose)
    run = run_dir.name
    if which is None:
        reasons: list[str] = []
        for pick in (lambda: _best(run_dir), lambda: _final(run_dir), lambda: _last(run_dir, notes)):
            found = pick()
            if isinstance(found, Checkpoint):
                if reasons and not reasons[0].startswith(NO_BEST):
                    notes.append(f"not the best checkpoint: {reasons[0]}; taking {found.why} instead")
                return found
            reasons.append(found)
        state = (rundir.read_status(run_dir) or {}).get("state", "unknown")
        raise UserError(f"Run {run} has nothing to {purpose}: {'; '.join(reasons)} (state: {state}). A run saves "
                        f"checkpoints as its cadence says; while it runs, 'ftui checkpoint {run}' saves one now.")
    spelled = which.strip().lower()
    step = spelled.removeprefix("checkpoint-")
    if step.isdigit():
        path = run_dir / rundir.OUTPUT_DIR / f"checkpoint-{int(step)}"
        if not path.is_dir():
            raise UserError(f"Run {run} has no checkpoint-{int(step)} (--checkpoint {which}). Its checkpoints: "
                            f"{available(run_dir)}. Pass one of them, or best, last or final.")
        trouble = problem(path)
        if trouble:
            raise UserError(f"{path} cannot be {done} (--checkpoint {which}): {trouble}. Its usable "
                            f"checkpoints: {available(run_dir)}.")
        return _make(path, f"checkpoint {int(step)}, as asked")
    if spelled not in CHOICES:
        raise UserError(f"--checkpoint '{which}' is not a checkpoint: pass best, last, final, or a step number "
                        f"(run {run} has: {available(run_dir)}).")
    found = {"best": lambda: _best(run_dir), "final": lambda: _final(run_dir),
             "last": lambda: _last(run_dir, notes)}[spelled]()
    if isinstance(found, Checkpoint):
        return found
    raise UserError(f"Run {run} has no {spelled} checkpoint to {purpose} (--checkpoint {which}): {found}. Its checkpoints: "
                    f"{available(run_dir)}. Leave --checkpoint out to take the best, final or last one there is.")
