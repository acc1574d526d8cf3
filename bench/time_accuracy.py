"""Step-time estimate vs the measured H100 step times, row by row, on a fit split and a held-out split.

The split is fixed before fitting: of the rows that ran (status ok, in file order), every third row
(index 2, 5, 8, ...) is held out; the rest fit the constants of ``runners/plan/timing.py``. Each row is
planned through the same inputs `ftui --plan` builds from its flags, on the H100-SXM entry of
assets/gpus.json (the rows ran on an H100 80GB HBM3).

Run: .venv/bin/python bench/time_accuracy.py [--fit] [--markdown bench/results/time_accuracy.md]
``--fit`` refits the constants on the fit split (scipy) and prints them; without it the constants in
runners/plan/timing.py are evaluated as they are.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from runners.plan import models, planner, timing  # noqa: E402
from runners.spec import from_dict  # noqa: E402

CAL = ROOT / "bench" / "calibration"
ROWS = CAL / "h100_trainer_peaks.jsonl"


def spec_for(case: dict) -> dict:
    training = {"per_device_train_batch_size": case["bs"], "per_device_eval_batch_size": case.get("eval_bs", 8),
                "gradient_accumulation_steps": case.get("ga", 1)}
    for key, name in (("bf16", "bf16"), ("fp16", "fp16"), ("gc", "gradient_checkpointing"), ("optim", "optim")):
        if case.get(key) is not None:
            training[name] = case[key]
    model = {"name_or_path": str(CAL / "configs" / case["config"]), "torch_dtype": case.get("torch_dtype", "auto"),
             "attn_implementation": case.get("attn", "sdpa")}
    if case.get("lora_r"):
        model["lora"] = {"r": case["lora_r"], "target_modules": case["lora_targets"]}
    return {"model": model, "task": case["task"], "dataset": {"max_seq_length": case["seq"]},
            "hardware": {"strategy": "single"}, "training": training}


def rows() -> list[dict]:
    out = []
    ok = [json.loads(line) for line in ROWS.read_text().splitlines() if line.strip()]
    ok = [r for r in ok if r.get("status") == "ok" and r.get("step_s")]
    for i, row in enumerate(ok):
        spec = from_dict(spec_for(row["case"]), source=row["name"])
        model = models.resolve(spec.model.name_or_path)
        inp = planner.memory_input(spec, model, 79.6)
        trainable = row["trainable"]
        out.append({"name": row["name"], "split": "held-out" if i % 3 == 2 else "fit", "inp": inp,
                    "trainable": trainable, "measured": row["step_s"], "ga": row["case"].get("ga", 1)})
    return out


def evaluate(data: list[dict]) -> list[dict]:
    gpu = timing.find_gpu("H100-SXM")
    for r in data:
        est = timing.step_time(r["inp"], gpu, r["trainable"], r["ga"])
        r["estimated"] = est.step_s
        r["error"] = (est.step_s - r["measured"]) / r["measured"]
        r["mfu"] = est.flops / (r["measured"] * gpu.peak(est.dtype))
        r["dtype"] = est.dtype
    return data


def fit(data: list[dict]) -> dict[str, float]:
    import numpy as np
    from scipy.optimize import least_squares

    train = [r for r in data if r["split"] == "fit"]

    def apply(x: np.ndarray) -> None:
        timing.PEAK_EFFICIENCY["half"], timing.PEAK_EFFICIENCY["fp32"] = float(x[0]), float(x[1])
        timing.LAYER_S, timing.MICRO_S, timing.ACT_TRAFFIC = float(x[2]), float(x[3]), float(x[4])

    def residuals(x: np.ndarray) -> np.ndarray:
        apply(x)
        evaluate(train)
        return np.array([np.log(r["estimated"] / r["measured"]) for r in train])

    x0 = np.array([timing.PEAK_EFFICIENCY["half"], timing.PEAK_EFFICIENCY["fp32"], timing.LAYER_S, timing.MICRO_S,
                   timing.ACT_TRAFFIC])
    result = least_squares(residuals, x0, bounds=([0.05, 0.05, 0.0, 0.0, 0.0], [1.0, 1.0, 0.01, 0.05, 40.0]))
    apply(result.x)
    return {"PEAK_EFFICIENCY half": result.x[0], "PEAK_EFFICIENCY fp32": result.x[1], "LAYER_S": result.x[2],
            "MICRO_S": result.x[3], "ACT_TRAFFIC": result.x[4]}


def table(data: list[dict]) -> str:
    lines = ["| row | split | dtype | measured s | estimated s | error | MFU (measured) |", "|---|---|---|---|---|---|---|"]
    for r in data:
        lines.append(f"| {r['name']} | {r['split']} | {r['dtype']} | {r['measured']:.4f} | {r['estimated']:.4f} | "
                     f"{100 * r['error']:+.1f}% | {100 * r['mfu']:.1f}% |")
    lines.append("")
    for split in ("fit", "held-out"):
        errs = [abs(r["error"]) for r in data if r["split"] == split]
        lines.append(f"- {split}: {len(errs)} rows, median abs error {100 * statistics.median(errs):.1f}%, "
                     f"worst {100 * max(errs):.1f}%")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--fit", action="store_true")
    ap.add_argument("--markdown")
    args = ap.parse_args()
    data = rows()
    if args.fit:
        for key, value in fit(data).items():
            print(f"{key} = {value:.5g}")
    text = table(evaluate(data))
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(
            "# Step-time estimate vs measured (H100 80GB HBM3, bench/calibration/h100_trainer_peaks.jsonl)\n\n"
            "`.venv/bin/python bench/time_accuracy.py --markdown bench/results/time_accuracy.md`. Every third row "
            "(file order, rows that ran) is held out; the constants in runners/plan/timing.py were fitted on the others "
            "(`--fit`). MFU is the row's model FLOPs over the measured step time and the datasheet peak.\n\n"
            + text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
