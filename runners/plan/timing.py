"""Step time, tokens/s, wall time, GPU-hours and cost of a run, from FLOPs and the GPU's datasheet peak.

One optimizer step on one GPU costs

    step_s = accumulation * (work / PEAK_EFFICIENCY + LAYER_S * layers + MICRO_S) + optimizer_s + STEP_S

where ``work`` is the micro-batch's matmul FLOPs divided by the GPU's dense peak for the compute dtype
(seconds at 100% utilisation), ``optimizer_s`` the optimizer's memory traffic over the GPU's bandwidth,
and the constants are per-kernel and per-step overheads. With several GPUs (on one node or several) the
collectives' exposed seconds are added: what runners/plan/comms.py finds compute does not hide. Fixed
overheads are why small models reach a low MFU: the efficiency is not a constant but falls out of the fit.
The constants are fitted by ``bench/time_accuracy.py`` on the measured H100 rows in ``bench/calibration/h100_trainer_peaks.jsonl``
(every third row held out before fitting; the held-out error is in ``bench/results/time_accuracy.md``).
No torch import: this runs on the fast path of ``ftui --plan``.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from runners import paths, strategies
from runners.plan import comms
from runners.plan.architecture import Arch, params_for_task
from runners.plan.memory import MemoryInput, half_compute

GPUS_FILE = paths.ASSETS / "gpus.json"

# Fitted by bench/time_accuracy.py (fit split only); rerun it after changing the model below.
PEAK_EFFICIENCY = {"half": 0.473, "fp32": 0.818}  # share of the datasheet peak the matmuls reach
LAYER_S = 0.00247  # per transformer layer and micro-batch: kernel launches of forward + backward
MICRO_S = 0.0  # per micro-batch: data collation, loss, Trainer bookkeeping
STEP_S = 0.012  # per optimizer step: clipping, scheduler, zero_grad, callbacks (fixed, not fitted)
ACT_TRAFFIC = 4.48  # memory passes over one forward's activations by the elementwise kernels, forward + backward
OPT_TRAFFIC = {"adamw_torch_fused": 1.0, "adamw_torch": 2.0, "adamw_hf": 4.0, "adafactor": 6.0, "adamw_bnb_8bit": 0.6,
               "sgd": 0.4}  # memory traffic of the optimizer step relative to fused AdamW's 7 tensor passes
OPT_TENSOR_S = {"adafactor": 0.00025, "adamw_hf": 0.0001}  # per-parameter-tensor Python overhead of looped optimizers
BAND = 0.30  # estimate band: the calibration's worst held-out error, rounded up
PROBE_BAND = 0.10  # after a probe: measurement noise between runs
HOST_OFFLOAD_GBS = 12.0  # ZeRO-offload: optimizer state traffic over PCIe + the CPU Adam (uncalibrated)


@dataclass
class GPU:
    key: str
    tflops: dict[str, float | None]
    bandwidth_gbs: float
    link_gbs: float
    memory_gib: float
    source: str
    aliases: list[str] = field(default_factory=list)
    nvml: list[str] = field(default_factory=list)

    def peak(self, dtype: str) -> float:
        """FLOP/s for ``dtype`` (bf16, fp16, tf32, fp32); a half dtype the GPU lacks runs at its fp32 rate."""
        value = self.tflops.get(dtype)  # None: no such units (bf16 on V100/T4), about the fp32 rate
        rate = value if value is not None else self.tflops["fp32"]
        assert rate is not None, f"{self.key}: assets/gpus.json gives no fp32 rate"
        return float(rate) * 1e12


@lru_cache(maxsize=1)
def gpus() -> list[GPU]:
    data = json.loads(GPUS_FILE.read_text())
    return [GPU(key=g["key"], tflops=g["tflops"], bandwidth_gbs=g["bandwidth_gbs"], link_gbs=g["link_gbs"],
                memory_gib=g["memory_gib"], source=g["source"], aliases=g["aliases"], nvml=g["nvml"])
            for g in data["gpus"]]


def find_gpu(name: str | None) -> GPU | None:
    """The GPU for a --gpu value (key or alias) or an NVML name such as 'NVIDIA H100 80GB HBM3'."""
    if not name:
        return None
    text = name.strip().lower()
    for gpu in gpus():
        if text == gpu.key.lower() or text in gpu.aliases:
            return gpu
    patterns = sorted(((p, g) for g in gpus() for p in g.nvml), key=lambda pg: -len(pg[0]))
    for pattern, gpu in patterns:
        if re.search(re.escape(pattern) + r"(?![a-z0-9])", text):
            return gpu
    return None


def known_names() -> list[str]:
    return [g.key for g in gpus()]


def nvml_gpu_name() -> str | None:
    """The first GPU's NVML name, or None without a GPU or NVML."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            if not pynvml.nvmlDeviceGetCount():
                return None
            name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(0))
        finally:
            pynvml.nvmlShutdown()
        return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:  # noqa: BLE001 - no library, no driver, no GPU: no name
        return None


