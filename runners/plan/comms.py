"""The communication of one optimizer step: which collectives a strategy runs, the bytes each GPU moves inside
its node and across nodes, the seconds they take over the links, and what of it compute hides.

Physics with stated constants, no fit (docs/time_and_probe.md, "Multi-node"):

- Volumes (the ZeRO paper, Rajbhandari et al. 2020, section 7; nccl-tests' PERFORMANCE.md): a ring all-reduce
  of S bytes over W ranks sends 2(W-1)/W x S per rank, an all-gather or a reduce-scatter (W-1)/W x S. NCCL's
  double binary tree moves the same bytes per node for an all-reduce; only its latency differs, and the
  collectives here are tens of MB or more, so latency is left out.
- The split: NCCL's rings visit every GPU of a node before crossing to the next node, so of a rank's bytes
  (G-1)/G go over NVLink/NVSwitch and 1/G over the fabric (G GPUs per node): a node sends across as much as
  one GPU sends in all, which is why a node's all-reduce busbw is about its NICs together.
- Time: the slower of the two legs, each at a stated share of its line rate (assets/interconnects.json).
- What runs when, as the Trainer drives each engine: DDP and FSDP skip the gradient sync on all but the last
  micro-batch of an optimizer step (the Trainer's ``accelerator.no_sync``); DeepSpeed ZeRO-2/3 reduce every
  micro-batch ("ZeRO stage >= 2 communicates during non gradient accumulation boundaries", DeepSpeed's
  engine.py); ZeRO-3 and FSDP full shard gather the parameters in every forward and again in every backward.
- Overlap: gradient buckets reduce during backward and prefetched parameter gathers run during the previous
  layer's compute, so a phase exposes what exceeds its compute, and at least the one unit nothing can hide (the
  first layer's gather, the last bucket's reduction); ZeRO-1/2's all-gather of the updated parameters after the
  optimizer step has no compute to hide behind.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from runners import paths, strategies
from runners.plan.architecture import DTYPE_BYTES, params_for_task

if TYPE_CHECKING:
    from runners.plan.memory import MemoryInput
    from runners.plan.timing import GPU

INTERCONNECTS = paths.ASSETS / "interconnects.json"
DDP_BUCKET_BYTES = 25 * 2**20  # torch DistributedDataParallel's bucket_cap_mb default
DOMINATES = 0.5  # "communication dominates" when its exposed share of the step is above this


@lru_cache(maxsize=1)
def _table() -> dict[str, Any]:
    return json.loads(INTERCONNECTS.read_text())


@dataclass(frozen=True)
class Fabric:
    """The links of a run: each GPU's own link inside the node, the node's fabric across nodes."""

    nodes: int
    gpus_per_node: int
    intra_gbs: float  # per GPU, one direction, GB/s (assets/gpus.json link_gbs)
    inter_gbps: float  # per node, all NICs together, Gb/s
    inter_source: str
    intra_efficiency: float
    inter_efficiency: float

    @property
    def world(self) -> int:
        return self.nodes * self.gpus_per_node

    def seconds(self, op: str, nbytes: float) -> tuple[float, float, float, float]:
        """(seconds, bytes per GPU over the node's links, bytes per GPU across nodes, bytes per node across)
        of one ``op`` on a buffer of ``nbytes``."""
        w = self.world
        if w < 2 or nbytes <= 0:
            return 0.0, 0.0, 0.0, 0.0
        rank = nbytes * (2.0 if op == "all-reduce" else 1.0) * (w - 1) / w
        g = self.gpus_per_node
        if self.nodes > 1:
            intra, inter_gpu, inter_node = rank * (g - 1) / g, rank / g, rank
        else:
            intra, inter_gpu, inter_node = rank, 0.0, 0.0
        t_intra = intra / (self.intra_gbs * 1e9 * self.intra_efficiency) if intra else 0.0
        t_inter = inter_node / (self.inter_gbps / 8 * 1e9 * self.inter_efficiency) if inter_node else 0.0
        return max(t_intra, t_inter), intra, inter_gpu, inter_node


def fabric(gpu: GPU, nodes: int, gpus_per_node: int, interconnect_gbps: float | None = None) -> Fabric:
    """The run's links: the GPU's own (gpus.json) inside, the flag's or the GPU's typical node's across."""
    table = _table()
    eff = table["efficiency"]
    entry = next((n for n in table["nodes"] if gpu.key in n["gpus"]), table["default"])
    if interconnect_gbps is not None:
        inter, source = float(interconnect_gbps), "hardware.interconnect_gbps"
    else:
        inter, source = float(entry["inter_gbps"]), f"typical {gpu.key} node: {entry['nics']}"
    return Fabric(nodes=max(nodes, 1), gpus_per_node=max(gpus_per_node, 1), intra_gbs=gpu.link_gbs,
                  inter_gbps=inter, inter_source=source, intra_efficiency=float(eff["intra"]),
                  inter_efficiency=float(eff["inter"]))


@dataclass(frozen=True)
class Collective:
    what: str
    op: str  # all-reduce, all-gather, reduce-scatter
    buffer_bytes: float  # the whole tensor set it moves
    phase: str  # forward, backward, after the step
    every_micro_batch: bool  # else once per optimizer step, in the last micro-batch
    unit_bytes: float  # what no compute can hide: the first gather in forward, the last bucket in backward


def _bytes_per_element(inp: MemoryInput) -> tuple[int, int]:
    """(gradient bytes as reduced, parameter bytes as gathered) per element, as each engine sends them."""
    weights = DTYPE_BYTES[inp.dtype]
    if inp.strategy in strategies.DEEPSPEED or inp.strategy in strategies.FSDP:
        # DeepSpeed converts the model to the half dtype; accelerate's FSDP mixed precision gathers and reduces
        # in it (MixedPrecision(param_dtype=bf16, reduce_dtype=bf16, ...))
        half = 2 if inp.mixed else weights
        return half, half
    return (4 if inp.lora_r else weights), weights  # DDP reduces the gradients in the parameters' dtype


def collectives(inp: MemoryInput, trainable: int) -> list[Collective]:
    """What ``inp.strategy`` sends per optimizer step, from first principles (see the module docstring)."""
    strategy = inp.strategy
    if strategy == "cpu" or inp.world_size < 2:
        return []
    arch = inp.arch
    units = max(arch.layers + arch.decoder_layers, 1)  # FSDP wraps, and ZeRO-3 fetches, one layer at a time
    grad_b, param_b = _bytes_per_element(inp)
    grads = float(trainable * grad_b)
    row = strategies.BY_NAME[strategy]
    if not row.shards_states:  # ddp (and "single" launched as several processes: the Trainer wraps it in DDP)
        return [Collective("gradients all-reduce", "all-reduce", grads, "backward", False, min(grads, DDP_BUCKET_BYTES))]
    bucket = min(grads, float(arch.hidden * arch.hidden * grad_b))  # the Trainer's "auto" reduce_bucket_size
    params = float(params_for_task(arch, inp.task) * param_b)
    if row.shards_params:  # ZeRO-3 and FSDP full shard: gathered for forward, freed, gathered again for backward
        deepspeed = strategy in strategies.DEEPSPEED
        return [Collective("parameters all-gather (forward)", "all-gather", params, "forward", True, params / units),
                Collective("parameters all-gather (backward)", "all-gather", params, "backward", True, 0.0),
                Collective("gradients reduce-scatter", "reduce-scatter", grads, "backward", deepspeed,
                           grads / units if not deepspeed else bucket)]
    if strategy in strategies.FSDP:  # shard_grad_op: gathered once in forward, kept through backward
        return [Collective("parameters all-gather (forward)", "all-gather", params, "forward", True, params / units),
                Collective("gradients reduce-scatter", "reduce-scatter", grads, "backward", False, grads / units)]
    # ZeRO-1/2: gradients reduced to their owners, each rank updates its shard, then all ranks gather the update
    updated = float(trainable * (2 if inp.mixed else DTYPE_BYTES[inp.dtype]))
    return [Collective("gradients reduce-scatter", "reduce-scatter", grads, "backward", row.shards_grads, bucket),
            Collective("updated parameters all-gather", "all-gather", updated, "after the step", False, updated)]


@dataclass
class Comms:
    fabric: Fabric
    rows: list[dict[str, Any]] = field(default_factory=list)
    intra_bytes: float = 0.0  # per GPU per optimizer step, over the node's own links
    inter_bytes: float = 0.0  # per GPU per optimizer step, across nodes
    inter_node_bytes: float = 0.0  # per node per optimizer step, across nodes
    seconds: float = 0.0  # all collectives, as if nothing overlapped
    exposed_s: float = 0.0  # what compute does not hide
    compute_s: float = 0.0  # the forward + backward time it can hide behind

    def to_json(self, step_s: float) -> dict[str, Any]:
        f = self.fabric
        share = self.exposed_s / step_s if step_s else 0.0
        return {"nodes": f.nodes, "gpus_per_node": f.gpus_per_node, "world_size": f.world,
                "intra_node_gbs": f.intra_gbs, "inter_node_gbps": f.inter_gbps, "inter_node_source": f.inter_source,
                "efficiency": {"intra": f.intra_efficiency, "inter": f.inter_efficiency},
                "intra_node_bytes_per_gpu": int(self.intra_bytes), "inter_node_bytes_per_gpu": int(self.inter_bytes),
                "inter_node_bytes_per_node": int(self.inter_node_bytes),
                "comm_s": self.seconds, "exposed_s": self.exposed_s, "exposed_share": share,
                "bound": "communication" if self.seconds > self.compute_s else "compute",
                "dominates": share > DOMINATES, "collectives": self.rows}


def estimate(inp: MemoryInput, gpu: GPU, trainable: int, accumulation: int, forward_s: float,
             backward_s: float) -> Comms:
    """Bytes, seconds and exposed seconds of one optimizer step; ``forward_s``/``backward_s`` are one
    micro-batch's compute (what the prefetches and bucketed reductions overlap)."""
    fab = fabric(gpu, inp.nodes, inp.num_gpus, inp.interconnect_gbps)
    out = Comms(fabric=fab, compute_s=(forward_s + backward_s) * accumulation)
    per_micro: dict[tuple[str, bool], list[float]] = {}  # (phase, last micro-batch) -> [seconds, unit seconds]
    after = 0.0
    for c in collectives(inp, trainable):
        seconds, intra, inter_gpu, inter_node = fab.seconds(c.op, c.buffer_bytes)
        count = accumulation if c.every_micro_batch else 1
        out.intra_bytes += intra * count
        out.inter_bytes += inter_gpu * count
        out.inter_node_bytes += inter_node * count
        out.seconds += seconds * count
        out.rows.append({"what": c.what, "op": c.op, "buffer_bytes": int(c.buffer_bytes), "per_step": count,
                         "phase": c.phase, "seconds_each": seconds})
        if c.phase == "after the step":
            after += seconds
            continue
        unit = fab.seconds(c.op, c.unit_bytes)[0]
        for last in (False, True):
            if c.every_micro_batch or last:
                slot = per_micro.setdefault((c.phase, last), [0.0, 0.0])
                slot[0] += seconds
                slot[1] = max(slot[1], unit)
    window = {"forward": forward_s, "backward": backward_s}
    exposed = {last: sum(max(unit, comm - window[phase]) for (phase, is_last), (comm, unit) in per_micro.items()
                         if is_last == last) for last in (False, True)}
    out.exposed_s = exposed[False] * (accumulation - 1) + exposed[True] + after
    return out
