"""A plain simpletransformers script (no ftui): evaluates during training, which writes
training_progress_scores.csv, checkpoints and best_model/ in the output dir.

simpletransformers loads pretrained weights, so the random-init demo model is saved first.
"""
import argparse
import csv
import time
from pathlib import Path

import pandas as pd
from simpletransformers.classification import ClassificationModel
from transformers import AutoConfig, AutoModelForSequenceClassification, BertTokenizer

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "assets" / "demo" / "model"
DATA = ROOT / "assets" / "demo" / "reviews.csv"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--output_dir", required=True)
    p.add_argument("--rows", type=int, default=160)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--step_delay", type=float, default=0.0)
    args = p.parse_args()

    out = Path(args.output_dir)
    init = out.parent / (out.name + "-init")
    AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(MODEL)).save_pretrained(init)
    BertTokenizer.from_pretrained(str(MODEL)).save_pretrained(init)

    with open(DATA) as fh:
        rows = list(csv.DictReader(fh))[: args.rows]
    df = pd.DataFrame({"text": [r["text"] for r in rows], "labels": [int(r["label"]) for r in rows]})
    train, dev = df.iloc[: len(df) * 3 // 4], df.iloc[len(df) * 3 // 4:]

    model = ClassificationModel("bert", str(init), use_cuda=False, args={
        "output_dir": str(out), "best_model_dir": str(out / "best_model"), "cache_dir": str(out.parent / "st-cache"),
        "tensorboard_dir": str(out.parent / "st-tb"), "overwrite_output_dir": True, "num_train_epochs": args.epochs,
        "train_batch_size": 8, "eval_batch_size": 16, "max_seq_length": 32, "learning_rate": 1e-3,
        "evaluate_during_training": True, "evaluate_during_training_steps": 4, "save_steps": 4,
        "logging_steps": 2, "use_multiprocessing": False, "use_multiprocessing_for_evaluation": False,
        "process_count": 1, "reprocess_input_data": True, "manual_seed": 1, "save_eval_checkpoints": True,
        "use_early_stopping": False, "silent": True,
    })
    if args.step_delay:
        slow = model.model.forward

        def forward(*a, **kw):
            time.sleep(args.step_delay)
            return slow(*a, **kw)

        model.model.forward = forward
    model.train_model(train, eval_df=dev)


if __name__ == "__main__":
    main()
