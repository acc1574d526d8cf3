"""How the setup form's fields map onto a run spec, and how a planner lever changes a spec.

Kept apart from the screen so the mapping is plain data: the form holds the spec as a dict
(``RunSpec.to_dict()``), each field reads and writes one place in it, and validation is the spec's
own (``runners.spec.from_dict``), so the form can never accept what ``ftui run`` would refuse.
"""
from __future__ import annotations

import copy
import os
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runners import spec as specmod
from runners.errors import UserError
from runners.plan import models

PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass(frozen=True)
class Field:
    """One text field: where it lives in the spec and how its text becomes a value."""

    id: str
    label: str
    section: str  # "training", "dataset", "hardware"
    key: str
    parse: Callable[[str], Any]


def _int(text: str) -> int:
    return int(text.strip())


def _float(text: str) -> float:
    return float(text.strip())


TEXT_FIELDS = (
    Field("num_processes", "processes", "hardware", "num_processes", _int),
    Field("learning_rate", "learning rate", "training", "learning_rate", _float),
    Field("num_train_epochs", "epochs", "training", "num_train_epochs", _float),
    Field("per_device_train_batch_size", "batch / device", "training", "per_device_train_batch_size", _int),
    Field("gradient_accumulation_steps", "grad accum", "training", "gradient_accumulation_steps", _int),
    Field("max_seq_length", "max seq length", "dataset", "max_seq_length", _int),
)
DEFAULTS = {"learning_rate": 5e-5, "num_train_epochs": 3.0, "per_device_train_batch_size": 8,
            "gradient_accumulation_steps": 1}


def field_text(data: dict[str, Any], f: Field) -> str:
    value = data[f.section].get(f.key, DEFAULTS.get(f.key))
    return "" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def set_field(data: dict[str, Any], f: Field, text: str) -> None:
    """Store a field's text; UserError naming the field when it does not parse."""
    if not text.strip():
        if f.section == "training":
            data["training"].pop(f.key, None)  # unset: the Trainer's default applies
        return
    try:
        data[f.section][f.key] = f.parse(text)
    except ValueError:
        kind = "a whole number" if f.parse is _int else "a number"
        raise UserError(f"{f.label}: '{text}' is not {kind}. Type {kind}, e.g. "
                        f"{field_text({f.section: {}}, f) or '1'}.") from None


def precision(data: dict[str, Any]) -> str:
    t = data["training"]
    return "bf16" if t.get("bf16") else "fp16" if t.get("fp16") else "fp32"


def set_precision(data: dict[str, Any], value: str) -> None:
    t = data["training"]
    t.pop("bf16", None)
    t.pop("fp16", None)
    if value in ("bf16", "fp16"):
        t[value] = True


