"""Overhead of ftui's event callback on training step time.

A BERT-shaped model (hidden 256, 4 layers, seq 64, batch 16) large enough that a CPU step takes well
over 50 ms, trained by the real Trainer with logging every step (the worst case: a log record and a
memory record per step) with and without the callback, alternating, several repeats each.
Run: .venv/bin/python bench/callback_overhead.py [repeats] [steps]
"""
from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def run_once(with_callback: bool, steps: int) -> float:
    import torch
    from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainerCallback, TrainingArguments

    from runners.train.callback import make_event_callback

    torch.manual_seed(0)
    config = BertConfig(vocab_size=1000, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                        intermediate_size=1024, max_position_embeddings=128)
    model = BertForSequenceClassification(config)
    data = [{"input_ids": torch.randint(5, 1000, (64,)), "labels": torch.tensor(i % 2)} for i in range(16 * steps)]

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []

        def on_step_begin(self, *a, **k):
            self.t0 = time.perf_counter()

        def on_step_end(self, *a, **k):
            self.times.append(time.perf_counter() - self.t0)

    timer = StepTimer()
    with tempfile.TemporaryDirectory() as tmp:
        callbacks = [timer]
        inside = [0.0]
        if with_callback:
            cb = make_event_callback(Path(tmp), "bench", "hf_trainer", "seq-cls", len(data))
            for name in ("on_log", "on_step_end", "on_step_begin", "on_evaluate", "on_save"):
                original = getattr(cb, name)

                def timed(*a, _original=original, **k):
                    t0 = time.perf_counter()
                    try:
                        return _original(*a, **k)
                    finally:
                        inside[0] += time.perf_counter() - t0
                setattr(cb, name, timed)
            callbacks.append(cb)
        args = TrainingArguments(output_dir=tmp, per_device_train_batch_size=16, max_steps=steps, logging_steps=1,
                                 save_strategy="no", report_to="none", use_cpu=True, disable_tqdm=True,
                                 include_num_input_tokens_seen="all")
        start = time.perf_counter()
        Trainer(model=model, args=args, train_dataset=data, callbacks=callbacks).train()
        total = time.perf_counter() - start
    # wall time per step, logging included (the callback works in on_log, outside on_step_*)
    return total / steps, inside[0] / steps


def main() -> None:
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 30
    with_cb, without, inside = [], [], []
    for _ in range(repeats):
        without.append(run_once(False, steps)[0])
        total, in_callback = run_once(True, steps)
        with_cb.append(total)
        inside.append(in_callback)
    a, b = statistics.median(without), statistics.median(with_cb)
    print(f"step time without callback: median {a * 1000:.1f} ms/step over {repeats} runs of {steps} steps")
    print(f"step time with callback:    median {b * 1000:.1f} ms/step (log + memory record every step)")
    c = statistics.median(inside)
    print(f"time inside the callback: median {c * 1000:.3f} ms/step = {100 * c / a:.2f}% of the step "
          "(the precise figure: measured around the callback's own methods)")
    print(f"wall-clock difference: {100 * (b - a) / a:+.2f}% (noise: run-to-run spread without the callback "
          f"{100 * (max(without) - min(without)) / a:.1f}%)")


if __name__ == "__main__":
    main()
