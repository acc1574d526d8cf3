"""Memory estimate vs measured peaks, row by row, with the median error.

Every calibration row is reproduced through the same inputs `ftui --plan` builds from its flags.
Run: .venv/bin/python bench/memory_accuracy.py [--json]
"""
from __future__ import annotations

import csv
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from runners import memory, models  # noqa: E402

CAL = ROOT / "bench" / "calibration"


def fms_rows() -> list[dict]:
    arch = models.resolve("mistralai/Mistral-7B-v0.1").arch
    out = []
    for row in csv.DictReader((CAL / "fms_a100_mistral7b.csv").open()):
        lora = row["peft"] == "lora"
        inp = memory.MemoryInput(
            arch=arch, task="causal-lm", batch=int(row["per_device_train_batch_size"]), seq=4096, eval_batch=1,
            dtype="bfloat16", mixed="bf16", optim="adamw_torch", gradient_checkpointing=True,
            attn="flash_attention_2", lora_r=int(row["lora_r"]) if lora else None,
            lora_targets=tuple(row["lora_target_modules"].split()) if lora else ("q_proj",),
            strategy="fsdp", num_gpus=int(row["num_gpus"]), capacity_bytes=80 * memory.GIB)
        est = memory.estimate(inp)
        out.append({"table": "fms A100 Mistral-7B", "id": row["id"], "metric": "peak allocated",
                    "measured": int(row["peak_torch_alloc_bytes"]), "estimated": est.peak_allocated,
                    "phase": est.phase, "smi_measured": int(row["nvidia_smi_mib"]) * memory.MIB,
                    "smi_estimated": est.device_used})
    return out


def fms_rows_via_cli() -> list[dict]:
    """The same rows planned from the command-line flags a user would pass (`ftui --plan ... --json`)."""
    import contextlib
    import io

    from tui import cmd_plan

    out = []
    for row in csv.DictReader((CAL / "fms_a100_mistral7b.csv").open()):
        argv = ["--model_name_or_path", row["model"], "--task", "causal-lm", "--strategy", "fsdp",
                "--num_gpus", row["num_gpus"], "--per_device_train_batch_size", row["per_device_train_batch_size"],
                "--per_device_eval_batch_size", "1", "--max_seq_length", "4096", "--torch_dtype", "bfloat16",
                "--bf16", "--gradient_checkpointing", "--attn_implementation", "flash_attention_2",
                "--optim", "adamw_torch", "--json"]
        if row["peft"] == "lora":
            argv += ["--lora_r", row["lora_r"], "--lora_target_modules", *row["lora_target_modules"].split()]
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            cmd_plan.main("plan", argv)
        plan = json.loads(buf.getvalue())
        out.append({"table": "fms A100 Mistral-7B via ftui --plan flags", "id": row["id"], "metric": "peak allocated",
                    "measured": int(row["peak_torch_alloc_bytes"]), "estimated": plan["peak_allocated_bytes"],
                    "phase": plan["phase"], "smi_measured": int(row["nvidia_smi_mib"]) * memory.MIB,
                    "smi_estimated": plan["device_used_bytes"]})
    return out


def bert_rows() -> list[dict]:
    arch = models.resolve("bert-large-uncased").arch
    out = []
    for row in csv.DictReader((CAL / "hf_v100_bert_large.csv").open()):
        inp = memory.MemoryInput(
            arch=arch, task="seq-cls", batch=int(row["per_device_train_batch_size"]), seq=512, eval_batch=8,
            dtype="float32", mixed="fp16" if row["fp16"] == "1" else None, optim=row["optim"],
            gradient_checkpointing=row["gradient_checkpointing"] == "1", attn="eager", strategy="single",
            cuda_context_mib=1343, capacity_bytes=16 * memory.GIB, persistent_grads=True)
        est = memory.estimate(inp)
        out.append({"table": "HF V100 bert-large", "id": row["id"], "metric": "nvml used",
                    "measured": int(row["nvml_used_mib"]) * memory.MIB, "estimated": est.device_used,
                    "phase": est.phase})
    return out


def main() -> None:
    rows = fms_rows() + fms_rows_via_cli() + bert_rows()
    for r in rows:
        r["error_pct"] = 100 * (r["estimated"] - r["measured"]) / r["measured"]
    if "--json" in sys.argv:
        print(json.dumps(rows, indent=1))
        return
    for table in dict.fromkeys(r["table"] for r in rows):
        part = [r for r in rows if r["table"] == table]
        print(f"\n{table} ({part[0]['metric']}, GB = 1e9 bytes)")
        print(f"{'row':28} {'measured':>9} {'estimate':>9} {'error':>8}  peak phase")
        for r in part:
            print(f"{r['id']:28} {r['measured'] / 1e9:9.2f} {r['estimated'] / 1e9:9.2f} {r['error_pct']:+7.1f}%  {r['phase']}")
        errs = [abs(r["error_pct"]) for r in part]
        print(f"median |error| {statistics.median(errs):.1f}%   max |error| {max(errs):.1f}%")
        if "smi_measured" in part[0]:
            smi = [abs(100 * (r["smi_estimated"] - r["smi_measured"]) / r["smi_measured"]) for r in part]
            print(f"nvidia-smi used: median |error| {statistics.median(smi):.1f}%   max {max(smi):.1f}%")
    allerr = [abs(r["error_pct"]) for r in rows if "via ftui" not in r["table"]]
    print(f"\nall rows: median |error| {statistics.median(allerr):.1f}% over {len(allerr)} rows")


if __name__ == "__main__":
    main()
