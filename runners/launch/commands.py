"""The command line of a run and the files its launcher reads: ``launch.sh``, ``ds_config.json``,
``accelerate.yaml``. ``launch.sh`` is exactly what the supervisor executes: a user can re-run it by hand.
Making the run dir and starting it detached is runners/launch/launcher.py's.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import sys
from pathlib import Path

from runners import loopback, paths, strategies
from runners import spec as specmod
from runners.errors import UserError
from runners.launch import multinode
from runners.spec import RunSpec

ROOT = paths.ROOT
# Environment passed through to the job and written into launch.sh (never secrets).
PASS_ENV = ("HF_HOME", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "WANDB_MODE", "WANDB_PROJECT",
            "CUDA_VISIBLE_DEVICES", "TOKENIZERS_PARALLELISM", "OMP_NUM_THREADS", "DS_BUILD_OPS")


def choose_launcher(spec: RunSpec) -> str:
    """The strategy table's launcher (deepspeed for ZeRO, accelerate for FSDP); python for one process,
    torchrun for more."""
    hw = spec.hardware
    if hw.launcher != "auto":
        return hw.launcher
    launcher = strategies.BY_NAME[hw.strategy].launcher
    if launcher in ("python", "torchrun"):
        return "torchrun" if hw.num_processes > 1 or hw.nodes > 1 else "python"
    return launcher


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def find_program(name: str) -> str:
    local = Path(sys.executable).with_name(name)
    found = str(local) if local.exists() else shutil.which(name)
    if not found:
        raise UserError(f"The launcher '{name}' is not installed in this environment. Install it (it comes with "
                        f"{'torch' if name == 'torchrun' else name}) or choose hardware.launcher python/torchrun.")
    return found


def deepspeed_config(strategy: str, mixed: str | None) -> dict:
    """A ZeRO config with the Trainer's "auto" values (it fills batch sizes, lr, clipping, buckets)."""
    stage = strategies.BY_NAME[strategy].zero_stage
    zero: dict = {"stage": stage, "overlap_comm": True, "contiguous_gradients": True, "reduce_bucket_size": "auto"}
    if stage < 3:
        zero["allgather_bucket_size"] = 2e8
    else:
        zero.update({"stage3_prefetch_bucket_size": "auto", "stage3_param_persistence_threshold": "auto",
                     "stage3_gather_16bit_weights_on_model_save": True})
    if strategies.BY_NAME[strategy].offload:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
        if stage == 3:
            zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    return {"train_batch_size": "auto", "train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto",
            "gradient_clipping": "auto", "zero_optimization": zero, "bf16": {"enabled": "auto"},
            "fp16": {"enabled": "auto"}, "zero_allow_untested_optimizer": True, "zero_force_ds_cpu_optimizer": False,
            "steps_per_print": 10**9, "wall_clock_breakdown": False}


def accelerate_config(spec: RunSpec, rdzv: multinode.Rendezvous | None = None) -> str:
    """``accelerate.yaml``, dumped by the YAML library (never assembled by hand). With several nodes it is the
    same file on each: ``num_processes`` counts every machine's (accelerate's meaning), and each node's
    launch.sh gives its ``--machine_rank`` and the rendezvous address on the command line."""
    import yaml

    nodes = spec.hardware.nodes
    n = spec.hardware.num_processes * nodes
    config: dict = {"compute_environment": "LOCAL_MACHINE", "num_processes": n, "num_machines": nodes, "machine_rank": 0,
                    "main_training_function": "main", "mixed_precision": "no", "same_network": True}
    if nodes > 1 and rdzv is not None:
        config.update(main_process_ip=rdzv.addr, main_process_port=rdzv.port, rdzv_backend="static")
    if spec.hardware.strategy in strategies.FSDP:
        sharding = "FULL_SHARD" if spec.hardware.strategy == "fsdp" else "SHARD_GRAD_OP"
        config["distributed_type"] = "FSDP"
        config["fsdp_config"] = {"fsdp_sharding_strategy": sharding, "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
                                 "fsdp_state_dict_type": "SHARDED_STATE_DICT", "fsdp_use_orig_params": True}
    else:
        # on CPU, MULTI_CPU/--cpu silently starts one process; MULTI_GPU starts N with gloo (shared/NOTES.md)
        config["distributed_type"] = "MULTI_GPU" if n > 1 else "NO"
    return yaml.safe_dump(config, sort_keys=False)


