"""A plain Hugging Face Trainer script, written the way a user would (no ftui anywhere).

Tests start it directly, or under torchrun, then attach ftui to what it writes. ``--step_delay``
slows each step so a test can attach while it runs.
"""
import argparse
import csv
import os
import time
from pathlib import Path

import numpy as np
from datasets import Dataset
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    BertTokenizer,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "assets" / "demo" / "model"
DATA = ROOT / "assets" / "demo" / "reviews.csv"


class SlowDown(TrainerCallback):
    def __init__(self, delay):
        self.delay = delay

    def on_step_end(self, args, state, control, **kwargs):
        time.sleep(self.delay)


def accuracy(eval_pred):
    logits, labels = eval_pred
    return {"accuracy": float((np.argmax(logits, axis=-1) == labels).mean())}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--output_dir", required=True)
    p.add_argument("--report_to", default="tensorboard")
    p.add_argument("--max_steps", type=int, default=16)
    p.add_argument("--rows", type=int, default=256)
    p.add_argument("--step_delay", type=float, default=0.0)
    p.add_argument("--local_rank", type=int, default=-1)
    args = p.parse_args()

    with open(DATA) as fh:
        rows = list(csv.DictReader(fh))[: args.rows]
    tok = BertTokenizer.from_pretrained(str(MODEL))
    enc = tok([r["text"] for r in rows], truncation=True, padding="max_length", max_length=32)
    ds = Dataset.from_dict({**enc, "labels": [int(r["label"]) for r in rows]}).train_test_split(0.25, seed=0)
    model = AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(MODEL))

    targs = TrainingArguments(
        output_dir=args.output_dir, max_steps=args.max_steps, per_device_train_batch_size=8,
        per_device_eval_batch_size=32, learning_rate=1e-3, logging_steps=2, eval_strategy="steps",
        eval_steps=4, save_strategy="steps", save_steps=4, save_total_limit=2, load_best_model_at_end=True,
        metric_for_best_model="accuracy", report_to=args.report_to, use_cpu=True, seed=1,
        ddp_backend="gloo" if "WORLD_SIZE" in os.environ else None, average_tokens_across_devices=False,
        dataloader_num_workers=0,
    )
    callbacks = [SlowDown(args.step_delay)] if args.step_delay else []
    trainer = Trainer(model=model, args=targs, train_dataset=ds["train"], eval_dataset=ds["test"],
                      compute_metrics=accuracy, callbacks=callbacks)
    trainer.train()
    trainer.save_state()


if __name__ == "__main__":
    main()
