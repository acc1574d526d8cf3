"""The simpletransformers runner: ``ClassificationModel`` (binary, multi-class, regression) from a run spec.

This module maps the spec onto simpletransformers (model type, ``ClassificationArgs``, the DataFrame layout
it reads) and runs the training flow. simpletransformers has no callbacks: the event stream (log, eval,
checkpoint records, stop/checkpoint requests, ``max_steps``) is hooked in from outside its training loop by
:mod:`runners.train.simpletransformers_hooks`.

A model directory with only a config.json is initialised randomly and saved (with its tokenizer) to
``run_dir/init_model``, because simpletransformers can only load weights from disk.
"""
from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

from runners import data
from runners import events as ev
from runners.errors import UserError, did_you_mean
from runners.plan import cadence
from runners.plan.models import WEIGHT_FILES, load_tokenizer, pretrained
from runners.spec import RunSpec
from runners.train.common import RankInfo
from runners.train.simpletransformers_hooks import StopTraining, StreamHooks, hooked, make_model_class

# simpletransformers' model types (its MODEL_CLASSES keys); any other config.model_type runs as "auto".
ST_MODEL_TYPES = ("albert", "auto", "bert", "bertweet", "bigbird", "camembert", "deberta", "debertav2", "distilbert",
                  "electra", "flaubert", "herbert", "layoutlm", "layoutlmv2", "longformer", "mobilebert", "mpnet",
                  "nystromformer", "rembert", "roberta", "squeezebert", "xlm", "xlmroberta", "xlnet")
CONFIG_TO_ST_TYPE = {"xlm-roberta": "xlmroberta", "deberta-v2": "debertav2"}
SCHEDULERS = {"linear": "linear_schedule_with_warmup", "cosine": "cosine_schedule_with_warmup",
              "cosine_with_restarts": "cosine_with_hard_restarts_schedule_with_warmup",
              "polynomial": "polynomial_decay_schedule_with_warmup", "constant": "constant_schedule",
              "constant_with_warmup": "constant_schedule_with_warmup"}
# runner_args keys that are ftui's, not ClassificationArgs fields.
FTUI_KEYS = ("model_type", "tokenizer_type")


def st_metric_name(name: str) -> str:
    """A spec/Trainer metric name as simpletransformers knows it (``eval_accuracy`` -> ``accuracy``)."""
    return name if name == "eval_loss" or not name.startswith("eval_") else name[5:]


def st_model_type(spec: RunSpec, model_dir: str) -> str:
    wanted = spec.runner_args.get("model_type")
    if wanted:
        if wanted not in ST_MODEL_TYPES:
            raise UserError(f"runner_args.model_type '{wanted}' is not a simpletransformers model type."
                            f"{did_you_mean(str(wanted), ST_MODEL_TYPES)} Choose one of: {', '.join(ST_MODEL_TYPES)}.")
        return str(wanted)
    from transformers import AutoConfig

    config_type = AutoConfig.from_pretrained(model_dir).model_type
    config_type = CONFIG_TO_ST_TYPE.get(config_type, config_type)
    return config_type if config_type in ST_MODEL_TYPES else "auto"


