"""Real runs of the bundled demos, trained once per test session and shared by the files that use their checkpoints.

Each demo spec (assets/specs/demo*.yaml) is run as it is, through ``ftui run --headless``, on fewer rows and
epochs so it takes seconds: the same runner, model, task and cadence rules, with real checkpoints, a best model
and evaluation events. The runs live under the session's shared temp root (all xdist workers see it) behind a
file lock, so whichever test file asks first trains them and the others wait for it and reuse them. Tests must
not change these run dirs: copy one first (``copy_run``) to change it.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT, ftui

SPECS = ROOT / "assets" / "specs"
# demo spec -> overrides that shorten it (rows, epochs) without changing what it exercises
DEMOS: dict[str, dict[str, Any]] = {
    "demo": {"dataset": {"max_train_samples": 256, "max_eval_samples": 48},
             "training": {"num_train_epochs": 2}, "cadence": {"n_evals": 2, "n_saves": 2}},
    "demo_sft": {"dataset": {"max_train_samples": 96, "max_eval_samples": 24},
                 "training": {"num_train_epochs": 2}, "cadence": {"n_evals": 2, "n_saves": 2}},
    "demo_simpletransformers": {"dataset": {"max_train_samples": 256, "max_eval_samples": 48},
                                "training": {"num_train_epochs": 1}, "cadence": {"n_evals": 2}},
    "demo_sentence_transformers": {"dataset": {"max_train_samples": 256, "max_eval_samples": 48},
                                   "training": {"num_train_epochs": 1}, "cadence": {"n_evals": 2, "n_saves": 2}},
}
PATH_KEYS = (("model", "name_or_path"), ("dataset", "train"), ("dataset", "eval"))


def short_spec(demo: str) -> dict[str, Any]:
    """The demo's spec with the overrides applied and its relative paths made absolute."""
    spec = yaml.safe_load((SPECS / f"{demo}.yaml").read_text())
    for section, key in PATH_KEYS:
        value = spec.get(section, {}).get(key)
        if isinstance(value, str) and value.startswith("."):
            spec[section][key] = str((SPECS / value).resolve())
    for section, values in DEMOS[demo].items():
        spec.setdefault(section, {}).update(values)
    return spec


def _train(demo: str, root: Path) -> Path:
    runs = root / demo / "runs"
    spec_path = root / demo / "spec.yaml"
    spec_path.parent.mkdir(parents=True, exist_ok=True)
    spec_path.write_text(yaml.safe_dump(short_spec(demo)))
    proc = ftui("run", str(spec_path), "--runs-dir", str(runs), "--headless", timeout=900)
    run_dirs = [p for p in runs.iterdir() if p.is_dir()] if runs.is_dir() else []
    assert proc.returncode == 0 and len(run_dirs) == 1, (proc.stdout[-2000:], proc.stderr[-2000:])
    (root / demo / "done").write_text(run_dirs[0].name)
    return run_dirs[0]


def demo_run(factory: pytest.TempPathFactory, demo: str) -> Path:
    """The run dir of ``demo``, trained on first use in this session."""
    from filelock import FileLock

    base = factory.getbasetemp()  # under xdist: <session>/popen-gwN, whose parent all workers share
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "trained-demos"
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / f"{demo}.lock")):
        done = root / demo / "done"
        if done.is_file():
            return root / demo / "runs" / done.read_text().strip()
        return _train(demo, root)


def copy_run(run_dir: Path, runs_dir: Path) -> Path:
    """A copy of a shared run in a runs dir of the test's own (the copy may be changed)."""
    runs_dir.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copytree(run_dir, runs_dir / run_dir.name, symlinks=True))
