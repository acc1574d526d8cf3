"""`ftui --plan` / `ftui plan`: the headless planner. Imports neither Textual nor torch.

Flags use the Hugging Face spellings so Trainer arguments can be pasted; a spec file may be given
as the positional argument, and flags override it.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, NoReturn

from runners import spec as specmod
from runners.errors import UserError, did_you_mean

TASK_ALIASES = {"seq-cls": "seq-cls", "causal-lm": "causal-lm", "seq2seq": "seq2seq", "embedding": "embedding",
                "token-cls": "token-cls"}


class _Parser(argparse.ArgumentParser):
    """argparse that raises UserError, so every bad flag is one paragraph and exit code 2."""

    def error(self, message: str) -> NoReturn:
        raise UserError(f"{message}. Run 'ftui plan --help' for the flags (they use the Hugging Face spellings, "
                        "e.g. --per_device_train_batch_size).")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="ftui --plan", allow_abbrev=False,
                description="Estimate peak memory per GPU, strategy and cadence before launching.")
    p.add_argument("spec", nargs="?", help="run spec YAML (flags override its values)")
    p.add_argument("--model_name_or_path")
    p.add_argument("--task", choices=list(TASK_ALIASES))
    p.add_argument("--runner", choices=list(specmod.RUNNERS))
    p.add_argument("--per_device_train_batch_size", type=int)
    p.add_argument("--per_device_eval_batch_size", type=int)
    p.add_argument("--gradient_accumulation_steps", type=int)
    p.add_argument("--max_seq_length", type=int)
    p.add_argument("--fp16", action="store_true", default=None)
    p.add_argument("--bf16", action="store_true", default=None)
    p.add_argument("--torch_dtype", choices=list(specmod.DTYPES))
    p.add_argument("--optim", choices=list(specmod.OPTIMIZERS))
    p.add_argument("--gradient_checkpointing", action="store_true", default=None)
    p.add_argument("--attn_implementation", choices=list(specmod.ATTN_IMPLEMENTATIONS))
    p.add_argument("--lora_r", type=int)
    p.add_argument("--lora_target_modules", nargs="+", help="module names, or all-linear (default: the family's)")
    p.add_argument("--lora_alpha", type=int)
    p.add_argument("--lora_dropout", type=float)
    p.add_argument("--lora_modules_to_save", nargs="+", help="modules trained whole beside the adapters")
    p.add_argument("--use_dora", action="store_true", default=None)
    p.add_argument("--use_rslora", action="store_true", default=None)
    p.add_argument("--load_in_4bit", action="store_true", default=None, help="QLoRA: NF4 base (needs LoRA)")
    p.add_argument("--load_in_8bit", action="store_true", default=None, help="8-bit base (needs LoRA)")
    p.add_argument("--strategy", choices=list(specmod.STRATEGIES))
    p.add_argument("--num_gpus", type=int, help="GPUs per node (hardware.num_processes)")
    p.add_argument("--nodes", type=int, help="machines; the world size is nodes x --num_gpus (default 1)")
    p.add_argument("--interconnect_gbps", type=float,
                   help="bandwidth between nodes, per node, in Gb/s (default: the GPU's typical node, e.g. 3200 for H100)")
    p.add_argument("--gpu_memory_gib", type=float, help="memory per GPU (default: what NVML sees, else 80)")
    p.add_argument("--cuda_context_mib", type=float, help="override of the non-tensor overhead, for calibration")
    p.add_argument("--num_train_samples", type=int, help="training rows (default: counted from the dataset)")
    p.add_argument("--num_train_epochs", type=float)
    p.add_argument("--smoke_test", action="store_true", help="the smoke-test cadence preset")
    p.add_argument("--host_memory_gib", type=float, help="the machine's RAM the host side must fit (default: this machine's)")
    p.add_argument("--gpu", help="GPU model for the time estimate, e.g. H100, A100-40GB, L4 (default: what NVML reports)")
    p.add_argument("--gpu_hour_price", type=float, help="price of one GPU-hour, for the run's cost")
    p.add_argument("--probe", action="store_true",
                   help="run a few real training steps in a subprocess (two batch sizes) and correct the plan with them")
    p.add_argument("--probe_timeout", type=float, default=600.0, help="seconds the whole probe may take (default 600)")
    p.add_argument("--probe_steps", type=int, default=4, help="optimizer steps per probe run (default 4)")
    p.add_argument("--validate", action="store_true",
                   help="also construct the real transformers.TrainingArguments (imports transformers, ~1 s)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def spec_from_args(args: argparse.Namespace) -> specmod.RunSpec:
    """The spec file (or defaults) with the flags applied, validated like any spec."""
    base = specmod.load(args.spec) if args.spec else specmod.RunSpec(task="seq-cls",
                                                                     hardware=specmod.HardwareSpec(strategy="single"))
    data: dict[str, Any] = base.to_dict()
    if args.model_name_or_path:
        data["model"]["name_or_path"] = args.model_name_or_path
    if args.task:
        data["task"] = args.task
    if args.runner:
        data["runner"] = args.runner
        if not args.task and args.runner in ("sentence_transformers", "sft"):
            data["task"] = "embedding" if args.runner == "sentence_transformers" else "causal-lm"
    for key in ("torch_dtype", "attn_implementation"):
        if getattr(args, key):
            data["model"][key] = getattr(args, key)
    for key in ("load_in_4bit", "load_in_8bit"):
        if getattr(args, key):
            data["model"][key] = True
    lora_flags = {"alpha": args.lora_alpha, "dropout": args.lora_dropout, "use_dora": args.use_dora,
                  "use_rslora": args.use_rslora}
    if args.lora_r is not None or args.lora_target_modules or args.lora_modules_to_save or \
            any(v is not None for v in lora_flags.values()):
        if args.lora_r is not None and args.lora_r < 1:
            raise UserError(f"--lora_r must be at least 1, got {args.lora_r}.")
        lora = data["model"].get("lora") or {}
        lora["r"] = args.lora_r or lora.get("r", 16)
        for key, flag in (("target_modules", args.lora_target_modules), ("modules_to_save", args.lora_modules_to_save)):
            if flag:
                lora[key] = [m for item in flag for m in item.replace(",", " ").split()]
        lora.update({k: v for k, v in lora_flags.items() if v is not None})
        data["model"]["lora"] = lora
    if args.max_seq_length is not None:
        data["dataset"]["max_seq_length"] = args.max_seq_length
    if args.strategy:
        data["hardware"]["strategy"] = args.strategy
    if args.num_gpus is not None:
        if args.num_gpus < 1:
            raise UserError(f"--num_gpus must be at least 1, got {args.num_gpus}.")
        data["hardware"]["num_processes"] = args.num_gpus
    if args.nodes is not None:
        if args.nodes < 1:
            raise UserError(f"--nodes must be at least 1, got {args.nodes}.")
        data["hardware"]["nodes"] = args.nodes
    if args.interconnect_gbps is not None:
        data["hardware"]["interconnect_gbps"] = args.interconnect_gbps
    for key in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps",
                "num_train_epochs", "optim"):
        value = getattr(args, key)
        if value is not None:
            data["training"][key] = value
    for key in ("fp16", "bf16", "gradient_checkpointing"):
        if getattr(args, key):
            data["training"][key] = True
    if args.smoke_test:
        data["cadence"]["smoke_test"] = True
    if data["training"].get("fp16") and data["training"].get("bf16"):
        raise UserError("--fp16 and --bf16 are both set: choose one mixed-precision mode.")
    return specmod.from_dict(data, source="ftui --plan")


def main(command: str, argv: list[str]) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        flags = [opt for action in parser._actions for opt in action.option_strings]
        first = unknown[0].split("=")[0]
        raise UserError(f"Unknown flag '{first}' for ftui --plan.{did_you_mean(first, flags)} "
                        "Run 'ftui plan --help' for the flags (Hugging Face spellings).")
    spec = spec_from_args(args)
    from runners.plan.planner import make_plan

    plan = make_plan(spec, num_train_samples=args.num_train_samples, gpu_memory_gib=args.gpu_memory_gib,
                     cuda_context_mib=args.cuda_context_mib, validate=args.validate, gpu_name=args.gpu,
                     gpu_hour_price=args.gpu_hour_price, host_memory_gib=args.host_memory_gib)
    if args.probe:
        if args.probe_timeout <= 0 or args.probe_steps < 2:
            raise UserError("--probe_timeout must be positive and --probe_steps at least 2 (the first step warms up).")
        from runners.plan import probe
        from runners.plan.planner import apply_probe

        if not args.json:
            sys.stderr.write(f"probing: a few training steps at two batch sizes (timeout {args.probe_timeout:g}s)...\n")
        apply_probe(plan, probe.run(plan, timeout=args.probe_timeout, steps=args.probe_steps))
    if args.json:
        sys.stdout.write(json.dumps(plan.to_json(), indent=1) + "\n")
    else:
        from tui.commands.plan_report import render

        render(plan)
    return 0
