"""The one strategy table: the spec, the launcher, the planner and the runner all agree with it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from runners import spec, strategies
from runners.launch import commands
from tests.conftest import ROOT, tiny_spec


def test_every_module_takes_its_names_from_the_table() -> None:
    assert spec.STRATEGIES == strategies.NAMES
    duplicated = []
    for path in (ROOT / "runners").rglob("*.py"):
        if path.name == "strategies.py":
            continue
        text = path.read_text()
        if '"zero1", "zero2", "zero3"' in text or '"fsdp", "fsdp_shard_grad_op"' in text:
            duplicated.append(path.name)
    assert not duplicated, f"strategy lists repeated outside runners/strategies.py: {duplicated}"


@pytest.mark.parametrize("strategy", strategies.NAMES)
def test_each_strategy_launches_and_plans_as_the_table_says(tmp_path: Path, strategy: str) -> None:
    row = strategies.BY_NAME[strategy]
    n = max(2, row.min_gpus) if strategy != "single" else 1
    s = spec.from_dict(tiny_spec(hardware={"strategy": strategy, "num_processes": n}))
    launcher = commands.choose_launcher(s)
    assert launcher == (row.launcher if row.launcher not in ("python", "torchrun") else
                        "torchrun" if n > 1 else "python")
    if row.zero_stage:
        config = commands.deepspeed_config(strategy, None)["zero_optimization"]
        assert config["stage"] == row.zero_stage and ("offload_optimizer" in config) == row.offload
    out = subprocess.run([sys.executable, "-m", "tui", "--plan", "--model_name_or_path", "bert-base-uncased",
                          "--task", "seq-cls", "--strategy", strategy, "--num_gpus", str(max(n, 1)), "--json"],
                         capture_output=True, text=True, cwd=ROOT, timeout=120, env={**os.environ, "FTUI_NO_TRACE": "1"})
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    assert plan["strategy"] == strategy
    if row.offload:
        assert plan["host_ram_bytes"] > 0
