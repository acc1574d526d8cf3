"""Shared fixtures: tiny specs on the bundled demo model and data, and a CLI runner."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEMO_MODEL = ROOT / "assets" / "demo" / "model"
DEMO_DATA = ROOT / "assets" / "demo" / "reviews.csv"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("DS_BUILD_OPS", "0")
# One intra-op thread in this process and every job it starts: the models are tiny, so threads buy nothing, and on a
# 2-core machine running a two-process job beside the test process they only contend (a tiny causal-LM run: 14.5 s
# with the default threads, 3.4 s with one, on the shared CI-sized machine).
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Hermetic: structures traced by earlier runs on this machine must not make a test pass (or fast) here.
import tempfile  # noqa: E402

os.environ["FTUI_CACHE_DIR"] = tempfile.mkdtemp(prefix="ftui-test-cache-")


def tiny_model_dir(parent: Path, name: str, config: dict[str, Any],
                   files: tuple[str, ...] = ("vocab.txt", "tokenizer_config.json")) -> Path:
    """A local model dir: a tiny config (no weights) and the demo's word-level BERT tokenizer files."""
    path = parent / name
    path.mkdir()
    (path / "config.json").write_text(json.dumps(config))
    for file in files:
        (path / file).write_text((DEMO_MODEL / file).read_text())
    return path


def tiny_spec(**overrides: Any) -> dict[str, Any]:
    """A spec that trains the demo model on 128 rows in a few seconds."""
    spec: dict[str, Any] = {
        "name": "tiny", "runner": "hf_trainer", "task": "seq-cls",
        "model": {"name_or_path": str(DEMO_MODEL), "torch_dtype": "float32", "init": "random"},
        "dataset": {"train": str(DEMO_DATA), "max_train_samples": 128, "max_eval_samples": 64, "max_seq_length": 32},
        "hardware": {"strategy": "cpu", "num_processes": 1},
        "training": {"learning_rate": 0.001, "num_train_epochs": 1, "per_device_train_batch_size": 8,
                     "per_device_eval_batch_size": 32, "seed": 1},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(spec.get(key), dict):
            spec[key] = {**spec[key], **value}
        else:
            spec[key] = value
    return spec


@pytest.fixture
def write_spec(tmp_path: Path):
    def write(name: str = "spec.yaml", **overrides: Any) -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(tiny_spec(**overrides)))
        return path
    return write


def ftui(*args: str, timeout: float = 600, **kwargs: Any) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tui", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout, **kwargs)


def spec_keys(run_dir: Path) -> dict[str, Any]:
    """A run's spec.yaml as this version reads it (defaults filled in, secrets redacted), as dotted keys."""
    from runners import spec as specmod

    def flat(data: Any, prefix: str = "") -> dict[str, Any]:
        if isinstance(data, dict) and data:
            out: dict[str, Any] = {}
            for key, value in data.items():
                out.update(flat(value, f"{prefix}{key}."))
            return out
        return {prefix[:-1]: data} if prefix and not isinstance(data, dict) else {}

    return flat(specmod.redact(specmod.load(run_dir / "spec.yaml").to_dict()))


def records(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def wait_until(predicate, timeout: float = 180.0, what: str = "condition", every: float = 0.2):  # noqa: ANN001, ANN201
    """The predicate's first truthy value, polled until ``timeout``; a clear failure naming ``what`` after it.

    Use it instead of a sleep whenever a test waits for something to happen."""
    import time

    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def free_port() -> int:
    """A TCP port free on loopback right now (the kernel's pick for port 0): never a fixed number, which
    another job on the machine may hold."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def group_gone(pgid: int) -> bool:
    """No process, zombies included, is left in the process group (strict: an unreaped child counts)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def only_run(runs_dir: Path) -> Path:
    runs = [p for p in runs_dir.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]
