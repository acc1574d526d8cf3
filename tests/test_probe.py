"""The probe end to end: real worker processes, real HF Trainer steps on the tiny demo model, real timeouts.

On a machine without a GPU the workers train on the CPU (memory figures stay the estimate, said plainly);
with a GPU the same tests check the measured per-phase peaks. Every test checks that no process the
probe started is left: each worker led its own process group, and that group must be gone.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from runners.plan import probe
from runners.plan.planner import apply_probe, make_plan
from runners.spec import from_dict
from tests.conftest import ROOT, group_gone, tiny_spec, wait_until


def has_gpu() -> bool:
    return bool(shutil.which("nvidia-smi")) and subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode == 0


def tiny(strategy: str = "single", **training: object) -> dict:
    return tiny_spec(hardware={"strategy": strategy, "num_processes": 1},
                     training={"per_device_train_batch_size": 8, "per_device_eval_batch_size": 8, **training})


def test_probe_end_to_end_through_the_cli(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(tiny()))
    proc = subprocess.run([sys.executable, "-m", "tui", "--plan", str(spec), "--probe", "--probe_steps", "2",
                           "--probe_timeout", "400", "--gpu", "H100", "--json"],
                          capture_output=True, text=True, cwd=ROOT, timeout=500)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    pr = data["probe"]
    assert pr["status"] == "ok", pr
    assert [r["batch"] for r in pr["runs"]] == [4, 8] and len({r["pid"] for r in pr["runs"]}) == 2  # two fresh processes
    assert all(r["status"] == "ok" and r["step_s"] > 0 for r in pr["runs"]) and pr["step_s"] == pr["runs"][1]["step_s"]
    assert all(group_gone(pid) for pid in pr["pids"]), "a probe process outlived the probe"
    if has_gpu():
        mem = pr["memory"]
        assert pr["device"] == "cuda" and mem["applies"] is True
        assert set(mem["phases"]) == {"forward", "backward", "optimizer step", "eval"}
        assert mem["peak_allocated_bytes"] > 0 and mem["max_per_device_train_batch_size"] > 8
        assert data["time"]["source"] == "probe" and data["time"]["step_s"]["value"] == pytest.approx(pr["step_s"])
    else:
        assert pr["device"] == "cpu" and pr["memory"] is None
        assert pr["message"] == "no GPU: the probe measured step time on CPU only; memory figures are the estimate"
        assert data["time"]["source"] == "estimate"  # a CPU step time says nothing about the GPU run
        assert data["max_per_device_train_batch_size"] == data["estimated_max_per_device_train_batch_size"]
    rich = subprocess.run([sys.executable, "-c", "import json, sys; from rich.console import Console; "
                           "from tui.commands.plan_report import probe_text; "
                           "Console(width=200).print(probe_text(json.load(sys.stdin)))"],
                          input=json.dumps(pr), capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert "probe" in rich.stdout and "step time" in rich.stdout


def test_cpu_run_takes_the_measured_step_time() -> None:
    """Strategy cpu: the probe's CPU measurement is the run's own step time, so it becomes the time estimate."""
    plan = make_plan(from_dict(tiny("cpu")), num_train_samples=64)
    assert plan.time is None and "CPU training" in (plan.time_note or "")
    result = probe.run(plan, timeout=400, steps=2)
    assert result["status"] == "ok", result
    apply_probe(plan, result)
    data = plan.to_json()
    assert data["time"]["source"] == "probe" and data["time"]["step_s"]["value"] == pytest.approx(result["step_s"])
    assert data["time"]["wall_s"]["value"] == pytest.approx(result["step_s"] * data["cadence"]["total_steps"])
    assert "CPU" in result["message"] and result["rss_peak_bytes"] > 0
    assert all(group_gone(pid) for pid in result["pids"])


def test_timeout_is_clean_and_leaves_no_process() -> None:
    plan = make_plan(from_dict(tiny()), num_train_samples=64)
    started = time.monotonic()
    result = probe.run(plan, timeout=0.5, steps=2)  # the worker is still importing torch
    assert result["status"] == "timeout"
    assert result["message"].startswith("probe timed out after 0.5s")
    assert time.monotonic() - started < 0.5 + probe.KILL_GRACE_S + 5
    assert len(result["pids"]) == 1 and all(group_gone(pid) for pid in result["pids"])
    apply_probe(plan, result)
    assert plan.to_json()["probe"]["status"] == "timeout" and plan.to_json()["time"] is None  # the estimate stands


def test_stop_all_cancels_a_running_probe() -> None:
    """What the setup screen does when it goes away: every running worker group is stopped."""
    plan = make_plan(from_dict(tiny()), num_train_samples=64)
    box: dict = {}
    thread = threading.Thread(target=lambda: box.update(probe.run(plan, timeout=300, steps=2)))
    thread.start()
    wait_until(lambda: probe._ACTIVE, timeout=30, what="the probe's first worker", every=0.05)
    probe.stop_all()
    thread.join(timeout=30)
    assert not thread.is_alive() and box["status"] == "cancelled"
    assert all(group_gone(pid) for pid in box["pids"]) and not probe._ACTIVE


def test_unsupported_runs_say_so() -> None:
    spec = from_dict({**tiny(), "runner": "sentence_transformers", "task": "embedding"})
    result = probe.run(make_plan(spec, num_train_samples=64), timeout=10)
    assert result["status"] == "unsupported" and "hf_trainer" in result["message"] and not result["pids"]


def test_slope_intercept_and_largest_batch() -> None:
    """The correction arithmetic on two measurements: linear per phase, the planner's margin for the largest batch."""
    plan = make_plan(from_dict(tiny(per_device_train_batch_size=8)), num_train_samples=64, gpu_memory_gib=24)
    gib = 2**30
    small = {"batch": 4, "peaks": {"forward": 6 * gib, "backward": 7 * gib, "optimizer step": 5 * gib, "eval": 4 * gib}}
    large = {"batch": 8, "peaks": {"forward": 8 * gib, "backward": 10 * gib, "optimizer step": 5 * gib, "eval": 4 * gib}}
    mem = probe.correct(plan, small, large)
    assert mem["phase"] == "backward" and mem["peak_allocated_bytes"] == 10 * gib
    assert mem["phases"]["backward"]["slope_bytes_per_sample"] == pytest.approx(0.75 * gib)
    assert mem["phases"]["backward"]["intercept_bytes"] == pytest.approx(4 * gib)
    # the planner's margin: (24 GiB - 1000 MiB CUDA context) / 1.02 allocator slack = 23576 / 1.02 MiB = 22.572 GiB;
    # backward, the tightest phase: (22.572 - 4 intercept) / 0.75 per sample = 24.76 -> 24
    # (forward: (22.572 - 4) / 0.5 = 37; the optimizer step and eval do not grow with the batch)
    assert mem["max_per_device_train_batch_size"] == 24
    assert probe.batches(1) == (1, 2) and probe.batches(8) == (4, 8) and probe.batches(3) == (1, 3)


def test_a_lora_probe_trains_what_the_run_trains() -> None:
    """The probe builds the runner's own LoraConfig: for a classifier the head trains beside the adapters (task
    type SEQ_CLS), so the probe's trainable count is the plan's, and what it measures is the run's configuration."""
    from runners.plan import probe_worker

    plan = make_plan(from_dict(tiny("cpu", max_steps=2) | {"model": {**tiny_spec()["model"],
                                                                    "lora": {"r": 4, "alpha": 8, "dropout": 0.1}}}),
                     num_train_samples=64)
    cfg = probe.worker_config(plan, batch=2, steps=1)
    assert cfg["lora"]["task_type"] == "SEQ_CLS" and cfg["lora"]["lora_dropout"] == 0.1
    out = probe_worker.measure(json.loads(json.dumps(cfg)))  # what crosses the pipe: JSON
    assert out["trainable"] == plan.estimate.trainable_params
    assert out["trainable"] < out["params"] / 10
