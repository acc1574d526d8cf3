"""What to change when a run does not fit: memory levers ranked by what they save on this very run.

Each lever is one change to the run's inputs, estimated with the same phase-aware model, so the
ranking reflects where this run's peak actually is (a lever that shrinks activations saves nothing
when the peak is the optimizer step). Strategy advice follows the usual decision rules: fits one
GPU -> single (or DDP for speed); does not fit -> ZeRO with CPU offload; the largest layer does not
fit -> ZeRO-3 with offload.

"Fits" means device and host: offloaded optimizer states and parameters (pinned host memory), each
process's own RAM and the data loader's workers count against the machine's RAM, and a lever whose
host side does not fit there is not offered.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from runners import strategies
from runners.plan import memory
from runners.plan.memory import GIB, Estimate, MemoryInput

HOST_USABLE = 0.9  # share of the machine's RAM a run may pin and use; the rest is the OS's and the page cache's
DATALOADER_WORKER_BYTES = 0.5 * GIB  # each data loader worker process (a forked copy of the dataset pipeline)


def host_ram_needed(inp: MemoryInput, est: Estimate, dataloader_workers: int = 0) -> float:
    """Host RAM each node needs: the estimate's host side (its share of the offloaded states and parameters,
    pinned, and every process's own RAM) plus the data loader's worker processes, per training process."""
    return est.host_ram + dataloader_workers * DATALOADER_WORKER_BYTES * max(inp.num_gpus, 1)


def _gpus(inp: MemoryInput) -> str:
    return f"{inp.world_size} GPU(s)" if inp.nodes <= 1 else f"{inp.nodes} nodes x {inp.num_gpus} GPUs"


def host_fits(needed: float, capacity: float | None) -> bool:
    return capacity is None or needed <= capacity * HOST_USABLE


@dataclass
class Lever:
    name: str
    change: dict[str, Any]  # flag -> new value, in `ftui --plan` spellings
    description: str
    peak_allocated: float
    device_used: float
    saves: float
    fits: bool  # device and host
    host_ram: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "change": self.change, "description": self.description,
                "peak_allocated_bytes": int(self.peak_allocated), "device_used_bytes": int(self.device_used),
                "saves_bytes": int(self.saves), "fits": self.fits, "host_ram_bytes": int(self.host_ram)}


def _candidates(inp: MemoryInput) -> list[tuple[str, dict[str, Any], str, MemoryInput]]:
    out: list[tuple[str, dict[str, Any], str, MemoryInput]] = []
    if inp.batch > 1:
        smaller = max(1, inp.batch // 4) if inp.batch >= 4 else 1
        factor = inp.batch // smaller
        out.append(("smaller batch + gradient accumulation",
                     {"per_device_train_batch_size": smaller, "gradient_accumulation_steps_multiplier": factor},
                     f"batch {inp.batch} -> {smaller} with {factor}x gradient accumulation (same effective batch)",
                     replace(inp, batch=smaller, grad_accum=inp.grad_accum * factor)))
    if inp.eval_batch > 1:  # eval holds every sample's logits at once: with a large vocabulary it can be the peak
        smaller = inp.batch if inp.batch < inp.eval_batch else max(1, inp.eval_batch // 4)
        out.append(("smaller eval batch", {"per_device_eval_batch_size": smaller},
                    f"evaluate {smaller} instead of {inp.eval_batch} samples at a time (training unchanged)",
                    replace(inp, eval_batch=smaller)))
    if not inp.gradient_checkpointing:
        out.append(("gradient checkpointing", {"gradient_checkpointing": True},
                    "recompute each layer in backward instead of keeping its activations (~30% slower steps)",
                    replace(inp, gradient_checkpointing=True)))
    if inp.mixed is None and inp.dtype == "float32":
        out.append(("bf16 mixed precision", {"bf16": True}, "bfloat16 autocast: half-width activations",
                    replace(inp, mixed="bf16")))
    if inp.dtype == "float32" and not inp.lora_r:
        out.append(("load weights in bfloat16", {"torch_dtype": "bfloat16", "bf16": True},
                    "pure bf16 weights, gradients and optimizer states (no fp32 master copy)",
                    replace(inp, dtype="bfloat16", mixed="bf16")))
    if inp.attn == "eager":
        out.append(("SDPA attention", {"attn_implementation": "sdpa"}, "fused attention: no per-head s x s matrices",
                    replace(inp, attn="sdpa")))
    if inp.optim in ("adamw_torch", "adamw_torch_fused") and not inp.lora_r:
        out.append(("8-bit AdamW", {"optim": "adamw_bnb_8bit"}, "bitsandbytes 8-bit optimizer states",
                    replace(inp, optim="adamw_bnb_8bit")))
        out.append(("Adafactor", {"optim": "adafactor"}, "factored second moments, no first moment",
                    replace(inp, optim="adafactor")))
    if inp.optim == "adamw_torch":
        out.append(("fused AdamW", {"optim": "adamw_torch_fused"}, "no foreach temporary copy at the optimizer step",
                    replace(inp, optim="adamw_torch_fused")))
    if not inp.lora_r and inp.task in ("causal-lm", "seq2seq", "seq-cls"):
        shapes = inp.arch.linear_shapes
        targets: tuple[str, ...] = tuple(t for t in ("q_proj", "k_proj", "v_proj", "o_proj") if t in shapes) or \
            tuple(t for t in ("query", "value", "q_lin", "v_lin", "c_attn", "q", "v") if t in shapes)
        out.append(("LoRA r=16", {"lora_r": 16, "lora_target_modules": list(targets)},
                    f"train rank-16 adapters on {', '.join(targets)}; the base stays frozen",
                    replace(inp, lora_r=16, lora_targets=targets)))
        if not inp.load_in_4bit:
            out.append(("QLoRA (4-bit base + LoRA r=16)", {"load_in_4bit": True, "lora_r": 16,
                                                           "lora_target_modules": list(targets)},
                        "NF4-quantized frozen base with rank-16 adapters",
                        replace(inp, lora_r=16, lora_targets=targets, load_in_4bit=True, mixed=inp.mixed or "bf16")))
    if inp.world_size > 1 and inp.strategy != "cpu":
        for strategy, text in (("zero2", "ZeRO-2: shard optimizer states and gradients"),
                               ("zero3", "ZeRO-3: shard parameters too"),
                               ("fsdp", "FSDP full shard"),
                               ("zero2_offload", "ZeRO-2 with optimizer states in CPU RAM"),
                               ("zero3_offload", "ZeRO-3 with parameters and optimizer states in CPU RAM")):
            if strategy != inp.strategy:
                out.append((text.split(":")[0], {"strategy": strategy}, text,
                            replace(inp, strategy=strategy, mixed=inp.mixed or "bf16")))
    elif inp.strategy not in ("cpu",) + strategies.OFFLOAD:
        out.append(("ZeRO-3 offload", {"strategy": "zero3_offload"},
                    "parameters and optimizer states in CPU RAM, gathered layer by layer (slow, needs host RAM)",
                    replace(inp, strategy="zero3_offload", mixed=inp.mixed or "bf16")))
    return out


def levers(inp: MemoryInput, base: Estimate, host_capacity: float | None = None, dataloader_workers: int = 0,
           excluded: list[Lever] | None = None) -> list[Lever]:
    """Every applicable lever with its estimated result, the biggest saving first. A lever whose host side
    does not fit ``host_capacity`` is left out (appended to ``excluded`` when given)."""
    ranked: list[Lever] = []
    for name, change, text, changed in _candidates(inp):
        est = memory.estimate(changed)
        saves = base.device_used - est.device_used
        if saves < 0.01 * base.device_used:
            continue  # under 1%: not worth a line
        host = host_ram_needed(changed, est, dataloader_workers)
        lever = Lever(name, change, text, est.peak_allocated, est.device_used, saves,
                      est.fits and host_fits(host, host_capacity), host)
        if not host_fits(host, host_capacity):
            if excluded is not None:
                excluded.append(lever)
            continue
        ranked.append(lever)
    ranked.sort(key=lambda lever: lever.saves, reverse=True)
    return ranked


def advice(inp: MemoryInput, base: Estimate, host_capacity: float | None = None, dataloader_workers: int = 0,
           levers_left: bool = True) -> list[str]:
    """Strategy advice in plain words, from the usual decision rules (a strategy counts as fitting only when
    its host side fits ``host_capacity`` too). ``levers_left``: whether any lever is offered, so the advice
    never points at a list that is empty."""
    if inp.strategy == "cpu":
        return ["CPU training: memory is host RAM; fine for small models and smoke tests."]
    out: list[str] = []
    cap = inp.capacity_bytes
    single = memory.estimate(replace(inp, strategy="single", num_gpus=1, nodes=1))
    base_host = host_ram_needed(inp, base, dataloader_workers)
    if base.fits and not host_fits(base_host, host_capacity):
        return [f"Does not fit host RAM: the GPU side fits ({base.device_used / GIB:.1f} of {cap / GIB:.0f} GiB) but the "
                f"host side needs {base_host / GIB:.1f} GiB, more than {HOST_USABLE:.0%} of this machine's "
                f"{host_capacity / GIB:.1f} GiB. " +  # type: ignore[operator]
                ("Avoid offload (more GPUs, LoRA, 8-bit optimizer states) or use a machine with more RAM."
                 if "offload" in inp.strategy else "Use fewer processes or data loader workers, or more RAM.")]
    if base.fits:
        if inp.strategy in strategies.SHARDED and single.fits:
            out.append(f"The model also fits one GPU unsharded ({single.device_used / GIB:.1f} GiB): plain DDP "
                       "avoids sharding's communication and is usually faster.")
        else:
            out.append(f"Fits: {base.device_used / GIB:.1f} of {cap / GIB:.0f} GiB per GPU at the {base.phase} peak.")
        return out
    if single.fits and inp.strategy != "single":
        out.append("One GPU holds this run: use strategy single (or ddp for more GPUs).")
    largest_layer_bytes = 4 * inp.arch.largest_layer
    if largest_layer_bytes > cap:
        out.append(f"The largest layer needs {largest_layer_bytes / GIB:.1f} GiB gathered: only ZeRO-3 with CPU offload "
                   "and smaller layers could run it; consider LoRA on a quantized base.")
        return out
    for strategy in ("zero2", "zero3", "zero2_offload", "zero3_offload"):
        if inp.world_size < 2 and strategy in ("zero2", "zero3"):
            continue
        changed = replace(inp, strategy=strategy, mixed=inp.mixed or "bf16")
        est = memory.estimate(changed)
        host = host_ram_needed(changed, est, dataloader_workers)
        if est.fits and not host_fits(host, host_capacity):
            out.append(f"{strategy} would fit the GPU ({est.device_used / GIB:.1f} GiB) but needs {host / GIB:.1f} GiB "
                       f"of host RAM, more than {HOST_USABLE:.0%} of this machine's {host_capacity / GIB:.1f} GiB.")  # type: ignore[operator]
            continue
        if est.fits:
            out.append(f"Does not fit as {inp.strategy}; {strategy} on {_gpus(inp)} would use "
                       f"{est.device_used / GIB:.1f} GiB per GPU" +
                       (f" and {est.host_ram / GIB:.0f} GiB of host RAM." if "offload" in strategy else "."))
            return out
    if levers_left:
        out.append("No strategy alone makes it fit on these GPUs: combine the levers below (LoRA, checkpointing, "
                   "smaller batch) or add GPUs.")
    else:
        out.append("No strategy alone makes it fit on these GPUs, and no lever is left that saves memory on this run. "
                   f"Choose a smaller model, shorter sequences (max_seq_length below {inp.seq}), GPUs with more memory "
                   f"than {cap / GIB:.0f} GiB, or more GPUs with a ZeRO strategy.")
    return out