def apply_lever(data: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    """A copy of the spec dict with a planner lever's change (``ftui --plan`` flag spellings) applied."""
    out = copy.deepcopy(data)
    for key, value in change.items():
        if key in ("torch_dtype", "attn_implementation", "load_in_4bit"):
            out["model"][key] = value
        elif key == "strategy":
            out["hardware"]["strategy"] = value
        elif key in ("lora_r", "lora_target_modules"):
            lora = out["model"].get("lora") or {}
            lora["r" if key == "lora_r" else "target_modules"] = value
            out["model"]["lora"] = lora
        elif key in ("bf16", "fp16") and value:
            set_precision(out, key)
        else:
            out["training"][key] = value
    return out


def sft_values(data: dict[str, Any]) -> tuple[bool, bool, str]:
    """The sft options of the form: (loss on the answers only, packing, LoRA rank text)."""
    ds, lora = data["dataset"], data["model"].get("lora") or {}
    answers_only = bool(ds.get("assistant_only_loss") or ds.get("completion_only_loss"))
    return answers_only, bool(ds.get("packing")), str(lora["r"]) if lora.get("r") else ""


def data_format(data: dict[str, Any], base: Path) -> str | None:
    """The sft format of the form's dataset (from its first row), None when it cannot be told here."""
    from runners import chat_data

    path = Path(data["dataset"]["train"] or "").expanduser()
    path = path if path.is_absolute() else base / path
    if not data["dataset"]["train"] or not path.is_file():
        return None
    try:
        first = next(chat_data.iter_records(str(path), 1), None)
        ds = specmod.DatasetSpec(**{**data["dataset"], "columns": dict(data["dataset"].get("columns") or {})})
        return chat_data.detect([str(c) for c in first[1]], ds, str(path)).format if first else None
    except (UserError, ValueError, OSError, TypeError):
        return None


def set_sft(data: dict[str, Any], answers_only: bool, packing: bool, lora_text: str, base: Path) -> None:
    """The sft options into the spec dict: for the sft runner, its task, packing, the loss flag that fits the data's
    format (assistant turns of conversations, completions of pairs) and LoRA; for other runners, the sft dataset
    keys back to their defaults (they would be refused there)."""
    ds = data["dataset"]
    if data["runner"] != "sft":
        defaults = specmod.DatasetSpec()
        for key in specmod.SFT_DATASET_KEYS:
            ds[key] = getattr(defaults, key)
        return
    data["task"] = "causal-lm"
    ds["packing"] = packing
    fmt = data_format(data, base)
    ds["assistant_only_loss"] = answers_only and fmt in ("messages", None)
    ds["completion_only_loss"] = answers_only and fmt == "prompt-completion"
    text = lora_text.strip()
    if not text:
        data["model"]["lora"] = None
        return
    try:
        r = int(text)
    except ValueError:
        raise UserError(f"LoRA r: '{text}' is not a whole number. Type the adapter rank (e.g. 16), or leave it empty "
                        "for full fine-tuning.") from None
    data["model"]["lora"] = {**(data["model"].get("lora") or {}), "r": r}


def absolute_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """Local paths made absolute against ``base`` (the working directory), so a spec saved elsewhere
    (a temporary file for launching) still points at the same files."""
    out = copy.deepcopy(data)
    for section, key in (("model", "name_or_path"), ("model", "tokenizer"), ("dataset", "train"), ("dataset", "eval")):
        value = out[section].get(key)
        if value and not Path(value).is_absolute() and (base / value).exists():
            out[section][key] = str((base / value).resolve())
    return out


def display_path(value: str, base: Path) -> str:
    """A path shown relative to the working directory when it lies below it."""
    try:
        return str(Path(value).resolve().relative_to(base.resolve())) if Path(value).is_absolute() else value
    except ValueError:
        return value


def to_spec(data: dict[str, Any]) -> specmod.RunSpec:
    return specmod.from_dict(data, source="setup form")


def model_choices(base: Path) -> list[tuple[str, str]]:
    """(label, value) of every model the form can offer: local dirs, the HF cache, bundled configs."""
    out: list[tuple[str, str]] = []
    configs = [c for c in sorted(base.glob("*/config.json")) + sorted(base.glob("*/*/*/config.json"))
               if not any(part.startswith(".") for part in c.relative_to(base).parts)]
    for config in configs[:20]:
        out.append((f"{display_path(str(config.parent), base)} (local)", display_path(str(config.parent), base)))
    hub = Path(os.environ.get("HF_HUB_CACHE") or Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "hub")
    for repo in sorted(hub.glob("models--*"))[:50]:
        name = repo.name.removeprefix("models--").replace("--", "/")
        out.append((f"{name} (HF cache)", name))
    out.extend((f"{name} (bundled config)", name) for name in models.bundled_names())
    return out


def launch_command(spec: specmod.RunSpec) -> list[str]:
    """The launcher command `ftui run` will write into launch.sh, with placeholders for what a run
    dir decides (its path, the rendezvous port)."""
    from runners.launch import commands

    command = commands.build_command(spec, Path("<run-dir>"), port=29500)
    return ["python" if c == sys.executable else Path(c).name if os.path.isabs(c) and Path(c).exists() else c
            for c in command]


def command_text(spec_path: str, command: list[str]) -> str:
    return f"ftui run {spec_path or '<spec.yaml>'}\n  → {shlex.join(command)}"
