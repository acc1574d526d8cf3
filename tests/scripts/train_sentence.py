"""A plain sentence-transformers script (no ftui): SentenceTransformerTrainer with a cosine loss on
pairs of demo reviews (similar when their labels agree), TensorBoard logging, eval and checkpoints.

sentence-transformers loads pretrained weights, so the random-init demo model is saved first.
"""
import argparse
import csv
import time
from pathlib import Path

from datasets import Dataset
from sentence_transformers import (
    SentenceTransformer,
    SentenceTransformerTrainer,
    SentenceTransformerTrainingArguments,
    losses,
    models,
)
from transformers import AutoConfig, AutoModel, BertTokenizer, TrainerCallback

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "assets" / "demo" / "model"
DATA = ROOT / "assets" / "demo" / "reviews.csv"


class SlowDown(TrainerCallback):
    def __init__(self, delay):
        self.delay = delay

    def on_step_end(self, args, state, control, **kwargs):
        time.sleep(self.delay)


def pairs(rows):
    a, b = rows[0::2], rows[1::2]
    return Dataset.from_dict({"sentence1": [r["text"] for r in a], "sentence2": [r["text"] for r in b],
                              "score": [float(x["label"] == y["label"]) for x, y in zip(a, b)]})


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--output_dir", required=True)
    p.add_argument("--max_steps", type=int, default=12)
    p.add_argument("--step_delay", type=float, default=0.0)
    args = p.parse_args()

    out = Path(args.output_dir)
    init = out.parent / (out.name + "-init")
    AutoModel.from_config(AutoConfig.from_pretrained(MODEL)).save_pretrained(init)
    BertTokenizer.from_pretrained(str(MODEL)).save_pretrained(init)
    encoder = models.Transformer(str(init), max_seq_length=32)
    model = SentenceTransformer(modules=[encoder, models.Pooling(encoder.get_word_embedding_dimension())])

    with open(DATA) as fh:
        rows = list(csv.DictReader(fh))[:320]
    train, dev = pairs(rows[:256]), pairs(rows[256:])
    targs = SentenceTransformerTrainingArguments(
        output_dir=str(out), max_steps=args.max_steps, per_device_train_batch_size=8, per_device_eval_batch_size=16,
        learning_rate=1e-3, logging_steps=2, eval_strategy="steps", eval_steps=4, save_strategy="steps",
        save_steps=4, report_to="tensorboard", use_cpu=True, seed=1, load_best_model_at_end=True,
        metric_for_best_model="eval_loss",
    )
    trainer = SentenceTransformerTrainer(model=model, args=targs, train_dataset=train, eval_dataset=dev,
                                         loss=losses.CosineSimilarityLoss(model),
                                         callbacks=[SlowDown(args.step_delay)] if args.step_delay else [])
    trainer.train()


if __name__ == "__main__":
    main()
