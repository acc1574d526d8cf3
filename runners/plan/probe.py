"""The probe: a few real training steps of the planned run, measured in subprocesses, to correct the plan.

``run(plan)`` starts ``python -m runners.plan.probe_worker`` twice, at two batch sizes (the run's, and half of
it; 1 and 2 for a batch of 1), each in a fresh process in its own process group, so the first never
pollutes the second's allocator. Each worker builds the model from its config (random init, real
tensors on the device), trains a few steps with the real HF Trainer, evaluates, and prints one JSON
line. From the two measurements: the measured peak per phase at the run's batch, the per-sample slope
of each phase, the largest batch that fits (with the planner's own margin: allocator slack and CUDA
context), and the measured step time, which replaces the time estimate.

This module never imports torch: the parent stays light. A timeout covers the whole probe; when it
passes, the worker's whole process group gets SIGTERM, then SIGKILL, and is reaped, so no process
(and so no GPU memory) outlives the probe. Without a GPU the workers run the same steps on the CPU:
step time is measured, memory figures stay the estimate.
"""
from __future__ import annotations

import atexit
import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

from runners import paths, peft_rules
from runners.plan import memory
from runners.plan.memory import GIB, MIB

ROOT = paths.ROOT
DEFAULT_TIMEOUT = 600.0
DEFAULT_STEPS = 4
KILL_GRACE_S = 5.0
TASKS = ("seq-cls", "causal-lm", "seq2seq")
NO_GPU = "no GPU: the probe measured step time on CPU only; memory figures are the estimate"


_ACTIVE: dict[int, subprocess.Popen] = {}  # pgid -> worker, while it runs
_CANCELLED: set[int] = set()  # groups stop_all() stopped


class ProbeTimeout(Exception):
    pass


class ProbeCancelled(Exception):
    pass


def worker_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")  # what ftui's launches use
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _stop_group(proc: subprocess.Popen, pgid: int) -> None:
    """SIGTERM the worker's process group, SIGKILL what is left after the grace period, reap the worker."""
    _signal_group(pgid, signal.SIGTERM)
    try:
        proc.communicate(timeout=KILL_GRACE_S)  # drains the pipes while it exits
    except subprocess.TimeoutExpired:
        pass
    _signal_group(pgid, signal.SIGKILL)  # whatever is left: the worker, or children it started
    proc.communicate()


