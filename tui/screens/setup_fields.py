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

from runners import paths
from runners import spec as specmod
from runners.errors import UserError
from runners.plan import models

PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass(frozen=True)
class Field:
    """One text field: where it lives in the spec and how its text becomes a value."""

    id: str
    label: str
    section: str  # "training", "dataset", "hardware", "cadence"; "" for a top-level key
    key: str
    parse: Callable[[str], Any]


def _int(text: str) -> int:
    return int(text.strip())


def _float(text: str) -> float:
    return float(text.strip())


def _number(text: str) -> int | float:
    """A whole number stays whole (warmup_steps 10 is steps; 0.1 would be a ratio)."""
    value = float(text.strip())
    return int(value) if value.is_integer() and "." not in text else value


def _text(text: str) -> str:
    return text.strip()


TEXT_FIELDS = (
    Field("num_processes", "processes", "hardware", "num_processes", _int),
    Field("learning_rate", "learning rate", "training", "learning_rate", _float),
    Field("num_train_epochs", "epochs", "training", "num_train_epochs", _float),
    Field("per_device_train_batch_size", "batch / device", "training", "per_device_train_batch_size", _int),
    Field("gradient_accumulation_steps", "grad accum", "training", "gradient_accumulation_steps", _int),
    Field("max_seq_length", "max seq length", "dataset", "max_seq_length", _int),
)
# the advanced section: every other setting the plan reads (tui/screens/setup_advanced.py shows them)
ADVANCED_FIELDS = (
    Field("per_device_eval_batch_size", "eval batch/device", "training", "per_device_eval_batch_size", _int),
    Field("warmup_steps", "warmup steps", "training", "warmup_steps", _number),
    Field("warmup_ratio", "warmup ratio", "training", "warmup_ratio", _float),
    Field("metric_for_best_model", "best model metric", "cadence", "metric_for_best_model", _text),
)
NAME_FIELD = Field("name", "run name", "", "name", _text)
DEFAULTS = {"learning_rate": 5e-5, "num_train_epochs": 3.0, "per_device_train_batch_size": 8,
            "gradient_accumulation_steps": 1, "per_device_eval_batch_size": 8}
NULLABLE = ("metric_for_best_model",)  # empty text: unset (None); other non-training fields keep their value


def _section(data: dict[str, Any], f: Field) -> dict[str, Any]:
    return data[f.section] if f.section else data


def field_text(data: dict[str, Any], f: Field) -> str:
    value = _section(data, f).get(f.key, DEFAULTS.get(f.key))
    return "" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def set_field(data: dict[str, Any], f: Field, text: str) -> None:
    """Store a field's text; UserError naming the field when it does not parse."""
    if not text.strip():
        if f.section == "training":
            data["training"].pop(f.key, None)  # unset: the Trainer's default applies
        elif f.key in NULLABLE:
            _section(data, f)[f.key] = None
        return
    try:
        _section(data, f)[f.key] = f.parse(text)
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


def sft_values(data: dict[str, Any]) -> tuple[bool, bool]:
    """The sft options of the form: (loss on the answers only, packing)."""
    ds = data["dataset"]
    answers_only = bool(ds.get("assistant_only_loss") or ds.get("completion_only_loss"))
    return answers_only, bool(ds.get("packing"))


QUANT = (("full precision", "none"), ("4-bit NF4 (QLoRA)", "4bit"), ("8-bit (LLM.int8)", "8bit"))
DEFAULT_OPTIM = "default"


def quant(data: dict[str, Any]) -> str:
    m = data["model"]
    return "4bit" if m.get("load_in_4bit") else "8bit" if m.get("load_in_8bit") else "none"


def set_quant(data: dict[str, Any], value: str) -> None:
    data["model"]["load_in_4bit"], data["model"]["load_in_8bit"] = value == "4bit", value == "8bit"


def optim_choices(data: dict[str, Any]) -> list[tuple[str, str]]:
    names = list(specmod.OPTIMIZERS) + [o for o in [data["training"].get("optim")] if o and o not in specmod.OPTIMIZERS]
    return [("default (the runner's AdamW)", DEFAULT_OPTIM)] + [(o, o) for o in names]


def optim(data: dict[str, Any]) -> str:
    return str(data["training"].get("optim") or DEFAULT_OPTIM)


def set_optim(data: dict[str, Any], value: str) -> None:
    if value == DEFAULT_OPTIM:
        data["training"].pop("optim", None)
    else:
        data["training"]["optim"] = value


def lora_values(data: dict[str, Any]) -> tuple[str, str]:
    """(rank text, target modules text) of the form's LoRA fields; empty rank: full fine-tuning."""
    lora = data["model"].get("lora") or {}
    return (str(lora["r"]) if lora.get("r") else ""), ", ".join(lora.get("target_modules") or [])