def compute_dtype(inp: MemoryInput, tf32: bool = False) -> str:
    """The dtype the matmuls run in: the autocast dtype, else the weights' (fp32 or tf32)."""
    if inp.mixed:
        return inp.mixed
    if inp.load_in_4bit:
        return "bf16"
    if inp.dtype == "bfloat16":
        return "bf16"
    if inp.dtype == "float16":
        return "fp16"
    return "tf32" if tf32 else "fp32"


def matmul_params(arch: Arch, task: str) -> float:
    """Parameters each token multiplies through: everything but embedding lookups, inactive experts
    excluded, the LM head included (tied or not) for token-predicting tasks."""
    total = params_for_task(arch, task)
    n = total - arch.vocab * arch.hidden
    if arch.family in ("bert", "roberta", "distilbert", "gpt2"):
        n -= arch.max_positions * arch.hidden
    if task in ("causal-lm", "seq2seq"):
        n += arch.vocab * arch.hidden if arch.tied or task == "seq2seq" else 0
    if arch.experts > 1:
        mlp = 3 * arch.hidden * arch.intermediate * arch.layers
        n -= mlp * arch.experts - mlp * arch.experts_per_token
    return float(max(n, 1))


def step_flops(inp: MemoryInput) -> float:
    """Matmul FLOPs of one micro-batch's forward + backward on one GPU.

    Forward: 2 per parameter per token plus attention's two s x s matmuls (4 * s * d per layer and token,
    half of it for causal SDPA/FlashAttention).
    Backward: twice the forward for activations and weights; a frozen base (LoRA) skips the weight
    gradients, so its backward is one forward. Gradient checkpointing recomputes one forward."""
    arch = inp.arch
    tokens = inp.batch * inp.seq
    attn_dim = arch.heads * arch.head_dim
    layers = arch.layers + 2 * arch.decoder_layers  # decoder layers: self- and cross-attention
    forward = 2 * matmul_params(arch, inp.task) * tokens + 4 * layers * inp.seq * attn_dim * tokens * _causal(inp)
    backward = forward if inp.lora_r else 2 * forward  # a frozen base: input gradients only
    recompute = forward if inp.gradient_checkpointing else 0.0
    return forward + backward + recompute


def _causal(inp: MemoryInput) -> float:
    """Causal attention under SDPA/FlashAttention skips the masked half of the score blocks."""
    return 0.5 if inp.task == "causal-lm" and inp.attn != "eager" else 1.0


def forward_flops(inp: MemoryInput, batch: int) -> float:
    arch = inp.arch
    tokens = batch * inp.seq
    layers = arch.layers + 2 * arch.decoder_layers
    return (2 * matmul_params(arch, inp.task) * tokens
            + 4 * layers * inp.seq * arch.heads * arch.head_dim * tokens * _causal(inp))


def activation_bytes(inp: MemoryInput) -> float:
    """Bytes one micro-batch's forward streams through elementwise kernels: per token and layer the residual
    stream and norms (in the weights' dtype), q/k/v and attention output, the MLP's intermediates (in the
    matmul dtype), eager attention's per-head scores (the loss: ``logits_bytes``). Its own closed form
    (Korthikanti et al. 2022's terms), so the calibration does not move when the memory model does."""
    arch = inp.arch
    matmul = 2 if (inp.mixed or inp.dtype != "float32" or inp.load_in_4bit) else 4
    residual = 2 if inp.dtype != "float32" or half_compute(inp) else 4
    h, inter = arch.hidden, arch.intermediate
    qkv = arch.heads * arch.head_dim + 2 * arch.kv_heads * arch.head_dim
    mlp = inter * (3 if arch.gated_mlp else 2) * (arch.experts_per_token if arch.experts > 1 else 1)
    per_token_layer = residual * 4 * h + matmul * (qkv + arch.heads * arch.head_dim + h + mlp)
    if inp.attn == "eager":
        per_token_layer += arch.heads * inp.seq * (4 + (1 + 4 if arch.dropout else 0))
    tokens = inp.batch * inp.seq
    layers = arch.layers + 2 * arch.decoder_layers
    return float(tokens * layers * per_token_layer)


