"""Launching a run: the launcher command line, its config files, ``launch.sh``, and the detached start.

The job runs under a supervisor (``runners/supervise.py``) in a new session, so closing the terminal,
losing SSH or killing ftui never kills training. Everything a run needs is in its run dir, written
before the supervisor starts; ``status.json`` is written last, so a directory without it is never
presented as a run. ``launch.sh`` is exactly what the supervisor executes: a user can re-run it by hand.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

from runners import loopback, rundir, strategies
from runners import spec as specmod
from runners.errors import UserError
from runners.spec import RunSpec

ROOT = Path(__file__).resolve().parent.parent
DEEPSPEED = strategies.DEEPSPEED
FSDP = strategies.FSDP
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
        return "torchrun" if hw.num_processes > 1 else "python"
    return launcher


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _bin(name: str) -> str:
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


def accelerate_config(spec: RunSpec) -> str:
    """``accelerate.yaml`` for one machine, dumped by the YAML library (never assembled by hand)."""
    import yaml

    n = spec.hardware.num_processes
    config: dict = {"compute_environment": "LOCAL_MACHINE", "num_processes": n, "num_machines": 1, "machine_rank": 0,
                    "main_training_function": "main", "mixed_precision": "no", "same_network": True}
    if spec.hardware.strategy in FSDP:
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
    port = port or free_port()
    if launcher == "torchrun":
        # a one-machine rendezvous with no listener beyond loopback (runners/loopback.py)
        return [_bin("torchrun"), "--nnodes=1", f"--nproc_per_node={n}", *loopback.torchrun_rendezvous(), *entry]
    if launcher == "accelerate":
        return [_bin("accelerate"), "launch", "--config_file", str(run_dir / "accelerate.yaml"),
                # port 0: accelerate picks a free one, never falling back to its all-interfaces "standalone" store
                "--main_process_port", "0", "--rdzv_backend", "c10d", "--rdzv_conf", "store_type=file", *entry]
    if launcher == "deepspeed":
        return [_bin("deepspeed"), f"--num_gpus={n}", f"--master_addr={loopback.LOOPBACK}", f"--master_port={port}",
                "--module", "runners.train",
                "--run-dir", str(run_dir)]
    raise UserError(f"Unknown launcher '{launcher}'.")


def launch_script(command: list[str], run_dir: Path, extra_env: dict[str, str] | None = None) -> str:
    env = {k: os.environ[k] for k in PASS_ENV if k in os.environ}
    env.update(extra_env or {})
    # expandable segments: less fragmentation, so the plan's peak is what the job needs (unless the user chose)
    env["PYTORCH_CUDA_ALLOC_CONF"] = os.environ.get("PYTORCH_CUDA_ALLOC_CONF") or "expandable_segments:True"
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else "")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("PYTHONUNBUFFERED", "1")
    exports = "\n".join(f"export {k}={shlex.quote(specmod.redact(v))}" for k, v in sorted(env.items()))
    return ("#!/usr/bin/env bash\n# Written by ftui: the exact command of this run. Re-run it by hand with: bash launch.sh\n"
            f"set -e\ncd {shlex.quote(str(run_dir))}\n{exports}\nexec {shlex.join(command)}\n")


def apply_overrides(spec: RunSpec, strategy: str | None, num_processes: int | None) -> RunSpec:
    hw = replace(spec.hardware, strategy=strategy or spec.hardware.strategy,
                 num_processes=num_processes or spec.hardware.num_processes)
    if num_processes is not None and num_processes < 1:
        raise UserError(f"--num_processes must be at least 1, got {num_processes}.")
    new = replace(spec, hardware=hw)
    specmod.validate(new, "command line")
    return new


def preflight(spec: RunSpec) -> None:
    """Every check that needs no run dir: model, data, cadence (the real TrainingArguments), launcher."""
    from runners import data, plan

    if not spec.model.name_or_path:
        raise UserError("The spec has no model.name_or_path: give a hub id or a local model directory.")
    if spec.runner == "simpletransformers" and spec.hardware.num_processes > 1:
        raise UserError(f"The simpletransformers runner trains in one process (it spreads over GPUs itself with n_gpu), "
                        f"but hardware.num_processes is {spec.hardware.num_processes}. Set it to 1, or use the "
                        "hf_trainer runner for multi-process training.")
    from runners import preflight as checks  # hardware, weights, positions, tokenizer (runners/preflight.py)

    checks.check_hardware(spec)
    resolved = checks.check_model(spec)
    checks.check_sequence(spec, resolved)
    roles = data.preflight(spec)
    checks.check_tokenizer(spec, resolved, [str(t) for t in data.load_table(
        spec.dataset.train, spec.dataset.hub_config, nrows=20)[roles.get("text") or next(iter(roles.values()))].tolist()])
    cad = plan.make_plan(spec, gpu_memory_gib=80, validate=True).cadence
    if cad is not None and cad.validated is False:
        raise UserError(f"transformers refuses the training arguments: {cad.validation_error}")
    if choose_launcher(spec) != "python":
        _bin(choose_launcher(spec))


def create_run(spec: RunSpec, runs_dir: Path, resumed_from: str | None = None) -> Path:
    """Write a complete run dir (spec, configs, launch.sh, status pending). Nothing is started."""
    try:
        run_dir = rundir.create_run_dir(runs_dir, spec.name)
    except OSError as exc:
        raise UserError(f"Cannot create a run in the runs dir '{runs_dir}' ({exc.strerror or exc}). Choose a writable "
                        "runs dir with --runs-dir or $FTUI_RUNS_DIR, or make this one writable (or free space).") from exc
    try:
        specmod.save(spec, run_dir / rundir.SPEC_FILE)
        if spec.hardware.strategy in DEEPSPEED:
            mixed = "bf16" if spec.training.get("bf16") else "fp16" if spec.training.get("fp16") else None
            (run_dir / "ds_config.json").write_text(json.dumps(deepspeed_config(spec.hardware.strategy, mixed), indent=1))
        if choose_launcher(spec) == "accelerate":
            (run_dir / "accelerate.yaml").write_text(accelerate_config(spec))
        command = build_command(spec, run_dir)
        script = run_dir / "launch.sh"
        script.write_text(launch_script(command, run_dir, loopback.launcher_env(choose_launcher(spec))))
        script.chmod(0o755)
        (run_dir / rundir.CONTROL_DIR).mkdir()
        from runners.plan import write_run_plan

        write_run_plan(spec, run_dir)  # plan.json: what the monitor compares the run against
        rundir.update_status(run_dir, state="pending", run_id=run_dir.name, command=command, spec_hash=spec.spec_hash(),
                             runner=spec.runner, strategy=spec.hardware.strategy, launcher=choose_launcher(spec),
                             num_processes=spec.hardware.num_processes, created_at=time.time(), resumed_from=resumed_from)
    except BaseException as exc:
        shutil.rmtree(run_dir, ignore_errors=True)  # never leave a half-written run dir behind
        if isinstance(exc, OSError):
            raise UserError(f"Cannot write the run dir in '{runs_dir}' ({exc.strerror or exc}): nothing was left "
                            "behind. Free space there, or choose another runs dir with --runs-dir or $FTUI_RUNS_DIR.") from exc
        raise
    return run_dir


def start(run_dir: Path, secrets: dict[str, str] | None = None) -> int:
    """Start the supervisor in a new session (detached from this terminal); returns its pid.

    ``secrets`` (runners.redaction.secrets_env) go into the supervisor's environment only, never into
    launch.sh: the ranks inherit them and fill the redacted slots of spec.yaml back."""
    log = open(run_dir / rundir.LOG_FILE, "ab")  # noqa: SIM115 - handed to the child
    env = {**{k: v for k, v in os.environ.items() if k != specmod.redaction.SECRETS_ENV}, **(secrets or {}),
           "PYTHONPATH": str(ROOT) + (os.pathsep + os.environ.get("PYTHONPATH", "") if os.environ.get("PYTHONPATH") else "")}
    proc = subprocess.Popen([sys.executable, "-m", "runners.supervise", str(run_dir)], stdin=subprocess.DEVNULL,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, close_fds=True, env=env, cwd=run_dir)
    log.close()
    for _ in range(100):  # wait until the supervisor has recorded the job's pids
        status = rundir.read_status(run_dir) or {}
        if status.get("state") != "pending" or proc.poll() is not None:
            break
        time.sleep(0.05)
    return proc.pid


def launch(spec: RunSpec, runs_dir: Path, resumed_from: str | None = None) -> Path:
    import contextlib

    from runners.preflight import check_runs_dir

    check_runs_dir(runs_dir)
    with contextlib.redirect_stdout(sys.stderr):  # library import chatter must not mix with our stdout
        preflight(spec)
    run_dir = create_run(spec, runs_dir, resumed_from)
    start(run_dir, specmod.redaction.secrets_env(spec.to_dict(), str(run_dir)))
    return run_dir
