"""What the runners share, so no runner imports another: rank facts, the control files, memory records
and experiment tracking set-up. Runs in the training process."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runners import rundir, strategies
from runners.spec import RunSpec


def trainer_plumbing(spec: RunSpec, run_dir: Path, world_size: int, args: dict[str, Any]) -> dict[str, Any]:
    """ftui's part of the TrainingArguments (or SFTConfig) kwargs, on top of the spec's values and the cadence:
    where output, tracking and strategy files go, and what a DDP or CPU run needs. The spec's own values win."""
    import torch

    args.update(output_dir=str(run_dir / "output"), disable_tqdm=True, logging_first_step=True)
    args.setdefault("include_num_input_tokens_seen", "all")
    args.setdefault("report_to", spec.tracking.report_to or "none")
    if spec.tracking.run_name or "wandb" in spec.tracking.report_to:
        args.setdefault("run_name", spec.tracking.run_name or spec.name)
    if world_size > 1:
        args.setdefault("average_tokens_across_devices", False)  # True doubles the logged loss under DDP
        args.setdefault("ddp_find_unused_parameters", False)
    strategy = spec.hardware.strategy
    if strategy in strategies.DEEPSPEED:
        args.setdefault("deepspeed", str(run_dir / "ds_config.json"))
    elif strategy in strategies.FSDP_OPTIONS:
        args.setdefault("fsdp", strategies.FSDP_OPTIONS[strategy])
    if not torch.cuda.is_available() or strategy == "cpu":
        # on CPU the distributed state must come from the cpu path (gloo), also under DeepSpeed,
        # whose own path counts one process without CUDA
        args.setdefault("use_cpu", True)
    return args


def configure_tracking(spec: RunSpec, run_dir: Path) -> None:
    if "wandb" in spec.tracking.report_to:
        os.environ.setdefault("WANDB_DIR", str(run_dir))
        if spec.tracking.wandb_project:
            os.environ.setdefault("WANDB_PROJECT", spec.tracking.wandb_project)
        if spec.tracking.wandb_mode:
            os.environ["WANDB_MODE"] = spec.tracking.wandb_mode
        elif not os.environ.get("WANDB_API_KEY") and not (Path.home() / ".netrc").exists():
            os.environ.setdefault("WANDB_MODE", "offline")


@dataclass(frozen=True)
class RankInfo:
    """This process's place: global ``rank``, ``local_rank`` on its node, and ``node`` of ``nodes`` (a multi-node
    run's launch.sh exports FTUI_NODE_RANK and FTUI_NNODES: runners/launch/multinode.py)."""

    rank: int
    local_rank: int
    world_size: int
    node: int = 0
    nodes: int = 1

    @classmethod
    def from_env(cls) -> RankInfo:
        env = os.environ
        return cls(int(env.get("RANK", 0)), int(env.get("LOCAL_RANK", 0)), int(env.get("WORLD_SIZE", 1)),
                   int(env.get("FTUI_NODE_RANK") or 0), int(env.get("FTUI_NNODES") or 1))

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def memory_record(rank: int, step: int, where: RankInfo | None = None) -> dict[str, Any]:
    """This process's memory: torch.cuda counters on GPU, resident set size always. In a multi-node run
    (``where.nodes`` > 1) also its ``node`` and ``host``: a viewer's NVML sees only its own machine's GPUs."""
    import psutil

    record: dict[str, Any] = {"step": step, "rank": rank, "rss": psutil.Process().memory_info().rss, "device": "cpu"}
    if where is not None and where.nodes > 1:
        import socket

        record.update(node=where.node, host=socket.gethostname())
    try:
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            dev = torch.cuda.current_device()
            record.update(device=f"cuda:{dev}", allocated=torch.cuda.memory_allocated(dev),
                          reserved=torch.cuda.memory_reserved(dev),
                          peak_allocated=torch.cuda.max_memory_allocated(dev),
                          peak_reserved=torch.cuda.max_memory_reserved(dev))
    except Exception:  # noqa: BLE001 - memory reporting must never break training
        pass
    return record


class ControlFiles:
    """Reads and clears the stop/checkpoint request files of a run dir."""

    def __init__(self, run_dir: Path) -> None:
        self.dir = Path(run_dir) / rundir.CONTROL_DIR

    def _exists(self, what: str) -> bool:
        return (self.dir / what).exists()

    def stop_requested(self) -> bool:
        return self._exists(rundir.STOP_REQUEST)

    def checkpoint_requested(self) -> bool:
        return self._exists(rundir.CHECKPOINT_REQUEST)

    def clear(self, what: str) -> None:
        try:
            (self.dir / what).unlink()
        except FileNotFoundError:
            pass


def agree(flags: list[int]) -> list[int]:
    """Rank 0's flags, on every rank (a broadcast when torch.distributed is up, else unchanged)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return flags
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    tensor = torch.tensor(flags, dtype=torch.int32, device=device)
    dist.broadcast(tensor, src=0)
    return [int(x) for x in tensor.tolist()]
