"""What a run was set up with, as flat dotted keys, for ``ftui compare``'s spec diff.

An ftui run has its whole spec (``spec.yaml``, read as this version reads it: a key an older file left out has its
default; a file this version cannot read is taken as written, and a key it lacks then differs from a
present one). A foreign dir records only some settings, mapped here onto the spec's names where the meaning
is the same (a Trainer's ``trainer_state.json``, simpletransformers' ``model_args.json``, wandb's
``files/config.yaml``); a key such a dir does not record is "not recorded", never a difference. A TensorBoard
dir records none. Also the global batch (samples per optimizer step), where the dir tells it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from runners import rundir
from runners.watch.sources.trainer import STATE_FILE, checkpoint_dirs

# TrainingArguments a wandb config (the Trainer logs all of them) is compared on: the ones a spec sets.
HEADLINE_ARGS = ("learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size",
                 "gradient_accumulation_steps", "weight_decay", "warmup_steps", "warmup_ratio", "lr_scheduler_type",
                 "optim", "seed", "bf16", "fp16")
# trainer_state.json: train_batch_size is the per-device batch (times the GPUs of DataParallel, which ftui never
# uses); the rest are the Trainer's resolved totals and intervals, kept under the file's own name.
TRAINER_STATE_KEYS = {"train_batch_size": "training.per_device_train_batch_size",
                      "num_train_epochs": "training.num_train_epochs", "max_steps": "trainer_state.max_steps",
                      "logging_steps": "trainer_state.logging_steps", "eval_steps": "trainer_state.eval_steps",
                      "save_steps": "trainer_state.save_steps"}
MODEL_ARGS_KEYS = {"learning_rate": "training.learning_rate", "num_train_epochs": "training.num_train_epochs",
                   "train_batch_size": "training.per_device_train_batch_size",
                   "gradient_accumulation_steps": "training.gradient_accumulation_steps",
                   "weight_decay": "training.weight_decay", "warmup_steps": "training.warmup_steps",
                   "warmup_ratio": "training.warmup_ratio", "manual_seed": "training.seed",
                   "max_seq_length": "dataset.max_seq_length", "model_name": "model.name_or_path"}


@dataclass
class Settings:
    """``values`` None: unknown (``note`` says why). ``complete``: every key the run had is here (an ftui spec)."""

    values: dict[str, Any] | None
    complete: bool = False
    note: str = ""
    global_batch: int | None = None
    batch_note: str = ""
    raw: dict[str, Any] = field(default_factory=dict)


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as dotted keys; lists and scalars are values (an empty mapping adds no key)."""
    if not isinstance(data, dict):
        return {prefix: data} if prefix else {}
    out: dict[str, Any] = {}
    for key, value in data.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _normalised(run_dir: Path, raw: dict[str, Any]) -> dict[str, Any]:
    """The spec as this version reads it, defaults filled in (secrets redacted), so a key an older spec.yaml
    left out shows its value rather than a false difference; the file as written when this version cannot read it."""
    from runners import spec as specmod
    from runners.errors import UserError

    try:
        return dict(specmod.redact(specmod.load(run_dir / rundir.SPEC_FILE).to_dict()))
    except (UserError, OSError, ValueError, TypeError):
        return raw