def logits_bytes(inp: MemoryInput) -> float:
    """Memory traffic of the loss over the vocabulary, forward and backward: the half logits written, their
    float32 copy, log-softmax out, its gradient, the cast back (about 36 bytes per logit, not fitted)."""
    return 36.0 * inp.arch.vocab * inp.batch * inp.seq if inp.task in ("causal-lm", "seq2seq") else 0.0


def _param_tensors(arch: Arch) -> int:
    per_layer = 16 if arch.norm == "layernorm" else 9  # weights, biases, norms
    return (arch.layers + arch.decoder_layers) * per_layer * max(1, arch.experts if arch.experts > 1 else 1) + 4


@dataclass
class StepTime:
    step_s: float
    low_s: float
    high_s: float
    flops: float  # per optimizer step per GPU
    parts: dict[str, float]
    dtype: str
    gpu: str
    comms: comms.Comms | None = None  # several GPUs: the collectives, their bytes and what compute hides


def step_time(inp: MemoryInput, gpu: GPU, trainable: int, accumulation: int = 1, tf32: bool = False) -> StepTime:
    """Seconds per optimizer step on ``gpu`` (the run's per-device micro-batch, ``accumulation`` of them)."""
    dtype = compute_dtype(inp, tf32)
    eff = PEAK_EFFICIENCY["fp32" if dtype == "fp32" else "half"]
    flops = step_flops(inp)
    compute = flops / (gpu.peak(dtype) * eff)
    layers = inp.arch.layers + inp.arch.decoder_layers
    overhead = LAYER_S * layers * (1.33 if inp.gradient_checkpointing else 1.0) + MICRO_S
    t_bytes = 4 if (inp.lora_r or inp.dtype == "float32" or inp.strategy in strategies.DEEPSPEED) else 2
    shards = inp.world_size if inp.strategy in strategies.SHARDED and inp.strategy not in strategies.OFFLOAD else 1
    traffic = 7 * t_bytes * trainable / shards * OPT_TRAFFIC.get(inp.optim, 1.0)
    optimizer = traffic / (gpu.bandwidth_gbs * 1e9)
    optimizer += OPT_TENSOR_S.get(inp.optim, 0.0) * (_param_tensors(inp.arch) if not inp.lora_r else 2 * layers)
    memory_bound = ACT_TRAFFIC * activation_bytes(inp) * (1.33 if inp.gradient_checkpointing else 1.0)
    memory_bound = (memory_bound + logits_bytes(inp)) / (gpu.bandwidth_gbs * 1e9)
    parts = {"compute": compute * accumulation, "memory-bound ops": memory_bound * accumulation,
             "kernel overhead": overhead * accumulation,
             "optimizer": optimizer, "step overhead": STEP_S}
    comm = None
    if inp.world_size > 1 and inp.strategy != "cpu":  # overlapped with this micro-batch's forward and backward
        micro = compute + memory_bound + overhead
        forward_share = forward_flops(inp, inp.batch) / flops
        comm = comms.estimate(inp, gpu, trainable, accumulation, micro * forward_share, micro * (1 - forward_share))
        parts["communication (exposed)"] = comm.exposed_s
    if inp.strategy in strategies.OFFLOAD:
        parts["optimizer"] = 0.0
        parts["CPU offload"] = 16.0 * trainable / (HOST_OFFLOAD_GBS * 1e9)
    total = sum(parts.values())
    return StepTime(step_s=total, low_s=total * (1 - BAND), high_s=total * (1 + BAND), flops=flops * accumulation,
                    parts=parts, dtype=dtype, gpu=gpu.key, comms=comm)


