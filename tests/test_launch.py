"""Real runs through the real launchers, on CPU: python, torchrun, accelerate, deepspeed."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from runners import rundir
from runners import spec as specmod
from runners.errors import UserError
from tests.conftest import ROOT, ftui, only_run, records, tiny_spec


def _types(recs: list[dict]) -> set[str]:
    return {r["type"] for r in recs}


def test_single_process_run_dir_is_complete(tmp_path: Path, write_spec) -> None:
    spec = write_spec(training={"num_train_epochs": 2}, tracking={"report_to": ["tensorboard"]},
                      runner_args={"note": "hf_" + "x" * 34})
    proc = ftui("run", str(spec), "--headless", "--runs-dir", str(tmp_path / "runs"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = only_run(tmp_path / "runs")
    for name in ("spec.yaml", "launch.sh", "stdout.log", "status.json", "events.jsonl", "output"):
        assert (run / name).exists(), name
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "finished" and status["exit_code"] == 0 and status["ended_at"] >= status["started_at"]
    assert "hf_" + "x" * 34 not in (run / "spec.yaml").read_text()  # secrets never land on disk
    recs = records(run)
    assert {"start", "log", "eval", "checkpoint", "memory", "finish"} <= _types(recs)
    start = next(r for r in recs if r["type"] == "start")
    assert start["world_size"] == 1 and start["total_steps"] == 32
    logs = [r for r in recs if r["type"] == "log"]
    assert [r["step"] for r in logs] == sorted(r["step"] for r in logs) and logs[-1]["step"] == 32
    assert all(k in logs[-1] for k in ("loss", "learning_rate", "grad_norm", "samples_per_second"))
    evals = [r for r in recs if r["type"] == "eval"]
    assert len(evals) >= 8 and "eval_accuracy" in evals[0]["metrics"]
    best = [r for r in recs if r["type"] == "checkpoint" and r["is_best"]]
    assert best and Path(best[-1]["path"]).is_dir()
    assert list((run / "output").rglob("events.out.tfevents.*")), "tensorboard logs"
    # launch.sh is the exact command, runnable without ftui
    script = (run / "launch.sh").read_text()
    assert "runners.train" in script and str(run) in script


def test_demo_learns(tmp_path: Path) -> None:
    """The bundled demo: loss goes down and accuracy rises well above chance."""
    proc = ftui("demo", "--headless", "--runs-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    recs = records(only_run(tmp_path))
    losses = [r["loss"] for r in recs if r["type"] == "log"]
    assert sum(losses[-20:]) / 20 < 0.6 * sum(losses[:20]) / 20
    evals = [r["metrics"]["eval_accuracy"] for r in recs if r["type"] == "eval"]
    assert max(evals) > 0.85 and evals[0] < max(evals)


def _two_process(tmp_path: Path, write_spec, **hardware) -> tuple[Path, list[dict]]:
    """A two-process CPU run through a real launcher, its listening sockets sampled while it runs."""
    spec = write_spec(hardware={"num_processes": 2, **hardware})
    run, seen = _listeners_while_running(tmp_path, spec)
    recs = records(run)
    start = next(r for r in recs if r["type"] == "start")
    assert start["world_size"] == 2 and start["total_steps"] == 8  # 128 rows / (2 x 8)
    assert {r["rank"] for r in recs if r["type"] == "memory"} == {0, 1}
    first = next(r["loss"] for r in recs if r["type"] == "log")
    assert 0.55 < first < 0.85  # about ln 2: token averaging across devices would double it
    log = (run / "stdout.log").read_text()
    assert "[rank0]" in log and "[rank1]" in log
    # every rendezvous, store and transport socket of a one-machine run is bound to loopback
    print("listening:", sorted(seen))
    assert seen, "no listening socket seen: the sampler missed the run"
    outside = {s for s in seen if s[0] not in ("127.0.0.1", "::1")}
    assert not outside, f"listening beyond loopback: {sorted(outside)}"
    # gloo/NCCL would bind the host name's address, which is loopback on the test machine but often public
    script = (run / "launch.sh").read_text()
    assert "export GLOO_SOCKET_IFNAME=lo\n" in script and "export NCCL_SOCKET_IFNAME=lo\n" in script
    return run, recs


def test_ddp_two_processes_torchrun(tmp_path: Path, write_spec) -> None:
    run, _ = _two_process(tmp_path, write_spec, strategy="cpu")
    assert "torchrun" in (run / "launch.sh").read_text()


def test_accelerate_two_processes(tmp_path: Path, write_spec) -> None:
    run, _ = _two_process(tmp_path, write_spec, strategy="cpu", launcher="accelerate")
    assert yaml.safe_load((run / "accelerate.yaml").read_text())["num_processes"] == 2


def test_deepspeed_zero2_two_processes(tmp_path: Path, write_spec) -> None:
    run, recs = _two_process(tmp_path, write_spec, strategy="zero2")
    assert json.loads((run / "ds_config.json").read_text())["zero_optimization"]["stage"] == 2
    assert "deepspeed" in (run / "launch.sh").read_text()
    checkpoints = sorted((run / "output").glob("checkpoint-*"))
    assert checkpoints and list(checkpoints[-1].glob("global_step*")), "a DeepSpeed checkpoint"


@pytest.mark.parametrize("overrides, needle", [
    ({"dataset": {"text_column": "review"}}, "no column 'review'"),
    ({"dataset": {"train": "/nonexistent/data.csv"}}, "does not exist"),
    ({"training": {"eval_strategy": "steps", "save_strategy": "steps", "eval_steps": 3, "save_steps": 5,
                   "load_best_model_at_end": True}}, "not a multiple"),
])
def test_bad_input_creates_no_run(tmp_path: Path, write_spec, overrides: dict, needle: str) -> None:
    spec = write_spec(**overrides)
    proc = ftui("run", str(spec), "--headless", "--runs-dir", str(tmp_path / "runs"))
    assert proc.returncode == 2 and needle in proc.stderr, proc.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def _listeners_while_running(tmp_path: Path, spec: Path) -> tuple[Path, set[tuple[str, int, str]]]:
    """Run a spec to the end, sampling the LISTEN sockets of every process under its supervisor."""
    runs = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-m", "tui", "run", str(spec), "--headless", "--runs-dir", str(runs)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen: set[tuple[str, int, str]] = set()
    deadline = time.time() + 600
    while proc.poll() is None and time.time() < deadline:
        run_dirs = [p for p in runs.iterdir() if p.is_dir()] if runs.exists() else []
        status = (rundir.read_status(run_dirs[0]) or {}) if run_dirs else {}
        if status.get("pid"):
            try:
                tree = [psutil.Process(status["pid"])]
                tree += tree[0].children(recursive=True)
            except psutil.NoSuchProcess:
                tree = []
            for p in tree:
                try:
                    for c in p.net_connections(kind="inet"):
                        if c.status == psutil.CONN_LISTEN:
                            seen.add((c.laddr.ip, c.laddr.port, " ".join(p.cmdline()[:4])[-80:]))
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
        time.sleep(0.1)  # a sampling interval, not a wait: sockets are sampled for as long as the run lasts
    _, err = proc.communicate(timeout=60)
    assert runs.exists(), err[-3000:]
    run = only_run(runs)
    assert proc.returncode == 0, err[-2000:] + (run / "stdout.log").read_text()[-3000:]
    return run, seen


@pytest.mark.parametrize("hardware, expect", [
    ({"strategy": "fsdp", "num_processes": 2}, {"distributed_type": "FSDP", "num_processes": 2}),
    ({"strategy": "fsdp_shard_grad_op", "num_processes": 4}, {"distributed_type": "FSDP", "num_processes": 4}),
    ({"strategy": "cpu", "num_processes": 2, "launcher": "accelerate"}, {"distributed_type": "MULTI_GPU", "num_processes": 2}),
    ({"strategy": "cpu", "num_processes": 1, "launcher": "accelerate"}, {"distributed_type": "NO", "num_processes": 1}),
])
def test_accelerate_yaml_fields(tmp_path: Path, hardware: dict, expect: dict) -> None:
    """The written accelerate.yaml is plain YAML with the right fields, and accelerate's own loader takes it."""
    from accelerate.commands.config.config_args import load_config_from_file

    from runners import spec as specmod
    from runners.launch import launcher

    run = launcher.create_run(specmod.from_dict(tiny_spec(hardware=hardware)), tmp_path / "runs")
    path = run / "accelerate.yaml"
    data = yaml.safe_load(path.read_text())
    assert data == {**data, **expect, "compute_environment": "LOCAL_MACHINE", "num_machines": 1, "machine_rank": 0,
                    "mixed_precision": "no", "same_network": True}
    assert path.read_text() == yaml.safe_dump(data, sort_keys=False)  # dumped by the YAML library, not by hand
    if expect["distributed_type"] == "FSDP":
        sharding = "FULL_SHARD" if hardware["strategy"] == "fsdp" else "SHARD_GRAD_OP"
        assert data["fsdp_config"] == {"fsdp_sharding_strategy": sharding, "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
                                       "fsdp_state_dict_type": "SHARDED_STATE_DICT", "fsdp_use_orig_params": True}
    config = load_config_from_file(str(path))
    assert str(config.distributed_type).split(".")[-1] == expect["distributed_type"]
    assert config.num_processes == expect["num_processes"] and config.mixed_precision == "no"
    assert config.fsdp_config == data.get("fsdp_config", {})


