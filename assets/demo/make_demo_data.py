"""Regenerates the bundled demo data (reviews.csv) and the demo model's vocab.txt.

The data are short product reviews built from templates, with a label that depends on the
sentiment words and on negation ("not great" is negative), and 5% label noise, so a small model
must learn word order, not only word lists, and cannot reach 100% accuracy. Deterministic (seed 7).
Run: python assets/demo/make_demo_data.py
"""
from __future__ import annotations

import csv
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
POSITIVE = ["great", "excellent", "good", "wonderful", "fantastic", "lovely", "solid", "reliable",
            "delightful", "superb", "pleasant", "sturdy"]
NEGATIVE = ["terrible", "awful", "bad", "poor", "horrible", "flimsy", "disappointing", "broken",
            "useless", "cheap", "noisy", "fragile"]
ITEMS = ["phone", "blender", "lamp", "chair", "kettle", "backpack", "keyboard", "camera", "jacket",
         "speaker", "watch", "tent", "mouse", "pan", "bike", "desk"]
OPENERS = ["this", "the", "my new", "our", "that"]
VERBS = ["is", "was", "seems", "feels", "looks"]
TAILS = ["", "overall", "for the price", "after a week", "honestly", "so far", "in daily use"]
ADVERBS = ["really", "very", "quite", "truly", "pretty", ""]
EXTRA = ["i would buy it again", "i returned it", "shipping was fast", "the box was damaged",
         "my friend agrees", "customer service replied", ""]


def sentence(rng: random.Random) -> tuple[str, int]:
    positive = rng.random() < 0.5
    word = rng.choice(POSITIVE if positive else NEGATIVE)
    negated = rng.random() < 0.25
    label = int(positive != negated)
    parts = [rng.choice(OPENERS), rng.choice(ITEMS), rng.choice(VERBS)]
    if negated:
        parts.append("not")
    parts += [rng.choice(ADVERBS), word, rng.choice(TAILS)]
    text = " ".join(p for p in parts if p)
    extra = rng.choice(EXTRA)
    if extra:
        text += " and " + extra
    if rng.random() < 0.05:
        label = 1 - label
    return text, label


def main() -> None:
    rng = random.Random(7)
    rows = [sentence(rng) for _ in range(2400)]
    with (HERE / "reviews.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    words = sorted({w for text, _ in rows for w in text.split()})
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    (HERE / "model" / "vocab.txt").write_text("\n".join(special + words) + "\n")


if __name__ == "__main__":
    main()
