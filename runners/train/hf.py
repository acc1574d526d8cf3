"""The Hugging Face Trainer runner: sequence classification, causal LM and seq2seq from a run spec.

Runs in every rank of the training job. The model comes from a hub id or a local directory; with
``model.init: random`` it is built from its config with a random init (said in the event stream),
which is how the demo and the tests train offline. With ``model.lora`` the model is wrapped in peft adapters
(on a 4/8-bit bitsandbytes base with ``model.load_in_4bit``/``load_in_8bit``): runners/train/adapters.py, which
the SFT runner shares. Metrics are computed in-process: accuracy and F1 for classification, perplexity for
language modelling.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runners import data, rundir
from runners import events as ev
from runners.errors import UserError
from runners.plan import cadence
from runners.plan.models import load_tokenizer, pretrained
from runners.spec import RunSpec
from runners.train import adapters
from runners.train.callback import make_event_callback
from runners.train.common import RankInfo, configure_tracking, trainer_plumbing


def _dtype_kwargs(spec: RunSpec) -> dict[str, Any]:
    out: dict[str, Any] = {"attn_implementation": spec.model.attn_implementation}
    if spec.model.torch_dtype != "auto":
        import torch

        out["dtype"] = getattr(torch, spec.model.torch_dtype)
    return out


def load_model(spec: RunSpec, auto_class: Any, writer: ev.EventWriter | None, base_dir: Path | None = None,
               pad_token_id: int | None = None, **config_kwargs: Any) -> Any:
    """from_pretrained with model.init pretrained (quantized by bitsandbytes with model.load_in_4bit/8bit); a random
    init from the config with model.init random (said in the events); wrapped in LoRA adapters with model.lora."""
    from transformers import AutoConfig

    name = spec.model.name_or_path
    if pretrained(spec):
        model = auto_class.from_pretrained(name, **config_kwargs, **_dtype_kwargs(spec), **adapters.load_kwargs(spec))
    else:
        config = AutoConfig.from_pretrained(name, **config_kwargs)
        if writer:
            writer.emit(ev.MESSAGE, level="warning", text=f"{name}: training from a random init (model.init: random)")
        kwargs = _dtype_kwargs(spec)
        config._attn_implementation = kwargs.pop("attn_implementation")
        model = auto_class.from_config(config, **kwargs)
    return adapters.wrap(spec, model, writer, base_dir, pad_token_id) if spec.model.lora else model


def classification_metrics(eval_pred: Any) -> dict[str, float]:
    """The seq-cls evaluation metrics (``ftui eval`` computes the same on a held-out file)."""
    import numpy as np
    from sklearn.metrics import f1_score

    logits, labels = eval_pred.predictions, eval_pred.label_ids
    logits = logits[0] if isinstance(logits, tuple) else logits
    if logits.ndim == 2 and logits.shape[1] == 1:  # regression
        preds = logits[:, 0]
        return {"mse": float(np.mean((preds - labels) ** 2))}
    preds = logits.argmax(-1)
    return {"accuracy": float((preds == labels).mean()),
            "f1": float(f1_score(labels, preds, average="binary" if logits.shape[-1] == 2 else "macro"))}


def build_datasets(spec: RunSpec, tokenizer: Any, train_df: Any, eval_df: Any,
                   roles: dict[str, str]) -> tuple[Any, Any, dict[str, Any]]:
    """Tokenised datasets, the collator and model kwargs (labels) for the task."""
    from datasets import Dataset

    extra: dict[str, Any] = {}
    mapping: dict[Any, int] = {}
    regression = False
    if spec.task == "seq-cls":
        labels = data.label_list(train_df, eval_df, roles["label"])
        regression = all(isinstance(v, float) and not float(v).is_integer() for v in labels[:50]) and len(labels) > 20
        mapping = {v: i for i, v in enumerate(labels)}
        extra = {"num_labels": 1} if regression else {
            "num_labels": len(labels), "id2label": {i: str(v) for v, i in mapping.items()},
            "label2id": {str(v): i for v, i in mapping.items()}}
    encode, collator = encoder(spec, tokenizer, roles, mapping, regression)
    columns = list(train_df.columns)
    train_ds = Dataset.from_pandas(train_df, preserve_index=False).map(encode, batched=True, remove_columns=columns)
    eval_ds = Dataset.from_pandas(eval_df, preserve_index=False).map(encode, batched=True, remove_columns=list(eval_df.columns))
    return train_ds, eval_ds, {"collator": collator, **extra}


def encoder(spec: RunSpec, tokenizer: Any, roles: dict[str, str], mapping: dict[Any, int],
            regression: bool = False) -> tuple[Callable[[dict[str, list]], dict[str, Any]], Any]:
    """The batch encoding and the collator of the task (seq-cls labels through ``mapping``: value -> id);
    ``ftui eval`` encodes a held-out file with them."""
    from transformers import DataCollatorForLanguageModeling, DataCollatorForSeq2Seq, DataCollatorWithPadding

    max_len = spec.dataset.max_seq_length
    text, pair = roles["text"], roles.get("text_pair")
    collator: Callable[[list[dict[str, Any]]], dict[str, Any]]  # the three collators share no base class
    if spec.task == "seq-cls":
        def encode(batch: dict[str, list]) -> dict[str, Any]:
            out = tokenizer(batch[text], batch[pair] if pair else None, truncation=True, max_length=max_len)
            label_values = batch[roles["label"]]
            out["labels"] = [float(v) for v in label_values] if regression else [mapping[v] for v in label_values]
            return out
        collator = DataCollatorWithPadding(tokenizer)
    elif spec.task == "causal-lm":
        def encode(batch: dict[str, list]) -> dict[str, Any]:
            return tokenizer([str(t) for t in batch[text]], truncation=True, max_length=max_len)
        collator = DataCollatorForLanguageModeling(tokenizer, mlm=False)
    elif spec.task == "seq2seq":
        def encode(batch: dict[str, list]) -> dict[str, Any]:
            return tokenizer([str(t) for t in batch[text]], text_target=[str(t) for t in batch[roles["target"]]],
                             truncation=True, max_length=max_len)
        collator = DataCollatorForSeq2Seq(tokenizer)
    else:
        raise UserError(f"The hf_trainer runner trains seq-cls, causal-lm and seq2seq; task '{spec.task}' needs "
                        "another runner (embedding: runner sentence_transformers).")
    return encode, collator


def training_arguments(spec: RunSpec, run_dir: Path, num_train: int, world_size: int) -> dict[str, Any]:
    """The TrainingArguments kwargs: the spec's values, the suggested cadence, and ftui's plumbing."""
    return trainer_plumbing(spec, run_dir, world_size, cadence.training_arguments(spec, num_train, world_size))


def make_trainer_class() -> Any:
    from transformers import Trainer

    class FtuiTrainer(Trainer):
        """Adds perplexity to language-model evaluations (from the loss: no logits kept)."""

        lm = False

        def evaluation_loop(self, *args: Any, **kwargs: Any) -> Any:
            output = super().evaluation_loop(*args, **kwargs)
            prefix = kwargs.get("metric_key_prefix", "eval")
            metrics = output.metrics
            assert metrics is not None, "Trainer.evaluation_loop always returns its metrics"
            loss = metrics.get(f"{prefix}_loss")
            if self.lm and loss is not None:
                metrics[f"{prefix}_perplexity"] = math.exp(min(loss, 50.0))
            return output

    return FtuiTrainer


def train(spec: RunSpec, run_dir: Path) -> None:
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSeq2SeqLM,
        AutoModelForSequenceClassification,
        TrainingArguments,
        set_seed,
    )

    rank = RankInfo.from_env()
    set_seed(int(spec.training.get("seed", 42)))
    configure_tracking(spec, run_dir)
    train_df, eval_df = data.load_splits(spec)
    roles = data.detect_columns(train_df, spec.dataset, spec.task, spec.dataset.train)
    tokenizer = load_tokenizer(spec)
    train_ds, eval_ds, extra = build_datasets(spec, tokenizer, train_df, eval_df, roles)
    collator = extra.pop("collator")
    auto = {"seq-cls": AutoModelForSequenceClassification, "causal-lm": AutoModelForCausalLM,
            "seq2seq": AutoModelForSeq2SeqLM}[spec.task]
    callback = make_event_callback(run_dir, spec.spec_hash(), spec.runner, spec.task, len(train_df))
    model = load_model(spec, auto, callback.writer if rank.is_main else None, run_dir / rundir.OUTPUT_DIR / rundir.BASE_DIR,
                       tokenizer.pad_token_id, **extra)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    args = TrainingArguments(**training_arguments(spec, run_dir, len(train_df), rank.world_size))
    trainer_cls = make_trainer_class()
    trainer_cls.lm = spec.task in ("causal-lm", "seq2seq")
    trainer = trainer_cls(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds, data_collator=collator,
                          processing_class=tokenizer, callbacks=[callback],
                          compute_metrics=classification_metrics if spec.task == "seq-cls" else None)
    result = trainer.train(resume_from_checkpoint=spec.training.get("resume_from_checkpoint"))
    trainer.save_model(str(run_dir / "output" / "final"))
    callback.finish(result.metrics, trainer.state.global_step)