def build_command(spec: RunSpec, run_dir: Path, port: int | None = None) -> list[str]:
    launcher = choose_launcher(spec)
    n = spec.hardware.num_processes
    entry = ["-m", "runners.train", "--run-dir", str(run_dir)]
    if launcher == "python":
        if n > 1:
            raise UserError(f"hardware.launcher python runs one process, but num_processes is {n}. Use torchrun, "
                            "accelerate or deepspeed, or set num_processes to 1.")
        return [sys.executable, *entry]
    if spec.hardware.nodes > 1:  # one launcher per node, placed by launch.sh's environment (multinode.py)
        return multinode.command(launcher, find_program(launcher), n, run_dir)
    port = port or free_port()
    if launcher == "torchrun":
        # a one-machine rendezvous with no listener beyond loopback (runners/loopback.py)
        return [find_program("torchrun"), "--nnodes=1", f"--nproc_per_node={n}", *loopback.torchrun_rendezvous(), *entry]
    if launcher == "accelerate":
        return [find_program("accelerate"), "launch", "--config_file", str(run_dir / "accelerate.yaml"),
                # port 0: accelerate picks a free one, never falling back to its all-interfaces "standalone" store
                "--main_process_port", "0", "--rdzv_backend", "c10d", "--rdzv_conf", "store_type=file", *entry]
    if launcher == "deepspeed":
        return [find_program("deepspeed"), f"--num_gpus={n}", f"--master_addr={loopback.LOOPBACK}", f"--master_port={port}",
                "--module", "runners.train",
                "--run-dir", str(run_dir)]
    raise UserError(f"Unknown launcher '{launcher}'.")


def _export(name: str, value: str, inherited: bool = False) -> str:
    """One export line. The GPUs inherited from the launching shell are only a default: a scheduler that assigns
    GPUs to the job step (Slurm sets CUDA_VISIBLE_DEVICES for each srun task) keeps its own; hardware.gpus is not."""
    if inherited and name == "CUDA_VISIBLE_DEVICES" and re.fullmatch(r"[\w,.:-]*", value):
        return f'export {name}="${{{name}-{value}}}"'
    return f"export {name}={shlex.quote(value)}"


def gpu_env(spec: RunSpec) -> dict[str, str]:
    """hardware.gpus as the CUDA_VISIBLE_DEVICES of every rank (none: the GPUs the launching shell sees)."""
    gpus = spec.hardware.gpus
    return {"CUDA_VISIBLE_DEVICES": ",".join(str(g) for g in gpus)} if gpus and spec.hardware.strategy != "cpu" else {}


def launch_script(command: list[str], run_dir: Path, extra_env: dict[str, str] | None = None, prelude: str = "") -> str:
    """launch.sh: cd, the environment, then ``exec`` the command. ``prelude`` (a multi-node run's node
    placement, multinode.prelude) comes just before the command, whose ``${FTUI_...}`` words it expands."""
    env = {k: os.environ[k] for k in PASS_ENV if k in os.environ}
    env.update(extra_env or {})
    # expandable segments: less fragmentation, so the plan's peak is what the job needs (unless the user chose)
    env["PYTORCH_CUDA_ALLOC_CONF"] = os.environ.get("PYTORCH_CUDA_ALLOC_CONF") or "expandable_segments:True"
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else "")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("PYTHONUNBUFFERED", "1")
    inherited = {k for k in PASS_ENV if k in os.environ} - set(extra_env or {})
    exports = "\n".join(_export(k, specmod.redact(v), k in inherited) for k, v in sorted(env.items()))
    return ("#!/usr/bin/env bash\n# Written by ftui: the exact command of this run. Re-run it by hand with: bash launch.sh\n"
            f"set -e\ncd {shlex.quote(str(run_dir))}\n{exports}\n{prelude}exec {' '.join(map(multinode.shell_word, command))}\n")

