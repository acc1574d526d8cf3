"""Fixtures of the dashboard tests (the test doubles live in tui_fakes.py)."""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from tui_fakes import RECORDED_RUN, ROOT

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture
def frozen_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Same frame on every machine: UTC, the repo as working directory, an empty HF cache."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.chdir(ROOT)
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture
def gpu_run(tmp_path: Path) -> Path:
    """The recorded run with a single-GPU spec, so the monitor has a plan estimate to compare with."""
    run = tmp_path / "runs" / RECORDED_RUN.name
    shutil.copytree(RECORDED_RUN, run)
    spec = (run / "spec.yaml").read_text().replace("strategy: cpu", "strategy: single").replace("/work/main", str(ROOT))
    (run / "spec.yaml").write_text(spec)
    return run