def test_hardware_gpus_pin_the_run_and_a_launching_shells_gpus_are_only_a_default(tmp_path: Path,
                                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """hardware.gpus (the setup's GPU indices) becomes every rank's CUDA_VISIBLE_DEVICES; without it, the GPUs the
    launching shell saw are a default a scheduler's own assignment (Slurm's per-task CUDA_VISIBLE_DEVICES) keeps."""
    from runners.launch.commands import gpu_env, launch_script
    from runners.launch.preflight import check_hardware

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    probe = ["sh", "-c", "echo $CUDA_VISIBLE_DEVICES"]
    inherited = tmp_path / "inherited.sh"
    inherited.write_text(launch_script(probe, tmp_path))
    pinned = tmp_path / "pinned.sh"
    pinned.write_text(launch_script(probe, tmp_path, gpu_env(specmod.from_dict(
        tiny_spec(hardware={"strategy": "ddp", "num_processes": 2, "gpus": [2, 3]})))))

    def seen(script: Path, env_value: str | None) -> str:
        env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
        if env_value is not None:
            env["CUDA_VISIBLE_DEVICES"] = env_value
        return subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, check=True).stdout.strip()

    assert seen(inherited, None) == "0,1" and seen(inherited, "5") == "5"
    assert seen(pinned, None) == "2,3" and seen(pinned, "5") == "2,3"
    assert gpu_env(specmod.from_dict(tiny_spec(hardware={"strategy": "cpu", "gpus": [1]}))) == {}
    for gpus, said in (([0], "names 1 GPU"), ([1, 1], "distinct")):
        with pytest.raises(UserError, match=said):
            check_hardware(specmod.from_dict(tiny_spec(hardware={"strategy": "ddp", "num_processes": 2, "gpus": gpus})))
