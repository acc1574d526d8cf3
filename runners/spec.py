"""The run spec: one YAML file that fully describes a run.

Sections: ``model``, ``dataset``, ``hardware``, ``training`` (exact ``transformers.TrainingArguments``
field names, so users can paste what they know), ``cadence``, ``tracking`` and ``runner_args``
(runner-specific extras). Unknown keys anywhere are a :class:`UserError` naming the key and the
closest valid one. The spec is plain data: loading it never imports torch or transformers; the
TrainingArguments field list ships in ``assets/training_arguments_fields.json`` (a test keeps it in
step with the installed transformers).
"""
from __future__ import annotations

import copy
import hashlib
import json
import re
from dataclasses import asdict, dataclass, field, fields
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from runners.errors import UserError, did_you_mean

ASSETS = Path(__file__).resolve().parent.parent / "assets"

RUNNERS = ("hf_trainer", "simpletransformers", "sentence_transformers")
TASKS = ("seq-cls", "causal-lm", "seq2seq", "token-cls", "embedding")
STRATEGIES = (
    "cpu", "single", "ddp", "zero1", "zero2", "zero3", "zero2_offload", "zero3_offload",
    "fsdp", "fsdp_shard_grad_op",
)
LAUNCHERS = ("auto", "python", "torchrun", "accelerate", "deepspeed")
DTYPES = ("auto", "float32", "bfloat16", "float16")
ATTN_IMPLEMENTATIONS = ("eager", "sdpa", "flash_attention_2")
OPTIMIZERS = ("adamw_torch", "adamw_torch_fused", "adafactor", "adamw_bnb_8bit", "sgd")

# Keys whose values are secrets: never written to disk (spec, launch.sh, logs).
SECRET_KEY_PATTERN = re.compile(r"(token|api_key|apikey|secret|password)", re.IGNORECASE)
SECRET_VALUE_PATTERN = re.compile(r"\b(hf_[A-Za-z0-9]{20,}|[0-9a-f]{40})\b")
REDACTED = "***REDACTED***"


@dataclass
class LoraSpec:
    r: int = 16
    alpha: int = 16
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])


@dataclass
class ModelSpec:
    name_or_path: str = ""
    torch_dtype: str = "auto"
    attn_implementation: str = "sdpa"
    load_in_4bit: bool = False
    lora: LoraSpec | None = None
    tokenizer: str | None = None
    num_labels: int | None = None


@dataclass
class DatasetSpec:
    train: str = ""
    eval: str | None = None
    hub_config: str | None = None
    text_column: str | None = None
    text_pair_column: str | None = None
    label_column: str | None = None
    columns: dict[str, str] = field(default_factory=dict)
    eval_fraction: float = 0.1
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    max_seq_length: int = 128
    seed: int = 42


@dataclass
class HardwareSpec:
    strategy: str = "cpu"
    num_processes: int = 1
    launcher: str = "auto"
    gpus: list[int] | None = None
    gpu_memory_gib: float | None = None


@dataclass
class CadenceSpec:
    """How eval/save/log steps are chosen when ``training`` leaves them unset."""

    auto: bool = True
    n_evals: int = 10
    n_saves: int = 2
    n_logs: int | None = None
    metric_for_best_model: str | None = None
    smoke_test: bool = False


@dataclass
class TrackingSpec:
    report_to: list[str] = field(default_factory=list)
    run_name: str | None = None
    wandb_project: str | None = None
    wandb_mode: str | None = None


