"""The one table of hardware strategies and optimizers that the spec, the planner, the launcher and
the runners read; every other module derives its sets from here instead of repeating the names.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Strategy:
    name: str
    summary: str
    launcher: str  # the launcher "auto" picks (python becomes torchrun with more than one process)
    zero_stage: int = 0  # DeepSpeed ZeRO stage, 0 when DeepSpeed is not used
    offload: bool = False  # DeepSpeed offload of optimizer states (and parameters at stage 3) to host RAM
    fsdp: str | None = None  # the Trainer's `fsdp` option string
    shards_states: bool = False  # optimizer states divided over the GPUs
    shards_grads: bool = False
    shards_params: bool = False
    min_gpus: int = 0


TABLE: tuple[Strategy, ...] = (
    Strategy("cpu", "CPU processes (gloo)", "python"),
    Strategy("single", "one GPU", "python", min_gpus=1),
    Strategy("ddp", "data parallel, a full replica per GPU", "torchrun", min_gpus=2),
    Strategy("zero1", "DeepSpeed ZeRO-1: optimizer states sharded", "deepspeed", zero_stage=1, shards_states=True,
             min_gpus=1),
    Strategy("zero2", "DeepSpeed ZeRO-2: + gradients sharded", "deepspeed", zero_stage=2, shards_states=True,
             shards_grads=True, min_gpus=1),
    Strategy("zero3", "DeepSpeed ZeRO-3: + parameters sharded", "deepspeed", zero_stage=3, shards_states=True,
             shards_grads=True, shards_params=True, min_gpus=1),
    Strategy("zero2_offload", "ZeRO-2 with optimizer states in host RAM", "deepspeed", zero_stage=2, offload=True,
             shards_states=True, shards_grads=True, min_gpus=1),
    Strategy("zero3_offload", "ZeRO-3 with optimizer states and parameters in host RAM", "deepspeed", zero_stage=3,
             offload=True, shards_states=True, shards_grads=True, shards_params=True, min_gpus=1),
    Strategy("fsdp", "FSDP full shard", "accelerate", fsdp="full_shard auto_wrap", shards_states=True,
             shards_grads=True, shards_params=True, min_gpus=1),
    Strategy("fsdp_shard_grad_op", "FSDP shard grad op (parameters gathered through the step)", "accelerate",
             fsdp="shard_grad_op auto_wrap", shards_states=True, shards_grads=True, min_gpus=1),
)
BY_NAME = {s.name: s for s in TABLE}
NAMES = tuple(s.name for s in TABLE)
DEEPSPEED = tuple(s.name for s in TABLE if s.zero_stage)
FSDP = tuple(s.name for s in TABLE if s.fsdp)
FSDP_OPTIONS = {s.name: s.fsdp for s in TABLE if s.fsdp}
OFFLOAD = tuple(s.name for s in TABLE if s.offload)
SHARDED = tuple(s.name for s in TABLE if s.shards_states)
MULTI = ("ddp",) + SHARDED
MIN_GPUS = {s.name: s.min_gpus for s in TABLE if s.min_gpus}

LAUNCHERS = ("auto", "python", "torchrun", "accelerate", "deepspeed")
# Optimizers the planner models, by TrainingArguments `optim` name (adamw_hf is transformers' own AdamW).
OPTIMIZERS = ("adamw_torch", "adamw_torch_fused", "adafactor", "adamw_bnb_8bit", "sgd")
PLANNED_OPTIMIZERS = OPTIMIZERS + ("adamw_hf",)
