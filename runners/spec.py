"""The run spec: one YAML file that fully describes a run.

Sections: ``model``, ``dataset``, ``hardware``, ``training`` (exact ``transformers.TrainingArguments``
field names, so users can paste what they know), ``cadence``, ``tracking`` and ``runner_args``
(runner-specific extras). Unknown keys anywhere are a :class:`UserError` naming the key and the
closest valid one. Values are typed (``runners.spec_types``): a wrong type is a UserError naming the
key, the value (unless it is a secret) and the expected type. The spec is plain data: loading it never
imports torch or transformers; the TrainingArguments field list and types ship in
``assets/training_arguments_fields.json`` (a test keeps them in step with the installed transformers).
Secrets are redacted on disk by the precise rule of ``runners.redaction``, which never changes a setting.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import re
from collections.abc import Hashable
from dataclasses import asdict, dataclass, field, fields
from functools import cache, lru_cache
from pathlib import Path
from typing import Any, cast

import yaml

from runners import chat_data, paths, peft_rules, redaction, spec_types, strategies
from runners.errors import UserError, did_you_mean

ASSETS = paths.ASSETS

RUNNERS = ("hf_trainer", "simpletransformers", "sentence_transformers", "sft")
TASKS = ("seq-cls", "causal-lm", "seq2seq", "token-cls", "embedding")
STRATEGIES = strategies.NAMES
LAUNCHERS = strategies.LAUNCHERS
DTYPES = ("auto", "float32", "bfloat16", "float16")
ATTN_IMPLEMENTATIONS = ("eager", "sdpa", "flash_attention_2")
MODEL_INITS = ("pretrained", "random")
OPTIMIZERS = strategies.OPTIMIZERS

# Secret values are never written to disk (spec, launch.sh, logs): see runners/redaction.py for the rule.
REDACTED = redaction.REDACTED


class _Loader(yaml.SafeLoader):
    """PyYAML reads YAML 1.1, where ``5e-5`` (no dot) is a string; YAML 1.2 and every user read it as
    a number. Resolving it as a float here is parsing, not coercion: a quoted ``"5e-5"`` stays a string."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))


@dataclass
class LoraSpec:
    """LoRA adapters (peft); how ftui turns them into peft's LoraConfig: runners/peft_rules.py."""

    r: int = 16
    alpha: int = 16
    dropout: float = 0.05
    # module names as peft matches them (a name, or the end of one: "q_proj", "attention.self.query"), or
    # ["all-linear"]; unset: peft's default for the model family (bert: query, value; llama: q_proj, v_proj)
    target_modules: list[str] | None = None
    modules_to_save: list[str] | None = None  # trained whole and saved with the adapter (seq-cls adds its head)
    use_dora: bool = False
    use_rslora: bool = False


@dataclass
class ModelSpec:
    name_or_path: str = ""
    torch_dtype: str = "auto"
    attn_implementation: str = "sdpa"
    load_in_4bit: bool = False  # QLoRA: NF4 with double quantization (bitsandbytes, CUDA only); needs lora
    load_in_8bit: bool = False  # LLM.int8 base (bitsandbytes, CUDA only); needs lora
    lora: LoraSpec | None = None
    tokenizer: str | None = None
    num_labels: int | None = None
    # "pretrained": weights must be obtainable (local files, the HF cache or a reachable hub);
    # "random": train from a random init built from the config (no weights needed).
    init: str = "pretrained"


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
    # rows with an empty text/label: an error before launch (False), or dropped, counted, by preflight and runner
    drop_empty: bool = False
    # the sft runner (trl's SFTTrainer; docs/sft.md): the data's format (auto: from the column names), a chat
    # template (Jinja text or a .jinja file) for a tokenizer without one, packing into max_seq_length blocks, and
    # loss only on the completions (prompt-completion data) or the assistant turns (messages data)
    format: str = "auto"
    chat_template: str | None = None
    packing: bool = False
    completion_only_loss: bool = False
    assistant_only_loss: bool = False


