"""Eval/save/log cadence: how often to log, evaluate and save, computed the way the trainers count.

The Trainer counts optimizer steps per process: ``ceil(ceil(n / world) / batch)`` micro-batches per
epoch, ``ceil(micro / accumulation)`` updates per epoch, ``ceil(epochs * updates)`` in all. Step
fractions below 1 become ``ceil(max_steps * fraction)`` at run time, so divisibility (save steps a
multiple of eval steps, which ``load_best_model_at_end`` requires) is checked after resolving.
simpletransformers counts per single GPU and evaluates again at the end of every epoch.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, TypedDict

from runners.errors import UserError
from runners.spec import RunSpec

if TYPE_CHECKING:
    from transformers import TrainingArguments


class SmokeTest(TypedDict):
    max_train_samples: int
    save_strategy: str
    load_best_model_at_end: bool


SMOKE_TEST: SmokeTest = {"max_train_samples": 100, "save_strategy": "no", "load_best_model_at_end": False}
CADENCE_KEYS = ("logging_steps", "eval_strategy", "eval_steps", "save_strategy", "save_steps", "save_total_limit",
                "load_best_model_at_end", "metric_for_best_model", "greater_is_better", "logging_strategy")


@dataclass
class Cadence:
    total_steps: int
    steps_per_epoch: int
    world_size: int
    training_arguments: dict[str, Any]
    resolved: dict[str, int | None]
    evaluations: int
    saves: int
    validated: bool | None = None  # None: not checked against TrainingArguments
    validation_error: str | None = None
    simpletransformers: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def default_metric(task: str, runner: str) -> str:
    """The metric_for_best_model every runner computes for this task."""
    if runner != "sentence_transformers" and task in ("seq-cls", "token-cls"):
        return "eval_accuracy"
    return "eval_loss"


def lower_is_better(metric: str) -> bool:
    """Losses and errors are minimised; accuracies, F1, correlations, v-measure are maximised."""
    return metric.lower().endswith(("loss", "perplexity", "mse", "rmse", "mae", "error"))


def total_steps(num_samples: int, batch: int, accumulation: int, epochs: float, world_size: int,
                max_steps: int | None = None) -> tuple[int, int]:
    """(total optimizer steps, steps per epoch) exactly as the Trainer computes them."""
    if num_samples < 1:
        raise UserError(f"The training set has {num_samples} samples: the dataset must have at least one row.")
    per_process = math.ceil(num_samples / world_size)
    micro = math.ceil(per_process / batch)
    per_epoch = max(micro // accumulation + int(micro % accumulation > 0), 1)
    if max_steps and max_steps > 0:
        return int(max_steps), per_epoch
    return max(1, math.ceil(epochs * per_epoch)), per_epoch


def resolve_step(value: float | int | None, total: int) -> int | None:
    if value is None:
        return None
    return math.ceil(total * value) if value < 1 else int(value)


def suggest(spec: RunSpec, num_samples: int, world_size: int) -> Cadence:
    """Fill the cadence fields the spec leaves unset; keep and check the ones it sets."""
    t = dict(spec.training)
    if spec.cadence.smoke_test:
        t.update({k: v for k, v in SMOKE_TEST.items() if k != "max_train_samples"})
        num_samples = min(num_samples, SMOKE_TEST["max_train_samples"])
    if spec.dataset.max_train_samples:
        num_samples = min(num_samples, spec.dataset.max_train_samples)
    batch = int(t.get("per_device_train_batch_size", 8))
    accum = int(t.get("gradient_accumulation_steps", 1))
    epochs = float(t.get("num_train_epochs", 3.0))
    total, per_epoch = total_steps(num_samples, batch, accum, epochs, world_size, t.get("max_steps"))
    notes: list[str] = []
    if spec.cadence.auto:
        n_evals = max(1, spec.cadence.n_evals)
        eval_steps = max(1, total // n_evals)
        saves_every = max(1, round(n_evals / max(1, spec.cadence.n_saves)))
        metric = default_metric(spec.task, spec.runner)
        t.setdefault("logging_strategy", "steps")
        t.setdefault("logging_steps", spec.cadence.n_logs and max(1, total // spec.cadence.n_logs) or 1)
        if t.get("eval_strategy", "steps") == "steps":
            t.setdefault("eval_strategy", "steps")
            t.setdefault("eval_steps", eval_steps)
        if t.get("save_strategy", "steps") == "steps":
            t.setdefault("save_strategy", t["eval_strategy"])
            if t["save_strategy"] == "steps":
                t.setdefault("save_steps", (resolve_step(t.get("eval_steps"), total) or eval_steps) * saves_every)
        best_ok = t.get("save_strategy") not in ("no",) and t.get("eval_strategy") not in ("no", None)
        t.setdefault("load_best_model_at_end", best_ok)
        if t["load_best_model_at_end"]:
            t.setdefault("metric_for_best_model", spec.cadence.metric_for_best_model or metric)
            t.setdefault("greater_is_better", not lower_is_better(str(t["metric_for_best_model"])))
            t.setdefault("save_total_limit", 2)
    resolved = {k: resolve_step(t.get(k), total) for k in ("logging_steps", "eval_steps", "save_steps")}
    if resolved["eval_steps"] is None and t.get("eval_strategy") == "steps":
        resolved["eval_steps"] = resolved["logging_steps"]
    check_divisible(t, resolved)
    evals = _count(t.get("eval_strategy"), resolved["eval_steps"], total, per_epoch, epochs)
    saves = _count(t.get("save_strategy"), resolved["save_steps"], total, per_epoch, epochs)
    if t.get("eval_strategy") == "steps" and resolved["eval_steps"] and resolved["eval_steps"] > total:
        notes.append(f"eval_steps {resolved['eval_steps']} is more than the {total} total steps: no evaluation will run")
    cadence = Cadence(total_steps=total, steps_per_epoch=per_epoch, world_size=world_size,
                      training_arguments={k: t[k] for k in CADENCE_KEYS if k in t}, resolved=resolved,
                      evaluations=evals, saves=saves, notes=notes)
    if spec.runner == "simpletransformers":
        cadence.simpletransformers = simpletransformers_cadence(num_samples, batch, accum, epochs, spec.cadence.n_evals)
    return cadence


def _count(strategy: str | None, every: int | None, total: int, per_epoch: int, epochs: float) -> int:
    if strategy == "steps" and every:
        return total // every
    if strategy == "epoch":
        return math.ceil(epochs)
    return 0


def check_divisible(t: dict[str, Any], resolved: dict[str, int | None]) -> None:
    """load_best_model_at_end needs every save to land on an evaluation, after fractions resolve."""
    if not t.get("load_best_model_at_end") or t.get("save_strategy") == "best":
        return
    if t.get("eval_strategy") != t.get("save_strategy"):
        raise UserError(f"Impossible cadence: load_best_model_at_end needs save_strategy ('{t.get('save_strategy')}') "
                        f"to equal eval_strategy ('{t.get('eval_strategy')}'). Set both to the same value, or set "
                        "load_best_model_at_end to false.")
    save, ev = resolved.get("save_steps"), resolved.get("eval_steps")
    if t.get("eval_strategy") == "steps" and save and ev and save % ev:
        raise UserError(f"Impossible cadence: save_steps resolves to {save} and eval_steps to {ev} (fractions become "
                        f"ceil(total_steps * fraction)), and {save} is not a multiple of {ev}, which "
                        f"load_best_model_at_end requires. Use save_steps = {ev * max(1, round(save / ev))}, or whole "
                        "step numbers.")


def simpletransformers_cadence(num_samples: int, batch: int, accum: int, epochs: float, n_evals: int,
                               n_logs: int = 100) -> dict[str, Any]:
    """simpletransformers' own counting: per single GPU, plus one evaluation at each epoch's end."""
    micro = math.ceil(num_samples / batch)
    total = max(1, (micro // accum) * math.ceil(epochs))
    every = max(1, round(total / max(1, n_evals)))
    return {"total_steps": total, "evaluate_during_training": True, "evaluate_during_training_steps": every,
            "logging_steps": max(1, round(total / n_logs)), "evaluate_each_epoch": True,
            "evaluations": total // every + math.ceil(epochs), "save_steps": -1, "save_eval_checkpoints": False,
            "save_model_every_epoch": False, "save_best_model": True}


def validate_with_transformers(training_arguments: dict[str, Any], output_dir: str = "/tmp/ftui-validate",
                               runner: str = "hf_trainer") -> str | None:
    """Construct the real TrainingArguments (the runner's own class); return its refusal text, or None.

    stdout goes to stderr meanwhile: transformers prints "[INFO] Running in WANDB offline mode" on import
    of its integrations when WANDB_MODE=offline, which would corrupt `ftui --plan --json`.
    """
    import contextlib
    import logging
    import sys
    import warnings

    args = {k: v for k, v in training_arguments.items() if k not in ("output_dir",)}
    args.setdefault("use_cpu", True)
    for key in ("fp16", "bf16", "tf32"):
        args.pop(key, None)  # device checks, not cadence: they depend on the machine that validates
    with contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        arguments: type[TrainingArguments]
        if runner == "sentence_transformers":  # accepts its extras (prompts, batch_sampler, warmup_ratio, ...)
            from sentence_transformers import SentenceTransformerTrainingArguments
            arguments = SentenceTransformerTrainingArguments
        else:
            from transformers import TrainingArguments as HFTrainingArguments
            arguments = HFTrainingArguments
        logging.getLogger("transformers").setLevel(logging.ERROR)
        try:
            arguments(output_dir=output_dir, **args)
        except (ValueError, TypeError) as exc:
            return str(exc)
    return None


def training_arguments(spec: RunSpec, num_train_samples: int, world_size: int) -> dict[str, Any]:
    """The spec's training dict with the suggested cadence filled in (what the HF runner passes)."""
    merged = dict(spec.training)
    merged.update({k: v for k, v in suggest(spec, num_train_samples, world_size).training_arguments.items()
                   if k not in spec.training})
    return merged


def simpletransformers_args(spec: RunSpec, num_train_samples: int) -> dict[str, Any]:
    t = spec.training
    return simpletransformers_cadence(num_train_samples, int(t.get("per_device_train_batch_size", 8)),
                                      int(t.get("gradient_accumulation_steps", 1)),
                                      float(t.get("num_train_epochs", 1)), spec.cadence.n_evals)
