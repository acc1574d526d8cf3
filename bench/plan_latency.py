"""Latency of `ftui --plan` for a 70B config against accelerate's own estimate, in the same run.

ftui: the real CLI in a fresh subprocess (start-up included), `--json`, Llama-2-70b bundled config.
accelerate: its library route (the `accelerate estimate-memory` CLI fails offline), also in a fresh
subprocess: init_empty_weights + AutoModelForCausalLM.from_config + calculate_maximum_sizes.
Run: .venv/bin/python bench/plan_latency.py [repeats]
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
CONFIG = ROOT / "assets" / "models" / "Llama-2-70b-hf.json"

ACCELERATE = f"""
import json
from accelerate import init_empty_weights
from accelerate.utils import calculate_maximum_sizes
from transformers import AutoConfig, AutoModelForCausalLM
cfg = {{k: v for k, v in json.load(open({str(CONFIG)!r})).items() if k != "_ftui"}}
with init_empty_weights():
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**cfg))
total, largest = calculate_maximum_sizes(model)
params = sum(p.numel() for p in model.parameters())
print(json.dumps({{"total_bytes": total, "params": params, "largest_layer": largest[0]}}))
"""


def timed(cmd: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=ROOT, check=True)
    return time.perf_counter() - start, proc.stdout


def main() -> None:
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    ftui_cmd = [sys.executable, "-m", "tui", "--plan", "--model_name_or_path", "Llama-2-70b", "--task", "causal-lm",
                "--per_device_train_batch_size", "1", "--max_seq_length", "4096", "--bf16", "--strategy", "zero3",
                "--num_gpus", "8", "--json"]
    acc_cmd = [sys.executable, "-c", ACCELERATE]
    timed(ftui_cmd), timed(acc_cmd)  # warm the file cache for both
    ftui_times, acc_times = [], []
    for _ in range(repeats):
        t, out = timed(ftui_cmd)
        ftui_times.append(t)
        t, acc_out = timed(acc_cmd)
        acc_times.append(t)
    plan = json.loads(out)
    acc = json.loads(acc_out)
    f, a = statistics.median(ftui_times), statistics.median(acc_times)
    print(f"ftui --plan (70B, zero3 x8, full phase-aware plan):  median {f * 1000:.0f} ms  "
          f"(min {min(ftui_times) * 1000:.0f}, max {max(ftui_times) * 1000:.0f}, n={repeats})")
    print(f"accelerate library estimate (weights + Adam only):   median {a * 1000:.0f} ms  "
          f"(min {min(acc_times) * 1000:.0f}, max {max(acc_times) * 1000:.0f}, n={repeats})")
    print(f"speed-up: {a / f:.1f}x")
    print(f"params: ftui {plan['model']['params']:,}  accelerate {acc['params']:,}")


if __name__ == "__main__":
    main()