@dataclass
class HardwareSpec:
    strategy: str = "cpu"
    num_processes: int = 1  # per node: the GPUs of one node (or CPU processes without GPUs)
    nodes: int = 1  # machines; the world size is nodes x num_processes
    launcher: str = "auto"
    gpus: list[int] | None = None
    gpu_memory_gib: float | None = None
    interconnect_gbps: float | None = None  # across nodes, per node (Gb/s); None: the GPU's typical node


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
        """A short hash of the spec without its secrets: two runs of the same setup share it, with or
        without a hub token (the training process moves ``hub_token`` out of the spec, see runners.train)."""
        text = json.dumps(redaction.without_secrets(self.to_dict()), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


SECTION_TYPES = {
    "model": ModelSpec, "dataset": DatasetSpec, "hardware": HardwareSpec,
    "cadence": CadenceSpec, "tracking": TrackingSpec,
}


@lru_cache(maxsize=1)
def training_argument_types() -> tuple[dict[str, str], dict[str, list[str]]]:
    """(field -> type string, field -> enum choices) of the ``training`` section, from assets."""
    data = json.loads((ASSETS / "training_arguments_fields.json").read_text())
    return data.get("types", {}), data.get("choices", {})


@cache
def _section_types(cls: type) -> dict[str, str]:
    return spec_types.dataclass_types(cls)


def check_types(spec: RunSpec, source: str) -> None:
    """Every value against its declared type: dataclass hints for the sections, the shipped
    TrainingArguments types for ``training`` (runner_args are runner-specific and checked there)."""
    def section(obj: Any, where: str) -> None:
        # a class is hashable; mypy checks type[...] against Hashable through the metaclass and rejects it
        for name, type_str in _section_types(cast(Hashable, type(obj))).items():
            value = getattr(obj, name)
            if dataclasses.is_dataclass(value):
                section(value, f"{where}.{name}" if where else name)
            else:
                spec_types.check(f"{where}.{name}" if where else name, value, type_str, source)

    section(spec, "")
    types, choices = training_argument_types()
    if isinstance(spec.training, dict):
        for key, value in spec.training.items():
            spec_types.check(f"training.{key}", value, types.get(key, "any"), source, choices.get(key))


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
    if kwargs.get("runner") == "sft":
        kwargs.setdefault("task", "causal-lm")  # the one task the sft runner trains
    spec = RunSpec(**kwargs)
    validate(spec, source)
    return spec


def _choice(value: Any, choices: tuple[str, ...], what: str, source: str) -> None:
    if value not in choices:
        raise UserError(f"{source}: {what} '{value}' is not supported.{did_you_mean(str(value), choices)} "
                        f"Choose one of: {', '.join(choices)}.")


def validate(spec: RunSpec, source: str = "spec") -> None:
    """Checks that need no imports: types, names, choices, positive sizes, known training keys."""
    if isinstance(spec.tracking.report_to, str):  # report_to: wandb means [wandb], as in TrainingArguments
        spec.tracking.report_to = [spec.tracking.report_to] if spec.tracking.report_to else []
    if not isinstance(spec.training, dict):
        raise UserError(f"{source}: 'training' must be a mapping of TrainingArguments fields to values.")
    valid = training_argument_fields()
    for key in spec.training:
        if key not in valid:
            raise UserError(f"{source}: unknown training argument 'training.{key}'.{did_you_mean(str(key), valid)} "
                            "The 'training' section takes transformers.TrainingArguments field names.")
    check_types(spec, source)
    _choice(spec.runner, RUNNERS, "runner", source)
    _choice(spec.task, TASKS, "task", source)
    _choice(spec.hardware.strategy, STRATEGIES, "hardware.strategy", source)
    _choice(spec.hardware.launcher, LAUNCHERS, "hardware.launcher", source)
    _choice(spec.model.torch_dtype, DTYPES, "model.torch_dtype", source)
    _choice(spec.model.attn_implementation, ATTN_IMPLEMENTATIONS, "model.attn_implementation", source)
    _choice(spec.model.init, MODEL_INITS, "model.init", source)
    _check_ranges(spec, source)
    _check_sft(spec, source)
    for key in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
        value = spec.training.get(key)
        if value is not None and (not isinstance(value, int) or value < 1):
            raise UserError(f"{source}: training.{key} must be a whole number of at least 1, got {value!r}.")
    if not isinstance(spec.hardware.num_processes, int) or spec.hardware.num_processes < 1:
        raise UserError(f"{source}: hardware.num_processes must be a whole number of at least 1, "
                        f"got {spec.hardware.num_processes!r}.")
    _check_nodes(spec.hardware, source)
    if not isinstance(spec.dataset.max_seq_length, int) or spec.dataset.max_seq_length < 1:
        raise UserError(f"{source}: dataset.max_seq_length must be a whole number of at least 1, "
                        f"got {spec.dataset.max_seq_length!r}.")
    if not 0 < float(spec.dataset.eval_fraction) < 1:
        raise UserError(f"{source}: dataset.eval_fraction must be between 0 and 1 (exclusive), "
                        f"got {spec.dataset.eval_fraction!r}.")


def _check_nodes(hw: HardwareSpec, source: str) -> None:
    """Several machines need a launcher that starts one process group over all of them (runners/launch/multinode.py)."""
    if not isinstance(hw.nodes, int) or isinstance(hw.nodes, bool) or hw.nodes < 1:
        raise UserError(f"{source}: hardware.nodes must be a whole number of at least 1 (the machines of the run), "
                        f"got {hw.nodes!r}.")
    if hw.nodes > 1 and hw.launcher == "python":
        raise UserError(f"{source}: hardware.nodes is {hw.nodes}, but hardware.launcher python runs one process on one "
                        "machine. Set hardware.launcher to torchrun, accelerate, deepspeed or auto, or set hardware.nodes "
                        "to 1.")
    if hw.nodes > 1 and hw.strategy == "single":
        raise UserError(f"{source}: hardware.nodes is {hw.nodes}, but hardware.strategy single trains on one GPU. Choose "
                        "a multi-GPU strategy (ddp, zero2, zero3, fsdp; cpu for CPU processes), or set hardware.nodes to 1.")


SFT_DATASET_KEYS = ("format", "chat_template", "packing", "completion_only_loss", "assistant_only_loss")


def _check_sft(spec: RunSpec, source: str) -> None:
    """The sft runner's dataset settings: only with that runner, which trains causal-lm."""
    ds = spec.dataset
    _choice(ds.format, chat_data.FORMATS, "dataset.format", source)
    if spec.runner != "sft":
        defaults = DatasetSpec()
        used = [k for k in SFT_DATASET_KEYS if getattr(ds, k) != getattr(defaults, k)]
        if used:
            raise UserError(f"{source}: dataset.{used[0]} is a setting of the sft runner, but the runner is "
                            f"'{spec.runner}', which ignores it. Set runner: sft, or remove dataset.{used[0]}.")
        return
    if spec.task != "causal-lm":
        raise UserError(f"{source}: the sft runner trains causal language models (task causal-lm), but the task is "
                        f"'{spec.task}'. Set task: causal-lm (or leave task out), or choose another runner.")
    if ds.assistant_only_loss and ds.format in ("prompt-completion", "text"):
        raise UserError(f"{source}: dataset.assistant_only_loss needs conversations (dataset.format messages), but "
                        f"dataset.format is {ds.format}. Use completion_only_loss for prompt-completion data.")
    if ds.completion_only_loss and ds.format in ("messages", "text"):
        raise UserError(f"{source}: dataset.completion_only_loss needs prompt-completion data, but dataset.format is "
                        f"{ds.format}. Use assistant_only_loss for conversations.")


def _check_ranges(spec: RunSpec, source: str) -> None:
    """Values of the right type that no run can use (TrainingArguments accepts them, then torch fails)."""
    t = spec.training
    if "learning_rate" in t and t["learning_rate"] <= 0:
        raise UserError(f"{source}: training.learning_rate must be positive, got {t['learning_rate']!r}: "
                        "the weights would not learn.")
    epochs, max_steps = t.get("num_train_epochs"), t.get("max_steps")
    if epochs is not None and epochs <= 0 and not (max_steps is not None and max_steps > 0):
        raise UserError(f"{source}: training.num_train_epochs must be positive, got {epochs!r}: nothing would be "
                        "trained. Give a positive number of epochs, or a positive training.max_steps.")
    peft_rules.validate(spec.model, source)  # LoRA and quantization values


def load(path: str | Path, secrets: list[tuple[list[Any], Any]] | None = None) -> RunSpec:
    """Load a spec file; a missing or malformed file is a UserError naming the file.

    ``secrets`` are redacted slots to fill back (``runners.redaction.restore``): the training entry
    point passes the ones the launcher handed over in its environment, so a redacted ``spec.yaml``
    still runs with every value exactly as written."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"Spec file '{path}' does not exist. Pass the path of a run spec YAML "
                        "(see assets/specs/ for examples).")
    try:
        data = yaml.load(path.read_text(), Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise UserError(f"Spec file '{path}' is not valid YAML: {exc}. Fix the syntax and try again.") from exc
    if secrets is not None:
        data = redaction.restore(data or {}, secrets)
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
    template = spec.dataset.chat_template
    if template and "{{" not in template and "{%" not in template:  # a template file, not the template itself
        spec.dataset.chat_template = fix(template)
    return spec


def redact(data: Any) -> Any:
    """A copy of ``data`` with secret values replaced by REDACTED (rule: runners/redaction.py)."""
    return redaction.redact(data)


def dump(spec: RunSpec) -> str:
    """The spec as YAML with secrets redacted: this is what lands on disk."""
    return yaml.safe_dump(redact(spec.to_dict()), sort_keys=False)


def save(spec: RunSpec, path: str | Path) -> None:
    Path(path).write_text(dump(spec))
