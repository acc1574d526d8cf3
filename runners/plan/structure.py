"""A model's memory structure, learned once from the model itself and cached per config (never imports torch).

:mod:`runners.plan.trace` runs a meta-device training step of the real transformers model and fits, per
(task, precision, attention, checkpointing, sequence window), how many bytes exist at each moment of a step
per token and per layer (docs/memory.md). This module finds those fits without torch: in the bundled
``assets/structure/`` (precomputed for the bundled configs and the calibration configs), else in the user
cache (``$FTUI_CACHE_DIR`` or ``~/.cache/ftui``)/structure/<config-hash>.json; when a key is missing it runs
the trace in a subprocess (seconds, once) unless ``FTUI_NO_TRACE=1``, and the estimate says which route it took.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from runners import paths

ROOT = paths.ROOT
BUNDLED = ROOT / "assets" / "structure"
VERSION = 1
TRACE_TIMEOUT_S = 900
_memo: dict[str, dict[str, Any]] = {}


def cache_dir() -> Path:
    return Path(os.environ.get("FTUI_CACHE_DIR") or Path.home() / ".cache" / "ftui") / "structure"


def config_hash(cfg: dict[str, Any]) -> str:
    """The same architecture gives the same hash, whatever the file's name or bookkeeping keys."""
    skip = {"_ftui", "_name_or_path", "transformers_version", "architectures", "torch_dtype", "dtype"}
    clean = {k: v for k, v in cfg.items() if k not in skip}
    return hashlib.sha1(json.dumps(clean, sort_keys=True, default=str).encode()).hexdigest()[:16]


def anchor(seq: int, cfg: dict[str, Any]) -> int:
    """The fit window for ``seq``: the power of two at or above it (at least 128), capped by the position
    table. The trace steps at anchor/2 and anchor, so a plan interpolates rather than extrapolates."""
    cap = int(cfg.get("max_position_embeddings") or cfg.get("n_positions") or 1 << 20)
    a = 128
    while a < seq:
        a *= 2
    return max(2, min(a, cap))


def key(task: str, mode: str, attn: str, gc: bool, seq_anchor: int) -> str:
    return f"{task}/{mode}/{attn}/{'gc' if gc else 'nogc'}/{seq_anchor}"


def load(cfg: dict[str, Any]) -> dict[str, Any]:
    """Facts and fits known for this config (bundled and cached merged), possibly empty."""
    h = config_hash(cfg)
    if h in _memo:
        return _memo[h]
    out: dict[str, Any] = {"facts": {}, "fits": {}, "failed": {}}
    for path in (BUNDLED / f"{h}.json", cache_dir() / f"{h}.json"):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if data.get("version") == VERSION:
            out["facts"].update(data.get("facts", {}))
            out["fits"].update(data.get("fits", {}))
            out["failed"].update(data.get("failed", {}))
    _memo[h] = out
    return out


def learn(cfg: dict[str, Any], keys: list[str], out_path: Path | None = None) -> float:
    """Trace the missing keys in a subprocess (imports torch there, not here); seconds spent."""
    known = load(cfg)
    missing = [k for k in dict.fromkeys(keys) if k not in known["failed"] and
               (k not in known["fits"] or k.split("/")[0] not in known["facts"])]
    if not missing:
        return 0.0
    target = out_path or cache_dir() / f"{config_hash(cfg)}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump(cfg, fh)
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    try:
        proc = subprocess.run([sys.executable, "-m", "runners.plan.trace", fh.name, str(target), *missing],
                              capture_output=True, text=True, timeout=TRACE_TIMEOUT_S, env=env, cwd=ROOT)
    finally:
        os.unlink(fh.name)
    _memo.pop(config_hash(cfg), None)
    if proc.returncode != 0:
        output = proc.stderr or proc.stdout
        raise RuntimeError(output.strip().splitlines()[-1] if output else "trace failed")
    return time.perf_counter() - start


def tracing_allowed() -> bool:
    return os.environ.get("FTUI_NO_TRACE") != "1"


def q(fit: dict[str, list[float]], name: str, layers: int, batch: int, seq: int, kcap: float | None = None) -> float:
    """A fitted quantity at the full depth, batch and sequence: K0 + L*K1 + B*(s*(c + L*a) + s^2*(d + L*b)).

    The batch-independent part K0 + L*K1 is, physically, what exists whatever the batch (autocast's weight
    casts): never negative, and never more than ``kcap`` (the caller's bound: 2 B per parameter under
    autocast, a largest parameter otherwise). A fit whose peaks switched moments between its steps can
    put token bytes there; the bound keeps them out."""
    k0, k1, c, a, d, b = fit[name]
    const = max(0.0, k0 + layers * k1)
    if kcap is not None:
        const = min(const, kcap)
    return max(0.0, const + batch * (seq * (c + layers * a) + seq * seq * (d + layers * b)))