def run_worker(config: dict[str, Any], timeout: float, pids: list[int] | None = None) -> dict[str, Any]:
    """One worker process; its parsed PROBE line. Raises ProbeTimeout after ``timeout`` seconds."""
    proc = subprocess.Popen([sys.executable, "-m", "runners.plan.probe_worker"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=worker_env(),
                            start_new_session=True)
    if pids is not None:
        pids.append(proc.pid)
    pgid = proc.pid  # start_new_session: the worker leads its own group
    _ACTIVE[pgid] = proc
    try:
        out, err = proc.communicate(json.dumps(config), timeout=max(timeout, 0.01))
    except subprocess.TimeoutExpired:
        _stop_group(proc, pgid)
        raise ProbeTimeout from None
    except BaseException:  # KeyboardInterrupt, a cancelled UI worker: never leave the worker running
        _stop_group(proc, pgid)
        raise
    finally:
        _ACTIVE.pop(pgid, None)
    _signal_group(pgid, signal.SIGKILL)  # anything the worker started and left behind
    if pgid in _CANCELLED:
        _CANCELLED.discard(pgid)
        raise ProbeCancelled
    lines = [line[6:] for line in out.splitlines() if line.startswith("PROBE ")]
    if not lines:
        tail = (err or out).strip().splitlines()[-3:]
        return {"status": "error", "error": f"the probe worker exited with {proc.returncode}: " + " | ".join(tail)}
    return json.loads(lines[-1])


@atexit.register
def stop_all() -> None:
    """Stop every probe worker this process started that is still running (the dashboard calls this when
    the setup screen goes away; atexit covers the rest)."""
    for pgid in list(_ACTIVE):
        _CANCELLED.add(pgid)
        _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + KILL_GRACE_S
    for pgid, proc in list(_ACTIVE.items()):
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        _signal_group(pgid, signal.SIGKILL)


def worker_config(plan: Any, batch: int, steps: int) -> dict[str, Any]:
    """What the worker builds and trains: the plan's own resolved inputs (``auto`` dtype as the planner read it)."""
    spec, inp = plan.spec, plan.inputs
    t = spec.training
    lora = spec.model.lora
    # the runner's own LoraConfig (task type, so a classifier head trains and is saved as in the run; dropout, DoRA)
    lora_kwargs = peft_rules.lora_config_kwargs(lora, plan.model.arch.family, spec.task) if lora else None
    return {"config": plan.model.config, "task": spec.task, "batch": batch, "seq": inp.seq, "steps": steps,
            "eval_batch": inp.eval_batch, "torch_dtype": inp.dtype, "attn": spec.model.attn_implementation,
            "bf16": bool(t.get("bf16")), "fp16": bool(t.get("fp16")), "gc": bool(t.get("gradient_checkpointing")),
            "optim": t.get("optim"), "lora": lora_kwargs, "device": "cpu" if inp.strategy == "cpu" else "auto"}


def batches(batch: int) -> tuple[int, int]:
    """(small, run's): the run's batch and half of it, or 1 and 2 for a batch of 1."""
    return (max(1, batch // 2), batch) if batch >= 2 else (1, 2)


def correct(plan: Any, small: dict[str, Any], large: dict[str, Any]) -> dict[str, Any]:
    """Slope and intercept per phase from two GPU measurements; the peak at the run's batch; the largest batch."""
    b1, b2 = small["batch"], large["batch"]
    run_batch = plan.inputs.batch
    phases: dict[str, dict[str, float]] = {}
    for name in large["peaks"]:
        p1, p2 = float(small["peaks"][name]), float(large["peaks"][name])
        slope = (p2 - p1) / (b2 - b1)
        phases[name] = {"slope_bytes_per_sample": slope, "intercept_bytes": p1 - slope * b1,
                        f"at_batch_{b1}": p1, f"at_batch_{b2}": p2}
    at_run = {name: ph["intercept_bytes"] + ph["slope_bytes_per_sample"] * run_batch for name, ph in phases.items()}
    phase = max(at_run, key=at_run.get)  # type: ignore[arg-type]
    peak = at_run[phase]
    context = memory.DEFAULT_CONTEXT_MIB * MIB
    capacity = plan.inputs.capacity_bytes
    device_used = peak * (1 + memory.ALLOCATOR_SLACK) + context
    allowed = (capacity - context) / (1 + memory.ALLOCATOR_SLACK)  # the planner's margin
    limit = 4096
    for ph in phases.values():
        if ph["slope_bytes_per_sample"] > 0:
            limit = min(limit, int((allowed - ph["intercept_bytes"]) // ph["slope_bytes_per_sample"]))
        elif ph["intercept_bytes"] > allowed:
            limit = 0
    return {"phase": phase, "peak_allocated_bytes": int(peak), "device_used_bytes": int(device_used),
            "fits": device_used <= capacity, "max_per_device_train_batch_size": max(0, limit),
            "phases": phases, "estimated_peak_allocated_bytes": int(plan.estimate.peak_allocated),
            "error_vs_estimate": (plan.estimate.peak_allocated - peak) / peak if peak else None}


def run(plan: Any, timeout: float = DEFAULT_TIMEOUT, steps: int = DEFAULT_STEPS) -> dict[str, Any]:
    """Probe ``plan``'s run; the ``probe`` object of `ftui --plan --probe --json` (never raises on a failed
    measurement: ``status`` says what happened, ``message`` says it in words)."""
    spec, inp = plan.spec, plan.inputs
    started = time.monotonic()
    pids: list[int] = []
    out: dict[str, Any] = {"status": "ok", "timeout_s": timeout, "pids": pids, "runs": []}
    if spec.runner != "hf_trainer" or spec.task not in TASKS:
        return {**out, "status": "unsupported", "message": f"the probe runs the hf_trainer runner's {', '.join(TASKS)} "
                f"tasks; this run is {spec.runner} / {spec.task}"}
    if spec.model.load_in_4bit:
        return {**out, "status": "unsupported", "message": "the probe does not run 4-bit (bitsandbytes) models"}
    for batch in batches(inp.batch):
        left = timeout - (time.monotonic() - started)
        try:
            result = run_worker(worker_config(plan, batch, steps), left, pids)
        except ProbeTimeout:
            return {**out, "status": "timeout", "elapsed_s": time.monotonic() - started,
                    "message": f"probe timed out after {timeout:g}s (no process left: the worker's process group "
                               "was stopped)"}
        except ProbeCancelled:
            return {**out, "status": "cancelled", "elapsed_s": time.monotonic() - started,
                    "message": "probe cancelled: its worker was stopped"}
        out["runs"].append(result)
        if result.get("status") != "ok":
            what = "ran out of GPU memory" if result.get("status") == "oom" else "failed"
            return {**out, "status": result.get("status", "error"), "elapsed_s": time.monotonic() - started,
                    "message": f"the probe {what} at batch {batch}: {result.get('error', '')}".strip()}
    out["elapsed_s"] = time.monotonic() - started
    small, large = out["runs"]
    at_run = large if large["batch"] == inp.batch else small
    out["device"] = large.get("device")
    out["gpu_name"] = large.get("gpu_name")
    out["step_s"] = at_run["step_s"]
    out["batch"] = inp.batch
    if large.get("device") == "cuda":
        out["memory"] = correct(plan, small, large)
        out["message"] = (f"measured on {large.get('gpu_name')}: peak {out['memory']['peak_allocated_bytes'] / GIB:.2f} "
                          f"GiB at the {out['memory']['phase']} phase, step {out['step_s']:.3f} s")
        if inp.strategy not in ("single", "cpu") or inp.world_size > 1:
            out["message"] += (f"; one unsharded process on one GPU: the {inp.strategy} memory figures stay the "
                               "estimate")
            out["memory"]["applies"] = False
        else:
            out["memory"]["applies"] = True
    else:
        out["memory"] = None
        out["rss_peak_bytes"] = large.get("rss_peak_bytes")
        out["message"] = (NO_GPU if inp.strategy != "cpu" else
                          "CPU training: the probe measured step time on the CPU; memory figures are the estimate "
                          f"(worker peak RSS {large.get('rss_peak_bytes', 0) / GIB:.2f} GiB)")
    return out