@dataclass
class RunSpec:
    name: str = "run"
    runner: str = "hf_trainer"
    task: str = "seq-cls"
    model: ModelSpec = field(default_factory=ModelSpec)
    dataset: DatasetSpec = field(default_factory=DatasetSpec)
    hardware: HardwareSpec = field(default_factory=HardwareSpec)
    training: dict[str, Any] = field(default_factory=dict)
    cadence: CadenceSpec = field(default_factory=CadenceSpec)
    tracking: TrackingSpec = field(default_factory=TrackingSpec)
    runner_args: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def spec_hash(self) -> str:
        """A short hash of the redacted spec: two runs of the same setup share it."""
        text = json.dumps(redact(self.to_dict()), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


SECTION_TYPES = {
    "model": ModelSpec, "dataset": DatasetSpec, "hardware": HardwareSpec,
    "cadence": CadenceSpec, "tracking": TrackingSpec,
}


@lru_cache(maxsize=1)
def training_argument_fields() -> frozenset[str]:
    """Valid keys of the ``training`` section: TrainingArguments fields plus the
    sentence-transformers extras, as shipped in assets (no transformers import)."""
    data = json.loads((ASSETS / "training_arguments_fields.json").read_text())
    return frozenset(data["training_arguments"]) | frozenset(data["sentence_transformers_extra"])


def _build(cls: type, data: Any, where: str) -> Any:
    if data is None:
        return cls()
    if not isinstance(data, dict):
        raise UserError(f"Spec section '{where}' must be a mapping of keys to values, got {type(data).__name__}. "
                        f"Write it as '{where}:' followed by indented 'key: value' lines.")
    names = {f.name for f in fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in names:
            raise UserError(f"Unknown key '{where}.{key}' in the run spec.{did_you_mean(str(key), names)} "
                            f"Valid keys of '{where}': {', '.join(sorted(names))}.")
        if cls is ModelSpec and key == "lora" and value is not None:
            value = _build(LoraSpec, value, f"{where}.lora")
        kwargs[key] = value
    return cls(**kwargs)


def from_dict(data: dict[str, Any], source: str = "spec") -> RunSpec:
    """Build and validate a RunSpec from plain data; every problem is a UserError naming ``source``."""
    if not isinstance(data, dict):
        raise UserError(f"{source}: a run spec must be a YAML mapping (model:, dataset:, training: ...), "
                        f"got {type(data).__name__}.")
    top = {f.name for f in fields(RunSpec)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in top:
            raise UserError(f"{source}: unknown top-level key '{key}'.{did_you_mean(str(key), top)} "
                            f"Valid keys: {', '.join(sorted(top))}.")
        if key in SECTION_TYPES:
            value = _build(SECTION_TYPES[key], value, key)
        kwargs[key] = value
    spec = RunSpec(**kwargs)
    validate(spec, source)
    return spec


def _choice(value: Any, choices: tuple[str, ...], what: str, source: str) -> None:
    if value not in choices:
        raise UserError(f"{source}: {what} '{value}' is not supported.{did_you_mean(str(value), choices)} "
                        f"Choose one of: {', '.join(choices)}.")


def validate(spec: RunSpec, source: str = "spec") -> None:
    """Checks that need no imports: names, choices, positive sizes, known training keys."""
    _choice(spec.runner, RUNNERS, "runner", source)
    _choice(spec.task, TASKS, "task", source)
    _choice(spec.hardware.strategy, STRATEGIES, "hardware.strategy", source)
    _choice(spec.hardware.launcher, LAUNCHERS, "hardware.launcher", source)
    _choice(spec.model.torch_dtype, DTYPES, "model.torch_dtype", source)
    _choice(spec.model.attn_implementation, ATTN_IMPLEMENTATIONS, "model.attn_implementation", source)
    if not isinstance(spec.training, dict):
        raise UserError(f"{source}: 'training' must be a mapping of TrainingArguments fields to values.")
    valid = training_argument_fields()
    for key in spec.training:
        if key not in valid:
            raise UserError(f"{source}: unknown training argument 'training.{key}'.{did_you_mean(key, valid)} "
                            "The 'training' section takes transformers.TrainingArguments field names.")
    for key in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
        value = spec.training.get(key)
        if value is not None and (not isinstance(value, int) or value < 1):
            raise UserError(f"{source}: training.{key} must be a whole number of at least 1, got {value!r}.")
    if not isinstance(spec.hardware.num_processes, int) or spec.hardware.num_processes < 1:
        raise UserError(f"{source}: hardware.num_processes must be a whole number of at least 1, "
                        f"got {spec.hardware.num_processes!r}.")
    if not isinstance(spec.dataset.max_seq_length, int) or spec.dataset.max_seq_length < 1:
        raise UserError(f"{source}: dataset.max_seq_length must be a whole number of at least 1, "
                        f"got {spec.dataset.max_seq_length!r}.")
    if not 0 < float(spec.dataset.eval_fraction) < 1:
        raise UserError(f"{source}: dataset.eval_fraction must be between 0 and 1 (exclusive), "
                        f"got {spec.dataset.eval_fraction!r}.")
    if spec.tracking.report_to and isinstance(spec.tracking.report_to, str):
        spec.tracking.report_to = [spec.tracking.report_to]


def load(path: str | Path) -> RunSpec:
    """Load a spec file; a missing or malformed file is a UserError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"Spec file '{path}' does not exist. Pass the path of a run spec YAML "
                        "(see assets/specs/ for examples).")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise UserError(f"Spec file '{path}' is not valid YAML: {exc}. Fix the syntax and try again.") from exc
    spec = from_dict(data or {}, source=str(path))
    return resolve_paths(spec, path.parent)


def resolve_paths(spec: RunSpec, base: Path) -> RunSpec:
    """Make relative local paths in the spec absolute against ``base`` (the spec file's folder),
    so a spec copied into a run dir still points at the same files."""
    def fix(value: str | None) -> str | None:
        if not value:
            return value
        candidate = base / value
        return str(candidate.resolve()) if not Path(value).is_absolute() and candidate.exists() else value

    spec = copy.deepcopy(spec)
    spec.model.name_or_path = fix(spec.model.name_or_path) or ""
    spec.model.tokenizer = fix(spec.model.tokenizer)
    spec.dataset.train = fix(spec.dataset.train) or ""
    spec.dataset.eval = fix(spec.dataset.eval)
    return spec


def redact(data: Any) -> Any:
    """A copy of ``data`` with secret-looking keys and values replaced by REDACTED."""
    if isinstance(data, dict):
        return {k: (REDACTED if isinstance(k, str) and SECRET_KEY_PATTERN.search(k) and v else redact(v))
                for k, v in data.items()}
    if isinstance(data, list):
        return [redact(v) for v in data]
    if isinstance(data, str):
        return SECRET_VALUE_PATTERN.sub(REDACTED, data)
    return data


def dump(spec: RunSpec) -> str:
    """The spec as YAML with secrets redacted: this is what lands on disk."""
    return yaml.safe_dump(redact(spec.to_dict()), sort_keys=False)


def save(spec: RunSpec, path: str | Path) -> None:
    Path(path).write_text(dump(spec))