def set_lora(data: dict[str, Any], r_text: str, targets_text: str) -> None:
    text = r_text.strip()
    if not text:
        data["model"]["lora"] = None
        return
    try:
        r = int(text)
    except ValueError:
        raise UserError(f"LoRA r: '{text}' is not a whole number. Type the adapter rank (e.g. 16), or leave it empty "
                        "for full fine-tuning.") from None
    targets = targets_text.replace(",", " ").split()
    data["model"]["lora"] = {**(data["model"].get("lora") or {}), "r": r, "target_modules": targets or None}


def gpus_text(data: dict[str, Any]) -> str:
    return ",".join(str(g) for g in data["hardware"].get("gpus") or [])


def set_gpus(data: dict[str, Any], text: str) -> None:
    try:
        data["hardware"]["gpus"] = [int(g) for g in text.replace(",", " ").split()] or None
    except ValueError:
        raise UserError(f"GPUs: '{text}' is not a list of GPU indices. Type indices such as 0,1 (as nvidia-smi numbers "
                        "them), or leave it empty for every GPU.") from None


# a lever's change as the form shows it: which fields it touches, the label, the field's text
_LEVER_VIEWS: tuple[tuple[tuple[str, ...], str, Callable[[dict[str, Any]], str]], ...] = (
    (("per_device_train_batch_size",), "batch / device", lambda d: field_text(d, TEXT_FIELDS[3])),
    (("gradient_accumulation_steps",), "grad accum", lambda d: field_text(d, TEXT_FIELDS[4])),
    (("per_device_eval_batch_size",), "eval batch/device", lambda d: field_text(d, ADVANCED_FIELDS[0])),
    (("gradient_checkpointing",), "grad checkpointing",
     lambda d: "on" if d["training"].get("gradient_checkpointing") else "off"),
    (("bf16", "fp16"), "precision", precision),
    (("torch_dtype",), "weights dtype", lambda d: str(d["model"]["torch_dtype"])),
    (("attn_implementation",), "attention", lambda d: str(d["model"]["attn_implementation"])),
    (("optim",), "optimizer", optim),
    (("load_in_4bit", "load_in_8bit"), "base weights", lambda d: dict((v, k) for k, v in QUANT)[quant(d)]),
    (("lora_r",), "LoRA r", lambda d: lora_values(d)[0] or "off"),
    (("lora_target_modules",), "LoRA targets", lambda d: lora_values(d)[1] or "default"),
    (("strategy",), "strategy", lambda d: str(d["hardware"]["strategy"])),
)
ADVANCED_LEVER_KEYS = {"per_device_eval_batch_size", "torch_dtype", "attn_implementation", "optim", "load_in_4bit",
                       "load_in_8bit", "lora_r", "lora_target_modules"}  # levers whose fields the advanced section holds


def lever_changes(data: dict[str, Any], change: dict[str, Any]) -> list[str]:
    """A lever as the form changes it, one 'field before → after' per field (e.g. 'batch / device 16 → 4')."""
    after = apply_lever(data, change)
    out = []
    for keys, label, show in _LEVER_VIEWS:
        if set(keys) & change.keys() and show(data) != show(after):
            out.append(f"{label} {show(data)} → {show(after)}")
    return out


def new_spec() -> specmod.RunSpec:
    """A new run: every section at its defaults, nothing carried over from another spec (the demo's eval batch 64
    and its accuracy metric once reached an 8B model's plan unseen); the bundled demo model and data are filled in
    so the first plan shows, and typing another model trains that one from its weights."""
    demo = paths.ASSETS / "demo"
    return specmod.from_dict({"model": {"name_or_path": str(demo / "model"), "init": "random"},
                              "dataset": {"train": str(demo / "reviews.csv")}}, source="new run")


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


def set_sft(data: dict[str, Any], answers_only: bool, packing: bool, base: Path) -> None:
    """The sft options into the spec dict: for the sft runner, its task, packing and the loss flag that fits the
    data's format (assistant turns of conversations, completions of pairs); for other runners, the sft dataset
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


def match_models(choices: list[tuple[str, str]], text: str, limit: int = 8) -> list[tuple[str, str]]:
    """The known models whose id contains ``text``, case-insensitive ('Llama-3' finds meta-llama/Llama-3.1-8B);
    ids whose name after the org starts with it first."""
    typed = text.strip().lower()
    if not typed:
        return []
    hits = [(label, value) for label, value in choices if typed in value.lower()]
    hits.sort(key=lambda c: (not c[1].lower().rsplit("/", 1)[-1].startswith(typed), c[1].lower()))
    return hits[:limit]