def prepare_model_dir(spec: RunSpec, run_dir: Path, num_labels: int, id2label: dict[int, str] | None,
                      hooks: StreamHooks) -> str:
    """A directory simpletransformers can load: the spec's model (or checkpoint to resume), or a random init
    saved to run_dir/init_model when the spec's directory has a config but no weights."""
    resume = spec.training.get("resume_from_checkpoint")
    if resume:
        path = Path(str(resume))
        candidates = [path] + sorted((p for p in path.parent.glob("checkpoint-*") if p.is_dir()),
                                     key=lambda p: p.stat().st_mtime, reverse=True)
        found = next((p for p in candidates if any((p / f).exists() for f in WEIGHT_FILES)), None)
        if found is None:
            raise UserError(f"Cannot resume from '{resume}': it has no model weights (simpletransformers saves weights in "
                            "checkpoint dirs only with save_steps, save_eval_checkpoints or a stop/checkpoint request).")
        hooks.emit(ev.MESSAGE, level="info", text=f"resuming from {found} (simpletransformers restarts the optimizer "
                                                  "and schedule; it skips the steps already trained)")
        return str(found)
    name = spec.model.name_or_path
    if pretrained(spec):  # model.init (preflight made sure the weights exist)
        if Path(name).is_dir() and Path(name).name.split("-")[-1].isdigit():
            # simpletransformers reads "<anything>-<N>" as a checkpoint of step N and would skip N steps
            link = run_dir / "init_model"
            link.symlink_to(Path(name).resolve(), target_is_directory=True)
            return str(link)
        return name
    from transformers import AutoConfig, AutoModelForSequenceClassification

    config = AutoConfig.from_pretrained(name, num_labels=num_labels)
    if id2label:
        config.id2label = dict(id2label)
        config.label2id = {v: k for k, v in id2label.items()}
    model = AutoModelForSequenceClassification.from_config(config)
    tokenizer = load_tokenizer(spec)
    target = run_dir / "init_model"
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    hooks.emit(ev.MESSAGE, level="warning", text=f"{name}: training from a random init (model.init: random) "
                                                 f"(saved to {target} for simpletransformers)")
    return str(target)


