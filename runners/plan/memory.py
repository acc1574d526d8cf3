"""Phase-aware peak memory per GPU for one training run (docs/memory.md argues every term).

Each phase of a step (forward, backward, optimizer step, eval) holds a different set of tensors:
activations exist in forward/backward and are gone at the optimizer step, full gradients and the
optimizer's temporaries exist only around the step. The peak is the maximum over phases, never the
sum of everything. Sharding strategies (DDP, ZeRO-1/2/3, FSDP) and offload change which share of
each component a GPU holds. ``device_used`` adds what nvidia-smi shows beyond tensors: the CUDA
context, library workspaces and the caching allocator's slack.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from functools import lru_cache

from runners import paths, peft_rules, strategies
from runners.plan import activations
from runners.plan.architecture import (
    DTYPE_BYTES,
    Arch,
    Lora,
    linear_weight_params,
    lora_activation_bytes,
    lora_params,
    params_for_task,
    quantized_bytes,
)

GIB = 1024**3
MIB = 1024**2
PHASES = ("forward", "backward", "optimizer step", "eval")
ALLOCATOR_SLACK = 0.02  # the caching allocator's rounding and small-block reserve over the peak
BANDS = paths.ASSETS / "memory_bands.json"  # written by bench/memory_accuracy.py
DEFAULT_CONTEXT_MIB = 1000.0  # CUDA context, cuBLAS/cuDNN workspaces, kernels loaded by torch
NCCL_MIB = 600.0  # communicator buffers per GPU when more than one process trains
HOST_BASELINE = 3 * GIB  # a training process's own RAM: python, torch, tokenizer, data loader


@dataclass(frozen=True)
class MemoryInput:
    arch: Arch
    task: str = "seq-cls"
    batch: int = 8
    seq: int = 512
    eval_batch: int = 8
    dtype: str = "float32"  # weights as loaded
    mixed: str | None = None  # "bf16" or "fp16" autocast, None for none
    optim: str = "adamw_torch_fused"
    gradient_checkpointing: bool = False
    attn: str = "sdpa"
    lora_r: int | None = None
    lora_targets: tuple[str, ...] = ("q_proj", "v_proj")  # () for the family's default (runners/peft_rules.py)
    lora_dropout: float = 0.0
    lora_modules_to_save: tuple[str, ...] = ()
    lora_dora: bool = False
    load_in_4bit: bool = False
    load_in_8bit: bool = False
    strategy: str = "single"
    num_gpus: int = 1  # per node (hardware.num_processes); the world size is nodes x num_gpus
    nodes: int = 1
    grad_accum: int = 1  # gradient_accumulation_steps: under FSDP the micro-batches' gradients stay unsharded
    interconnect_gbps: float | None = None  # across nodes, per node (Gb/s); None: the GPU's typical node
    cuda_context_mib: float | None = None
    capacity_bytes: int = 80 * GIB
    # torch < 2.0's zero_grad() zeroed gradients instead of freeing them, so they were resident
    # through forward and backward; only the 2022 calibration table needs this
    persistent_grads: bool = False
    # "auto": the model's traced structure (learned once per config in a subprocess if not cached),
    # "cached": only if already known, "off": the closed form alone
    structure: str = "auto"
    expandable_segments: bool = field(default_factory=lambda: "expandable_segments:true" in
                                      os.environ.get("PYTORCH_CUDA_ALLOC_CONF", "").lower().replace(" ", ""))

    @property
    def world_size(self) -> int:
        """Every GPU of the run: the sharded strategies divide over all of them, on every node."""
        return max(self.nodes, 1) * self.num_gpus


@dataclass
class Estimate:
    phases: dict[str, dict[str, float]]
    phase: str
    peak_allocated: float
    device_used: float
    host_ram: float
    capacity: int
    trainable_params: int
    total_params: int
    notes: list[str] = field(default_factory=list)
    route: str = "closed form"  # how activations were counted: "traced (cached)", "traced (learned ...)", "closed form"
    largest_block: float = 0.0  # the largest single allocation of the step (logits, attention scores)
    reserve: float = 0.0  # what the allocator holds beyond the peak: fragmentation can cost a largest block
    peak_low: float = 0.0  # the band the accuracy benchmark measured for this route
    peak_high: float = 0.0
    device_used_high: float = 0.0

    @property
    def components(self) -> dict[str, float]:
        return {k: v for k, v in self.phases[self.phase].items() if v > 0}

    @property
    def fits(self) -> bool:
        return self.device_used <= self.capacity

    @property
    def fits_surely(self) -> bool:
        """Fits even at the top of the measured error band, with the allocator's worst fragmentation."""
        return self.device_used_high <= self.capacity

    def bands(self) -> dict[str, dict[str, float]]:
        ctx = self.device_used - self.peak_allocated - self.reserve
        return {"peak_allocated_bytes": {"value": self.peak_allocated, "low": self.peak_low, "high": self.peak_high},
                "device_used_bytes": {"value": self.device_used, "low": self.peak_low + ctx,
                                      "high": self.device_used_high}}