def ftui_settings(run_dir: Path, start: dict[str, Any]) -> Settings:
    """The run's spec.yaml; its global batch from the start record (the callback writes per-device batch x
    accumulation x world size there), else from the spec."""
    try:
        spec = yaml.safe_load((run_dir / rundir.SPEC_FILE).read_text())
    except (OSError, yaml.YAMLError) as exc:
        spec, note = None, f"{run_dir / rundir.SPEC_FILE} cannot be read ({type(exc).__name__})"
    else:
        note = "" if isinstance(spec, dict) else f"{run_dir / rundir.SPEC_FILE} holds no spec"
    spec = spec if isinstance(spec, dict) else None
    settings = Settings(flatten(_normalised(run_dir, spec)) if spec else None, complete=True, note=note, raw=spec or {})
    batch = _int(start.get("train_batch_size"))
    if batch:
        settings.global_batch, settings.batch_note = batch, f"global batch {batch} (the start record)"
        return settings
    training = (spec or {}).get("training") or {}
    per_device = _int(training.get("per_device_train_batch_size"))
    accumulation = _int(training.get("gradient_accumulation_steps")) or 1
    processes = _int(start.get("world_size")) or _int(((spec or {}).get("hardware") or {}).get("num_processes")) or 1
    if per_device:
        settings.global_batch = per_device * accumulation * processes
        settings.batch_note = (f"global batch {settings.global_batch} (the spec: {per_device} per device x {accumulation} "
                               f"accumulation x {processes} processes)")
    else:
        settings.batch_note = "samples seen unknown: neither the start record nor the spec gives the batch size"
    return settings


def trainer_settings(root: Path) -> Settings:
    """The newest trainer_state.json (the root's, else the highest checkpoint's)."""
    candidates = [root / STATE_FILE] + [d / STATE_FILE for _, d in checkpoint_dirs(root)]
    states = [s for s in map(_json, candidates) if s is not None]
    if not states:
        return Settings(None, note=f"{root} has no readable {STATE_FILE}", batch_note="samples seen unknown")
    state = max(states, key=lambda s: _int(s.get("global_step")) or 0)
    values = {name: state[key] for key, name in TRAINER_STATE_KEYS.items() if key in state}
    batch = _int(state.get("train_batch_size"))
    note = (f"samples seen unknown: trainer_state.json records the per-device batch ({batch}), not gradient "
            "accumulation or the number of processes") if batch else "samples seen unknown: no batch size recorded"
    return Settings(values, note="from trainer_state.json", batch_note=note, raw=state)


def simpletransformers_settings(root: Path) -> Settings:
    args = next((a for a in map(_json, [root / "model_args.json", *sorted(root.glob("checkpoint-*/model_args.json"))])
                 if a is not None), None)
    if args is None:
        return Settings(None, note=f"{root} has no readable model_args.json", batch_note="samples seen unknown")
    values = {name: args[key] for key, name in MODEL_ARGS_KEYS.items() if key in args}
    batch, accumulation = _int(args.get("train_batch_size")), _int(args.get("gradient_accumulation_steps")) or 1
    settings = Settings(values, note="from model_args.json", raw=args)
    if batch:  # simpletransformers' batch is the whole step's (DataParallel splits it over the GPUs)
        settings.global_batch = batch * accumulation
        settings.batch_note = f"global batch {settings.global_batch} (model_args.json: {batch} x {accumulation} accumulation)"
    else:
        settings.batch_note = "samples seen unknown: model_args.json has no train_batch_size"
    return settings


def wandb_settings(run_dir: Path) -> Settings:
    path = run_dir / "files" / "config.yaml"
    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        config = None
    if not isinstance(config, dict):
        return Settings(None, note=f"{path} is missing or unreadable", batch_note="samples seen unknown")
    plain = {k: v.get("value") if isinstance(v, dict) and "value" in v else v for k, v in config.items()}
    values = {f"training.{k}": plain[k] for k in HEADLINE_ARGS if k in plain}
    return Settings(values, note="from wandb's files/config.yaml", raw=plain,
                    batch_note="samples seen unknown: wandb's config does not record the number of processes")


def read_settings(kind: str, path: Path, start: dict[str, Any]) -> Settings:
    """The settings of a run of ``kind`` at ``path`` (for wandb: the dir holding its run-*.wandb file)."""
    if kind == "ftui":
        return ftui_settings(path, start)
    if kind == "trainer":
        return trainer_settings(path)
    if kind == "simpletransformers":
        return simpletransformers_settings(path)
    if kind == "wandb":
        return wandb_settings(path)
    return Settings(None, note=f"a {kind} dir records no settings", batch_note=f"samples seen unknown: a {kind} dir "
                    "records no batch size")
