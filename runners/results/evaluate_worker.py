"""The process behind ``ftui eval``: ``python -m runners.results.evaluate_worker --run-dir D --data F --checkpoint C``.

It loads the checkpoint (runners/results/loading.py), reads the file by the run's rules
(runners/results/evaluate.py) and evaluates it with the runner's own evaluation code, so every metric has the
name and the computation of the run's evaluations: the Trainer's (hf_trainer: loss, accuracy and F1, or the
perplexity), trl's SFTTrainer (sft: its data preparation and loss masking, token accuracy, entropy), the
sentence-transformers trainer with the run's loss, batch sampler and evaluators, and simpletransformers' eval
loop (a plain mean of the batch losses) and metric set. On top of those: a confusion matrix for classification,
and for language models ``perplexity``, the exponential of the mean loss over the file's loss tokens (masked as the
run trained: assistant turns only with ``assistant_only_loss``), with their count.

Protocol on stdout, one JSON object a line: ``{"event": "loaded", "facts": {...}}``, ``{"done": n, "total": N}``
(rows evaluated so far), then ``{"result": {...}}`` or ``{"error": "...", "user": bool}``. The real stdout is kept for
the protocol and fd 1 is pointed at stderr, so what the libraries print never reaches it. Exit 0, 2 (a UserError,
the user's to fix) or 1.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import IO, Any

from runners.errors import USER_ERROR_EXIT, UserError
from runners.results import evaluate

Emit = Callable[..., None]
LM_LABELS = {"causal-lm": "causal", "seq2seq": "seq2seq"}  # how labels line up with the logits: shifted or not


class Progress:
    """Rows evaluated so far, one line a batch."""

    def __init__(self, emit: Emit, total: int, batch: int) -> None:
        self.emit, self.total, self.batch, self.batches = emit, total, max(1, batch), 0

    def step(self) -> None:
        self.batches += 1
        self.emit(done=min(self.total, self.batches * self.batch), total=self.total)


def counting(trainer_cls: type, progress: Progress, labels: str | None) -> type:
    """The runner's trainer class, reporting each evaluation batch and, for a language model, summing the loss
    over its loss tokens (the trainers average per batch)."""

    class Counting(trainer_cls):
        tokens = 0
        token_loss = 0.0

        def prediction_step(self, model: Any, inputs: Any, prediction_loss_only: bool, ignore_keys: Any = None) -> Any:
            out = super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)
            target = inputs.get("labels") if labels else None
            if target is not None and out[0] is not None:
                n = int(((target[..., 1:] if labels == "causal" else target) != -100).sum())
                self.tokens += n
                self.token_loss += float(out[0].float().mean()) * n
            progress.step()
            return out

    return Counting


def _arguments(cls: Any, spec: Any, output_dir: str, defaults: dict[str, Any] | None = None, **more: Any) -> Any:
    """The evaluation's part of the run's TrainingArguments: its eval batch, precision, seed and data loading
    (over the runner's ``defaults``; ``more`` over them all); nothing that reports, saves or pushes."""
    import torch

    kwargs: dict[str, Any] = {"output_dir": output_dir, "report_to": "none", "disable_tqdm": True, **(defaults or {})}
    keys = ["per_device_eval_batch_size", "seed", "dataloader_drop_last", "label_names", "eval_accumulation_steps"]
    if torch.cuda.is_available():
        keys += ["fp16", "bf16", "fp16_full_eval", "bf16_full_eval"]
    else:
        kwargs["use_cpu"] = True
    kwargs.update({k: spec.training[k] for k in keys if k in spec.training})
    return cls(**{**kwargs, **more})


def _evaluate(trainer: Any, lm: bool) -> dict[str, Any]:
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    metrics = trainer.evaluate()
    out: dict[str, Any] = {"metrics": metrics, "rows": len(trainer.eval_dataset)}
    if lm and trainer.tokens:
        out["metrics"]["perplexity"] = math.exp(min(trainer.token_loss / trainer.tokens, 50.0))
        out["tokens"] = trainer.tokens
    return out


def _hf(loaded: Any, frame: Any, roles: dict[str, str], labels: list[str], progress: Progress, tmp: str) -> dict:
    from datasets import Dataset
    from transformers import TrainingArguments

    from runners.train import hf

    spec = loaded.spec
    regression = spec.task == "seq-cls" and loaded.model.config.num_labels == 1
    encode, collator = hf.encoder(spec, loaded.tokenizer, roles, {i: i for i in range(len(labels))}, regression)
    dataset = Dataset.from_pandas(frame, preserve_index=False).map(encode, batched=True,
                                                                   remove_columns=list(frame.columns))
    matrix: dict[str, Any] = {}

    def compute(eval_pred: Any) -> dict[str, float]:
        if not regression:
            logits = eval_pred.predictions[0] if isinstance(eval_pred.predictions, tuple) else eval_pred.predictions
            matrix.update(evaluate.confusion(eval_pred.label_ids.tolist(), logits.argmax(-1).tolist(), labels))
        return hf.classification_metrics(eval_pred)

    base = hf.make_trainer_class()
    base.lm = spec.task in LM_LABELS
    args = _arguments(TrainingArguments, spec, tmp)
    progress.batch = args.eval_batch_size
    trainer = counting(base, progress, LM_LABELS.get(spec.task))(
        model=loaded.model, args=args, eval_dataset=dataset, data_collator=collator, processing_class=loaded.tokenizer,
        compute_metrics=compute if spec.task == "seq-cls" else None)
    out = _evaluate(trainer, base.lm)
    return {**out, "confusion_matrix": matrix or None}


def _sft(loaded: Any, frame: Any, roles: dict[str, str], progress: Progress, tmp: str) -> dict:
    from datasets import Dataset
    from trl import SFTConfig

    from runners import chat_data
    from runners.train import sft

    spec = loaded.spec
    layout = chat_data.Layout.of(roles)
    dataset = Dataset.from_list([chat_data.example(row, layout) for row in frame.to_dict("records")])
    sft.use_template(spec, loaded.tokenizer, layout)
    args = _arguments(SFTConfig, spec, tmp, {"bf16": False}, activation_checkpointing=False, **sft.data_arguments(spec))
    progress.batch = args.eval_batch_size
    # trl wants a training set: one row of the file, never trained on
    trainer = counting(sft.make_trainer_class(), progress, "causal")(
        model=loaded.model, args=args, train_dataset=dataset.select(range(1)), eval_dataset=dataset,
        processing_class=loaded.tokenizer)
    progress.total = len(trainer.eval_dataset)  # rows trl kept (fully masked rows dropped, or packed rows)
    return _evaluate(trainer, True)


def _sentence(loaded: Any, frame: Any, roles: dict[str, str], progress: Progress, tmp: str) -> dict:
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments

    from runners.plan import st_losses
    from runners.train import sentence

    spec = loaded.spec
    label = st_losses.normalise_roles(roles).get("label")
    loss_name, _ = st_losses.choose_loss(roles, spec.runner_args.get("loss"), frame[label].tolist() if label else None)
    shape = st_losses.LOSS_SHAPES[loss_name]
    if shape == "pairs" and "negative" in st_losses.normalise_roles(roles):
        shape = "triplets"  # as the runner reads (anchor, positive, negative) for MNRL
    _, dataset, info = sentence.build_datasets(shape, roles, frame, frame)
    seed = int(spec.training.get("seed", 42))
    sampler = sentence.training_arguments(spec, Path(tmp), len(frame), 1, loss_name).get("batch_sampler")
    args = _arguments(SentenceTransformerTrainingArguments, spec, tmp, **({"batch_sampler": sampler} if sampler else {}))
    progress.batch = args.eval_batch_size
    loss = sentence.build_loss(loss_name, loaded.model, info, spec.runner_args.get("loss_kwargs"))
    evaluator = sentence.build_evaluator(shape, dataset, seed, int(spec.training.get("per_device_eval_batch_size", 32)))
    trainer = counting(SentenceTransformerTrainer, progress, None)(
        model=loaded.model, args=args, eval_dataset=dataset, loss=loss, evaluator=evaluator)
    return _evaluate(trainer, False)


def _simpletransformers(loaded: Any, frame: Any, roles: dict[str, str], labels: list[str], progress: Progress) -> dict:
    """simpletransformers' eval loop, as ``ClassificationModel.evaluate`` runs it: inputs padded to max_seq_length,
    the loss a plain mean of the batch losses, then its own ``compute_metrics`` with the runner's extra metrics."""
    import numpy as np
    import torch
    from simpletransformers.classification import ClassificationModel

    from runners.results.loading import input_device
    from runners.train import simpletransformers as st

    spec, model, tokenizer = loaded.spec, loaded.model, loaded.tokenizer
    regression = model.config.num_labels == 1
    batch = int(spec.training.get("per_device_eval_batch_size", spec.training.get("per_device_train_batch_size", 8)))
    progress.batch = batch
    texts = frame[roles["text"]].astype(str).tolist()
    pairs = frame[roles["text_pair"]].astype(str).tolist() if roles.get("text_pair") else None
    targets = frame[roles["label"]].astype(float if regression else int).tolist()
    device = input_device(loaded)
    losses, outputs = [], []
    for start in range(0, len(texts), batch):
        end = start + batch
        inputs = tokenizer(texts[start:end], pairs[start:end] if pairs else None,
                           truncation="only_second" if pairs else "only_first", padding="max_length",
                           max_length=spec.dataset.max_seq_length, return_tensors="pt").to(device)
        with torch.no_grad():
            out = model(**inputs, labels=torch.tensor(targets[start:end], device=device))
        losses.append(float(out.loss))
        outputs.append(out.logits.float().cpu().numpy())
        progress.step()
    logits = np.concatenate(outputs)
    preds = np.squeeze(logits) if regression else logits.argmax(axis=1)
    owner = SimpleNamespace(args=SimpleNamespace(regression=regression, sliding_window=False, threshold=None),
                            model=SimpleNamespace(num_labels=model.config.num_labels))
    extra = {} if regression else st.extra_metrics(model.config.num_labels)
    result, _ = ClassificationModel.compute_metrics(owner, preds, logits, np.array(targets), **extra)
    metrics = {f"eval_{k}": v for k, v in result.items()}
    metrics["eval_loss"] = sum(losses) / len(losses)
    matrix = None if regression else evaluate.confusion(targets, preds.tolist(), labels)
    return {"metrics": metrics, "rows": len(texts), "confusion_matrix": matrix}


def run(run_dir: Path, source: Path, checkpoint: str | None, emit: Emit) -> dict[str, Any]:
    from datasets.utils.logging import disable_progress_bar

    from runners.results import loading

    disable_progress_bar()
    loaded = loading.load(run_dir, checkpoint)
    emit(event="loaded", facts=loaded.facts())
    spec = loaded.spec
    frame, roles = evaluate.read(spec, source)
    labels: list[str] = []
    notes = list(loaded.notes)
    if spec.task == "seq-cls" and loaded.labels and loaded.model.config.num_labels > 1:
        labels = evaluate.resolve_labels(loaded.labels, spec, notes)
        frame[roles["label"]] = evaluate.label_ids(frame[roles["label"]].tolist(), labels, source, roles["label"])
    progress = Progress(emit, len(frame), 1)
    with tempfile.TemporaryDirectory(prefix="ftui-eval-") as tmp:
        if spec.runner == "simpletransformers":
            out = _simpletransformers(loaded, frame, roles, labels, progress)
        elif loaded.task == "embedding":
            out = _sentence(loaded, frame, roles, progress, tmp)
        elif spec.runner == "sft":
            out = _sft(loaded, frame, roles, progress, tmp)
        else:
            out = _hf(loaded, frame, roles, labels, progress, tmp)
    return {**out, "metrics": evaluate.clean_metrics(out["metrics"]), "device": loaded.device, "notes": notes}


def protocol_stream() -> IO[str]:
    """The real stdout, kept for the protocol; fd 1 (and what any library prints) goes to stderr from now on."""
    sys.stdout.flush()
    kept = os.dup(1)
    os.dup2(2, 1)
    return os.fdopen(kept, "w", buffering=1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runners.results.evaluate_worker")
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--checkpoint")
    args = parser.parse_args(argv)
    out = protocol_stream()

    def emit(**payload: Any) -> None:
        out.write(json.dumps(payload, default=str) + "\n")

    try:
        emit(result=run(Path(args.run_dir), Path(args.data), args.checkpoint, emit))
        return 0
    except UserError as exc:
        emit(error=str(exc), user=True)
        return USER_ERROR_EXIT
    except Exception as exc:  # noqa: BLE001 - any failure is reported on the protocol, its traceback on stderr
        traceback.print_exc()
        emit(error=f"{type(exc).__name__}: {exc}", user=False)
        return 1


if __name__ == "__main__":
    sys.exit(main())