def classification_args(spec: RunSpec, run_dir: Path, num_train: int, use_cuda: bool, n_gpu: int,
                        regression: bool = False) -> dict[str, Any]:
    """ClassificationArgs values: the spec's training section, the planner's cadence, ftui's plumbing, then
    runner_args (any ClassificationArgs field, early stopping included) over all of them."""
    from simpletransformers.config.model_args import ClassificationArgs

    t = spec.training
    cad = cadence.simpletransformers_args(spec, num_train)
    output = run_dir / "output"
    metric = spec.cadence.metric_for_best_model or t.get("metric_for_best_model") or \
        ("eval_loss" if regression else cadence.default_metric(spec.task, spec.runner))
    batch, accum = int(t.get("per_device_train_batch_size", 8)), int(t.get("gradient_accumulation_steps", 1))
    epochs = int(math.ceil(float(t.get("num_train_epochs", 1))))
    total = max(1, math.ceil(num_train / batch) // accum * epochs)
    args: dict[str, Any] = {
        "output_dir": str(output), "best_model_dir": str(output / "best_model"), "cache_dir": str(output / "cache_dir"),
        "tensorboard_dir": str(output / "runs"), "overwrite_output_dir": True, "reprocess_input_data": True,
        "no_cache": True, "silent": True, "use_multiprocessing": False, "use_multiprocessing_for_evaluation": False,
        "learning_rate": float(t.get("learning_rate", 4e-5)), "num_train_epochs": epochs,
        "train_batch_size": batch, "gradient_accumulation_steps": accum,
        "eval_batch_size": int(t.get("per_device_eval_batch_size", batch)),
        "max_seq_length": spec.dataset.max_seq_length,
        "fp16": bool(t.get("fp16", False)) and use_cuda, "n_gpu": n_gpu,
        "manual_seed": int(t.get("seed", 42)),
        "evaluate_during_training": cad["evaluate_during_training"] and t.get("eval_strategy") != "no",
        "evaluate_during_training_steps": cadence.resolve_step(t.get("eval_steps"), total)
        or cad["evaluate_during_training_steps"],
        "evaluate_each_epoch": cad["evaluate_each_epoch"],
        "logging_steps": cadence.resolve_step(t.get("logging_steps"), total) or cad["logging_steps"],
        "save_steps": cadence.resolve_step(t.get("save_steps"), total) or cad["save_steps"],
        "save_eval_checkpoints": cad["save_eval_checkpoints"], "save_model_every_epoch": cad["save_model_every_epoch"],
        "save_best_model": cad["save_best_model"],
        "early_stopping_metric": st_metric_name(metric),
        "early_stopping_metric_minimize": not bool(t.get("greater_is_better", not cadence.lower_is_better(metric))),
    }
    for key in ("warmup_steps", "weight_decay", "max_grad_norm", "adam_epsilon", "dataloader_num_workers"):
        if key in t:
            args[key] = t[key]
    if "lr_scheduler_type" in t:
        if t["lr_scheduler_type"] not in SCHEDULERS:
            raise UserError(f"training.lr_scheduler_type '{t['lr_scheduler_type']}' has no simpletransformers "
                            f"equivalent. Choose one of: {', '.join(SCHEDULERS)} (or runner_args.scheduler).")
        args["scheduler"] = SCHEDULERS[t["lr_scheduler_type"]]
    project = spec.tracking.wandb_project or (spec.name if "wandb" in spec.tracking.report_to else None)
    if project:
        args["wandb_project"] = project
    valid = {f.name for f in fields(ClassificationArgs)}
    for key, value in spec.runner_args.items():
        if key in FTUI_KEYS:
            continue
        if key not in valid:
            raise UserError(f"runner_args.{key} is not a simpletransformers ClassificationArgs field."
                            f"{did_you_mean(key, valid)} See simpletransformers' ClassificationArgs for the options.")
        args[key] = value
    if args.get("wandb_project"):
        args["wandb_kwargs"] = {"name": spec.tracking.run_name or spec.name, "dir": str(run_dir),
                                **(args.get("wandb_kwargs") or {})}
    return args


def configure_wandb(run_dir: Path, spec: RunSpec) -> None:
    os.environ.setdefault("WANDB_DIR", str(run_dir))
    if spec.tracking.wandb_mode:
        os.environ["WANDB_MODE"] = spec.tracking.wandb_mode
    elif not os.environ.get("WANDB_API_KEY") and not (Path.home() / ".netrc").exists():
        os.environ.setdefault("WANDB_MODE", "offline")


def st_frame(df: Any, roles: dict[str, str], label_map: dict[Any, Any] | None) -> Any:
    """The DataFrame layout simpletransformers reads: text(/text_a, text_b) and labels."""
    import pandas as pd

    labels = df[roles["label"]].map(label_map) if label_map else df[roles["label"]].astype(float)
    if roles.get("text_pair"):
        return pd.DataFrame({"text_a": df[roles["text"]].astype(str), "text_b": df[roles["text_pair"]].astype(str),
                             "labels": labels})
    return pd.DataFrame({"text": df[roles["text"]].astype(str), "labels": labels})


def extra_metrics(num_labels: int) -> dict[str, Any]:
    """The metrics ftui adds to simpletransformers' own (mcc, tp/tn/fp/fn, auroc, auprc): accuracy and F1, as
    ``eval_model`` keyword arguments (``ftui eval`` passes the same)."""
    from sklearn.metrics import accuracy_score, f1_score

    average = "binary" if num_labels == 2 else "macro"
    return {"accuracy": accuracy_score, "f1": lambda y, p: f1_score(y, p, average=average, zero_division=0)}


def _python(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def train(spec: RunSpec, run_dir: Path) -> None:
    import torch
    from transformers import set_seed

    rank = RankInfo.from_env()
    if rank.world_size > 1:
        raise UserError("simpletransformers trains in one process (it spreads over GPUs itself with n_gpu): set "
                        "hardware.num_processes to 1, or use runner hf_trainer for multi-process training.")
    run_dir = Path(run_dir)
    set_seed(int(spec.training.get("seed", 42)))
    train_df, eval_df = data.load_splits(spec)
    roles = data.detect_columns(train_df, spec.dataset, "seq-cls", spec.dataset.train)
    labels = [_python(v) for v in data.label_list(train_df, eval_df, roles["label"])]
    regression = all(isinstance(v, float) for v in labels) and any(not float(v).is_integer() for v in labels)
    label_map = None if regression else {v: i for i, v in enumerate(labels)}
    num_labels = 1 if regression else len(labels)
    use_cuda = torch.cuda.is_available() and spec.hardware.strategy != "cpu"
    n_gpu = max(1, torch.cuda.device_count()) if use_cuda else 1
    args = classification_args(spec, run_dir, len(train_df), use_cuda, n_gpu, regression)
    if regression:
        args["regression"] = True
    metrics = {} if regression else extra_metrics(num_labels)
    if args["early_stopping_metric"] not in ("eval_loss", "mcc", "auroc", "auprc", "tp", "tn", "fp", "fn") \
            and args["early_stopping_metric"] not in metrics:
        raise UserError(f"The best-model metric '{args['early_stopping_metric']}' is not one simpletransformers computes "
                        f"here (eval_loss, mcc{', accuracy, f1' if metrics else ''}; auroc and auprc for binary "
                        "labels). Set cadence.metric_for_best_model to one of them.")
    steps_per_epoch = math.ceil(len(train_df) / args["train_batch_size"]) // args["gradient_accumulation_steps"]
    total = steps_per_epoch * args["num_train_epochs"]
    max_steps = int(spec.training.get("max_steps") or 0) or None
    hooks = StreamHooks(run_dir, min(total, max_steps) if max_steps else total, steps_per_epoch,
                        args["train_batch_size"] * args["gradient_accumulation_steps"], max_steps)
    if args.get("wandb_project"):
        configure_wandb(run_dir, spec)
    model_dir = prepare_model_dir(spec, run_dir, num_labels,
                                  None if regression else {i: str(v) for i, v in enumerate(labels)}, hooks)
    start_step = 0
    if spec.training.get("resume_from_checkpoint"):
        with contextlib.suppress(ValueError, IndexError):
            start_step = int(Path(model_dir).name.split("-")[1])  # as simpletransformers reads it
        hooks.step = start_step
    model_type = st_model_type(spec, model_dir)
    model_cls = make_model_class(hooks)
    model = model_cls(model_type, model_dir, num_labels=num_labels, args=args, use_cuda=use_cuda,
                      tokenizer_type=spec.runner_args.get("tokenizer_type"))
    hooks.model = model
    st_train, st_eval = st_frame(train_df, roles, label_map), st_frame(eval_df, roles, label_map)
    devices = [f"cuda:{i}" for i in range(n_gpu)] if use_cuda else ["cpu"]
    hooks.emit(ev.START, world_size=1, ranks=[0], devices=devices, total_steps=hooks.total_steps,
               num_epochs=args["num_train_epochs"], num_train_samples=len(train_df), spec_hash=spec.spec_hash(),
               runner=spec.runner, task=spec.task, model=spec.model.name_or_path, pid=os.getpid(),
               strategy=spec.hardware.strategy, resumed_step=start_step,
               train_batch_size=args["train_batch_size"] * args["gradient_accumulation_steps"] * n_gpu,
               eval_steps=args["evaluate_during_training_steps"], logging_steps=args["logging_steps"],
               num_labels=num_labels, model_type=model_type)
    stop_reason = None
    started = time.time()
    with hooked(hooks, args["logging_steps"]):
        try:
            model.train_model(st_train, eval_df=st_eval, **metrics)
        except StopTraining as stop:
            stop_reason = stop.reason
            hooks.save_checkpoint()
            if stop.reason == "max_steps":
                hooks.emit(ev.MESSAGE, level="info", text=f"reached max_steps {max_steps}")
                stop_reason = None
            model.save_model(model=model.model)  # the final model in output_dir, as train_model would
    runtime = time.time() - started
    if stop_reason:
        hooks.emit(ev.STOP, step=hooks.step, reason=stop_reason)
    elif hooks.step < hooks.total_steps:
        hooks.emit(ev.MESSAGE, level="info", text=f"early stopping at step {hooks.step} of {hooks.total_steps} "
                                                   f"({args['early_stopping_metric']} stopped improving)")
    if args.get("wandb_project"):
        with contextlib.suppress(Exception):
            import wandb

            if wandb.run is not None:
                wandb.finish()
    trained = hooks.step - start_step
    summary = {"train_runtime": runtime, "train_loss": hooks.train_loss(), "epoch": hooks.epoch,
               "train_samples_per_second": trained * hooks.train_batch / runtime if runtime else None,
               "train_steps_per_second": trained / runtime if runtime else None}
    hooks.emit(ev.FINISH, step=hooks.step, stopped=bool(stop_reason),
               metrics={k: v for k, v in summary.items() if isinstance(v, (int, float)) and math.isfinite(v)})
    hooks.writer.close()