@lru_cache(maxsize=1)
def _bands() -> dict[str, list[float]]:
    """Signed relative errors (estimate - measured) / measured, min and max, per route, from the benchmark."""
    try:
        return json.loads(BANDS.read_text())["peak_error"]
    except (OSError, ValueError, KeyError):
        return {"traced": [-0.15, 0.15], "closed form": [-0.45, 0.45]}


def band(peak: float, route: str) -> tuple[float, float]:
    lo_err, hi_err = _bands().get("traced" if route.startswith("traced") else "closed form", [-0.45, 0.45])
    return peak / (1 + max(hi_err, 0.0)), peak / (1 + min(lo_err, 0.0))


def half_compute(inp: MemoryInput) -> bool:
    """Whether the model computes in the half dtype whatever its weights: DeepSpeed converts the model to it, and
    FSDP's mixed precision (accelerate's MixedPrecision(param_dtype=bf16, ...)) casts the gathered parameters to it,
    so no autocast weight copies exist and the residual stream is half."""
    return bool(inp.mixed) and (inp.strategy in strategies.DEEPSPEED or inp.strategy in strategies.FSDP)


def _precision(inp: MemoryInput) -> activations.Precision:
    w = DTYPE_BYTES[inp.dtype]
    if inp.strategy in strategies.DEEPSPEED and inp.mixed:
        w = 2  # DeepSpeed converts the model to the half dtype and keeps fp32 masters in the optimizer
    matmul = 2 if (inp.mixed or w == 2) else 4
    half = half_compute(inp)  # FSDP keeps its sharded parameters (and so gradients and states) in their own dtype
    return activations.Precision(residual=2 if half else w, matmul=matmul, weights=w,
                                 autocast=bool(inp.mixed) and w == 4 and not half)


def _shards(inp: MemoryInput) -> int:
    return inp.world_size if inp.strategy in strategies.SHARDED else 1