def run_time(step: StepTime, total_steps: int, evaluations: int, eval_samples: int, inp: MemoryInput, gpu: GPU,
             num_gpus: int, tf32: bool = False) -> dict[str, float]:
    """Wall seconds of the whole run: the steps plus the evaluations (forward only)."""
    dtype = compute_dtype(inp, tf32)
    eff = PEAK_EFFICIENCY["fp32" if dtype == "fp32" else "half"]
    per_gpu = math.ceil(eval_samples / max(num_gpus, 1))
    one_eval = forward_flops(inp, per_gpu) / (gpu.peak(dtype) * eff) + \
        math.ceil(per_gpu / max(inp.eval_batch, 1)) * (LAYER_S / 3 * inp.arch.layers + MICRO_S)
    train = step.step_s * total_steps
    return {"train_s": train, "eval_s": one_eval * evaluations, "total_s": train + one_eval * evaluations}


def summary(inp: MemoryInput, gpu: GPU, trainable: int, accumulation: int, total_steps: int, evaluations: int,
            eval_samples: int, price: float | None, tf32: bool = False, measured_step_s: float | None = None,
            gpu_source: str = "flag") -> dict[str, Any]:
    """The plan's ``time`` object: step time, tokens/s, wall time, GPU-hours and cost, each with a band."""
    est = step_time(inp, gpu, trainable, accumulation, tf32)
    step, band, source = est.step_s, BAND, "estimate"
    if measured_step_s:
        step, band, source = measured_step_s, PROBE_BAND, "probe"
    scale = step / est.step_s
    world = inp.world_size
    wall = run_time(est, total_steps, evaluations, eval_samples, inp, gpu, world, tf32)
    total = wall["train_s"] * scale + wall["eval_s"]
    tokens = inp.batch * inp.seq * accumulation * world
    hours = total * world / 3600

    def banded(value: float) -> dict[str, float]:
        return {"value": value, "low": value * (1 - band), "high": value * (1 + band)}

    out: dict[str, Any] = {
        "gpu": gpu.key, "gpu_source": gpu_source, "compute_dtype": est.dtype, "source": source,
        "peak_tflops": gpu.peak(est.dtype) / 1e12,
        "step_s": banded(step), "estimated_step_s": est.step_s,
        "tokens_per_s": {"value": tokens / step, "low": tokens / (step * (1 + band)), "high": tokens / (step * (1 - band))},
        "flops_per_step": est.flops, "mfu": est.flops / (step * gpu.peak(est.dtype)),
        "total_steps": total_steps, "wall_s": banded(total), "eval_s": wall["eval_s"],
        "gpu_hours": banded(hours), "num_gpus": world, "nodes": inp.nodes, "gpus_per_node": inp.num_gpus,
        "parts_s": {k: v for k, v in est.parts.items() if v > 0},
        "cost": banded(hours * price) if price is not None else None, "gpu_hour_price": price,
        "communication": est.comms.to_json(est.step_s) if est.comms else None,
    }
    return out


def measured_only(inp: MemoryInput, measured_step_s: float, accumulation: int, total_steps: int, evaluations: int,
                  eval_samples: int, price: float | None, tf32: bool = False) -> dict[str, Any]:
    """The ``time`` object from a measured step time alone (CPU training: no GPU peak to estimate from)."""
    step, band = measured_step_s, PROBE_BAND
    tokens = inp.batch * inp.seq * accumulation * max(inp.world_size, 1)
    train = step * total_steps

    def banded(value: float) -> dict[str, float]:
        return {"value": value, "low": value * (1 - band), "high": value * (1 + band)}

    return {"gpu": None, "gpu_source": None, "compute_dtype": compute_dtype(inp, tf32), "source": "probe",
            "peak_tflops": None, "step_s": banded(step), "estimated_step_s": None,
            "tokens_per_s": {"value": tokens / step, "low": tokens / (step * (1 + band)), "high": tokens / (step * (1 - band))},
            "flops_per_step": None, "mfu": None, "total_steps": total_steps, "wall_s": banded(train), "eval_s": None,
            "gpu_hours": None, "num_gpus": 0, "parts_s": {}, "cost": None, "gpu_hour_price": price,
            "note": "wall time counts the training steps only (evaluations not measured)"}