def estimate(inp: MemoryInput) -> Estimate:
    """The per-GPU estimate for one run; see docs/memory.md for the argument behind each term."""
    arch = inp.arch
    prec = _precision(inp)
    total = params_for_task(arch, inp.task)
    # LoRA by the runner's rules (runners/peft_rules.py): adapters, DoRA magnitudes, heads trained whole
    lora = lora_params(arch, inp.lora_r, list(inp.lora_targets), inp.task, inp.lora_modules_to_save,
                       inp.lora_dora) if inp.lora_r else 0
    trainable = lora or total
    n = _shards(inp)
    notes: list[str] = []
    bits = 4 if inp.load_in_4bit else 8 if inp.load_in_8bit else None

    # weights as held in memory
    if bits:  # quantized linear layers; the k-bit preparation upcasts every other parameter to float32
        quantized, linear = quantized_bytes(arch, inp.task, bits)
        linear = min(linear, total)
        weights = quantized + (total - linear) * peft_rules.UPCAST_BYTES
    else:
        weights = total * prec.weights
    weights += lora * peft_rules.ADAPTER_BYTES  # adapters in float32 (and the copies of the heads trained whole)
    t_bytes = 4 if lora else prec.weights  # trainable parameters' dtype: grads and torch optimizer states
    grads: float = trainable * t_bytes
    master = 0.0
    if inp.strategy in strategies.DEEPSPEED and inp.mixed and not lora:
        master = trainable * 4.0  # DeepSpeed's fp32 master weights live in the optimizer
    states, step_temp = _optimizer(inp, arch, trainable, t_bytes, lora)
    if inp.strategy in strategies.DEEPSPEED:
        states, step_temp = trainable * 8.0, trainable * 4.0 * (1 if inp.mixed else 0)  # fp32 states + fp32 grad partition
    autocast_copies = 0.0
    if prec.autocast and not bits:
        lm_head = arch.vocab * arch.hidden if inp.task in ("causal-lm", "seq2seq") else 0
        autocast_copies = 2.0 * min(linear_weight_params(arch) + lm_head, total)

    # what one GPU holds of each, by strategy
    host = 0.0
    gathered = 0.0
    buckets = 0.0
    layer_params = arch.largest_layer if arch.largest_layer < arch.vocab * arch.hidden else _layer_params(arch)
    row = strategies.BY_NAME[inp.strategy]
    on_gpu = not row.offload  # offloaded states are counted on the host below
    if row.shards_states and not row.shards_grads:
        master, states, step_temp = master / n, states / n, step_temp / n
    elif row.shards_grads and on_gpu:
        master, states, step_temp, grads = master / n, states / n, step_temp / n, grads / n
    if row.shards_params and on_gpu and n > 1:
        weights = weights / n
        gathered = 3 * layer_params * prec.matmul  # current + prefetched unit, + unsharded grads of one unit
        if inp.strategy == "zero3":
            gathered = max(gathered, 4 * arch.largest_layer * 1.0)
    if inp.strategy == "fsdp_shard_grad_op":
        gathered = total * prec.matmul * (1 - 1 / n)  # parameters stay gathered through forward and backward
    persistent_grads = inp.persistent_grads
    if inp.strategy in strategies.FSDP and inp.grad_accum > 1 and n > 1:
        # the Trainer accumulates under accelerate's no_sync (sync_each_batch off), and FSDP's no_sync keeps every
        # GPU's gradients whole, unsharded, through the next micro-batches' forward and backward until one syncs
        grads, persistent_grads = trainable * t_bytes, True
        notes.append(f"FSDP with gradient accumulation ({inp.grad_accum} micro-batches): gradients stay unsharded on "
                     "every GPU between syncs (accelerate's no_sync)")
    if row.offload:
        host_states = master + states + step_temp + trainable * 4.0
        host += host_states / max(inp.nodes, 1)  # pinned host memory: each node holds its GPUs' shards
        master = states = step_temp = 0.0
        grads = grads / n
        if inp.strategy == "zero3_offload":
            host += weights / max(inp.nodes, 1)
            weights = 0.0
            gathered = max(3 * layer_params * prec.matmul, 4 * arch.largest_layer * 1.0)
    if inp.strategy in strategies.DEEPSPEED:
        reduce_bucket = arch.hidden * arch.hidden
        buckets = 4.5 * 4 * reduce_bucket + (2e8 * prec.matmul if inp.strategy in ("zero1", "zero2", "zero2_offload")
                                             else 0.9 * reduce_bucket * prec.matmul)
    elif inp.strategy == "ddp":
        buckets = trainable * t_bytes  # DDP's gradient buckets: a second copy of the gradients
    if inp.strategy in strategies.MULTI and inp.world_size < 2:
        notes.append(f"strategy {inp.strategy} on one GPU shards nothing")

    act = activations.estimate(arch, prec, inp.batch, inp.seq, inp.eval_batch, inp.attn, inp.task,
                               inp.gradient_checkpointing)
    adapter_act = 0.0  # what the adapters save for backward (LoRA dropout's copies): one layer's under checkpointing
    if lora:
        adapter_act = inp.batch * inp.seq * lora_activation_bytes(
            arch, Lora(r=inp.lora_r or 0, target_modules=tuple(inp.lora_targets) or None,
                       modules_to_save=inp.lora_modules_to_save, use_dora=inp.lora_dora, dropout=inp.lora_dropout),
            inp.task, half_weights=prec.weights == 2, autocast=bool(inp.mixed))
        if inp.gradient_checkpointing:
            adapter_act /= max(arch.layers + arch.decoder_layers, 1)
    first_grads = min(arch.vocab * arch.hidden * t_bytes, grads) if not lora else 0.0
    if persistent_grads:
        first_grads = grads
    base = {"weights": weights, "optimizer states": states + master, "gathered parameters": gathered}
    tr = None
    if inp.structure != "off" and inp.strategy != "cpu":
        tr = activations.traced(arch, inp.task, activations.trace_mode(inp.dtype, inp.mixed, half_compute(inp),
                                                                        bool(bits)),
                                inp.attn, inp.gradient_checkpointing, inp.batch, inp.seq, inp.eval_batch,
                                learn=inp.structure == "auto")
    if tr is not None:
        route = f"traced ({tr.route})"
        if tr.route != "cached":
            kept = "" if "cached" in tr.route else ", now cached"
            notes.append(f"activations counted from the model itself on the meta device ({tr.route}{kept})")
        unsharded = inp.strategy in ("single", "ddp") and not lora
        if lora:
            back_grads, back_extra = lora * 4.0, tr.backward_peak - tr.saved
        elif unsharded and tr.end_backward > tr.backward_peak + max(tr.grads_at_peak, first_grads):
            back_grads, back_extra = grads, max(0.0, tr.end_backward - grads - tr.saved)
        else:
            back_grads, back_extra = (grads if persistent_grads else first_grads), tr.backward_peak - tr.saved
        phases = {
            "forward": {**base, "gradients": grads if persistent_grads else 0.0, "activations": tr.saved,
                        "adapter activations": adapter_act, "logits and loss": tr.forward_peak - tr.saved},
            "backward": {**base, "activations": tr.saved, "adapter activations": adapter_act,
                         "backward buffers": max(0.0, back_extra), "gradients": back_grads,
                         "communication buckets": buckets},
            "optimizer step": {**base, "gradients": grads, "optimizer step temporaries": step_temp,
                               "communication buckets": buckets if inp.strategy == "ddp" else 0.0},
            "eval": {**base, "eval activations and logits": tr.eval_peak},
        }
        largest = tr.largest_block
    else:
        route = "closed form"
        phases = {
            "forward": {**base, "gradients": grads if persistent_grads else 0.0, "autocast weight copies": autocast_copies,
                        "activations": act.saved, "adapter activations": adapter_act, "logits and loss": act.loss_forward},
            "backward": {**base, "autocast weight copies": autocast_copies, "activations": act.saved,
                         "adapter activations": adapter_act, "logits and loss": act.loss_saved,
                         "backward buffers": act.backward_extra, "gradients": first_grads, "communication buckets": buckets},
            "optimizer step": {**base, "gradients": grads, "optimizer step temporaries": step_temp,
                               "communication buckets": buckets if inp.strategy == "ddp" else 0.0},
            "eval": {**base, "eval activations and logits": act.eval_transient},
        }
        largest = activations.largest_block(arch, prec, inp.batch, inp.seq, inp.eval_batch, inp.attn, inp.task)
    peak_phase = max(phases, key=lambda k: sum(phases[k].values()))
    peak = sum(phases[peak_phase].values())
    context = (inp.cuda_context_mib if inp.cuda_context_mib is not None else
               DEFAULT_CONTEXT_MIB + (NCCL_MIB if inp.strategy in strategies.MULTI and inp.world_size > 1 else 0)) * MIB
    # Without expandable segments, a block freed by one size cannot always serve a larger one: at worst a
    # whole largest block sits reserved but unusable (measured reserve over peak on the H100 rows: 0.2-1.2x it).
    reserve = peak * ALLOCATOR_SLACK + (0.0 if inp.expandable_segments else largest)
    low, high = band(peak, route)
    if inp.strategy == "cpu":
        device_used = peak * (1 + ALLOCATOR_SLACK) + HOST_BASELINE
        host += device_used * inp.num_gpus
        reserve, context = peak * ALLOCATOR_SLACK, HOST_BASELINE
    else:
        device_used = peak + reserve + context
        host += HOST_BASELINE * inp.num_gpus
    return Estimate(phases=phases, phase=peak_phase, peak_allocated=peak, device_used=device_used, host_ram=host,
                    capacity=inp.capacity_bytes, trainable_params=trainable, total_params=total, notes=notes,
                    route=route, largest_block=largest, reserve=reserve, peak_low=low, peak_high=high,
                    device_used_high=high * (1 + ALLOCATOR_SLACK) + (reserve - peak * ALLOCATOR_SLACK) + context)


def _layer_params(arch: Arch) -> int:
    return max(1, (params_for_task(arch, "base") - arch.vocab * arch.hidden) // max(arch.layers + arch.decoder_layers, 1))


def _optimizer(inp: MemoryInput, arch: Arch, trainable: int, t_bytes: int, lora: int) -> tuple[float, float]:
    """(optimizer states, optimizer-step temporaries) in bytes, for torch/bnb optimizers."""
    optim = inp.optim
    if optim in ("adamw_torch", "adamw_torch_fused", "adamw_hf"):
        states = 2.0 * trainable * t_bytes  # exp_avg and exp_avg_sq in the parameters' dtype
        temp = trainable * t_bytes if optim == "adamw_torch" else 0.0  # foreach sqrt(exp_avg_sq) copy
        return states, temp
    if optim == "adamw_bnb_8bit":
        return 2.0 * trainable + trainable * 8 / 2048, 0.0  # 1 byte per state + block-wise absmax
    if optim == "adafactor":
        if lora:
            return 4.0 * lora / 8, 0.0
        fact = _facts(arch, inp.task)
        if fact is not None:  # the model's own parameter shapes: factored rows + columns for >= 2-D, full for 1-D
            # the step upcasts a half parameter and its gradient, then builds the update and the factored
            # estimate at full size: 8 B per element of the largest parameter, 16 B when it is half precision
            temp = fact["largest_param"] * (8.0 + (8.0 if t_bytes == 2 else 0.0))
            return float((fact["adafactor_factored"] + fact["adafactor_vectors"]) * t_bytes), temp
        factored = sum(4 * (fi + fo) * c for fi, fo, c in arch.linear_shapes.values())
        vectors = 4 * max(0, trainable - linear_weight_params(arch) - arch.vocab * arch.hidden)
        biggest = max([fi * fo for fi, fo, _ in arch.linear_shapes.values()] + [arch.vocab * arch.hidden])
        return float(factored + vectors + 4 * (arch.vocab + arch.hidden)), 3.0 * biggest * 4  # update, grad**2 temps
    if optim == "sgd":
        return 0.0, 0.0
    raise ValueError(optim)


def _facts(arch: Arch, task: str) -> dict | None:
    from runners.plan import structure

    if not arch.config:
        return None
    known = structure.load(arch.config)["facts"]
    return known.get(task) or known.get("causal-lm") or next(iter(known.values()), None)


def max_batch_that_fits(inp: MemoryInput, limit: int = 4096) -> int:
    """The largest per-device batch size that fits surely (0 if not even 1): at the top of the benchmark's
    error band, with the allocator's worst fragmentation (a largest block) on top, eval phase included."""
    if not estimate(replace(inp, batch=1)).fits_surely:
        return 0
    lo, hi = 1, 2
    while hi <= limit and estimate(replace(inp, batch=hi)).fits_surely:
        lo, hi = hi, hi * 2
    hi = min(hi, limit + 1)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if estimate(replace(inp, batch=mid)).fits_surely:
            lo = mid
        else:
            hi = mid
    return lo


def confidence(inp: MemoryInput, est: Estimate, max_batch: int) -> dict:
    """How sure each memory figure is: a band per figure, from the accuracy benchmark's measured errors
    (assets/memory_bands.json), and the route the activations took."""
    out: dict = {"route": est.route, "source": "bench/memory_accuracy.py (assets/memory_bands.json)"}
    for name, b in est.bands().items():
        out[name] = {k: int(v) for k, v in b.items()}
    nominal = max_batch
    if max_batch and inp.strategy != "cpu":  # at the band's centre: where the estimate itself stops fitting
        lo, hi = max_batch, 2 * max_batch + 1
        while estimate(replace(inp, batch=hi)).fits and hi < 4096:
            lo, hi = hi, 2 * hi
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if estimate(replace(inp, batch=mid)).fits else (lo, mid)
        nominal = lo
    out["max_per_device_train_batch_size"] = {"value": max_batch, "low": max_batch, "high": nominal,
                                              "note": "value fits at the top of the error band with the allocator's "
                                                      "worst fragmentation; high is where the central estimate stops fitting"}
    return out
