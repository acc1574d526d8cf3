"""Model resolution: where a model's config, weights and tokenizer come from, without downloading weights.

A name resolves, in order, to: a local directory with ``config.json``; the local Hugging Face cache;
a bundled config in ``assets/models/`` (so planning works offline; names match with or without the
org prefix, case-insensitively); the hub (config only, only when reachable). The numbers read from the
config are runners/plan/architecture.py's. ``load_tokenizer`` and the weight checks are shared by the
preflight and every runner.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runners import paths
from runners.errors import UserError, closest
from runners.plan.architecture import Arch, arch_from_config

if TYPE_CHECKING:
    from runners.spec import RunSpec

BUNDLED = paths.ASSETS / "models"


@dataclass
class ResolvedModel:
    name: str
    source: str  # local, cache, bundled, hub
    path: str | None
    config: dict[str, Any]
    arch: Arch


def _norm(name: str) -> str:
    return name.strip().lower().split("/")[-1]


@lru_cache(maxsize=1)
def bundled_index() -> dict[str, Path]:
    """Every name a bundled config answers to (hub id, short name, aliases), lower-cased."""
    index: dict[str, Path] = {}
    for path in sorted(BUNDLED.glob("*.json")):
        meta = json.loads(path.read_text()).get("_ftui", {})
        for alias in [meta.get("hub_id", path.stem), path.stem, *meta.get("aliases", [])]:
            index[alias.lower()] = path
            index[_norm(alias)] = path
    return index


def bundled_names() -> list[str]:
    return sorted({json.loads(p.read_text())["_ftui"]["hub_id"] for p in set(bundled_index().values())})


def _hf_cache_config(name: str) -> Path | None:
    if "/" not in name:
        return None
    home = Path(os.environ.get("HF_HUB_CACHE") or Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "hub")
    repo = home / ("models--" + name.replace("/", "--"))
    hits = sorted(repo.glob("snapshots/*/config.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    return hits[0] if hits else None


def _hub_config(name: str) -> dict[str, Any] | None:
    """The config from the hub, when it is reachable and allowed; None otherwise (fails fast offline)."""
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("TRANSFORMERS_OFFLINE") == "1" or "/" not in name:
        return None
    import urllib.request

    url = f"{os.environ.get('HF_ENDPOINT', 'https://huggingface.co')}/{name}/resolve/main/config.json"
    headers = {"Authorization": f"Bearer {os.environ['HF_TOKEN']}"} if os.environ.get("HF_TOKEN") else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=3) as resp:
            return json.loads(resp.read())
    except Exception:  # noqa: BLE001 - any failure means "not reachable": fall through to the error
        return None


def resolve(name: str) -> ResolvedModel:
    """Find a config for ``name`` or raise a UserError that lists what would work."""
    if not name:
        raise UserError("No model given. Pass --model_name_or_path (a hub id, a local directory with config.json, "
                        f"or a bundled name such as {', '.join(bundled_names()[:4])}).")
    path = Path(name).expanduser()
    if path.is_dir():
        config_file = path / "config.json"
        if not config_file.is_file():
            raise UserError(f"Model directory '{name}' has no config.json. Point --model_name_or_path at a "
                            "directory saved with save_pretrained(), or use a hub id.")
        return _resolved(name, "local", str(path.resolve()), _read_config(config_file))
    cached = _hf_cache_config(name)
    if cached is not None:
        return _resolved(name, "cache", str(cached.parent), _read_config(cached))
    index = bundled_index()
    hit = index.get(name.lower()) or index.get(_norm(name))
    if hit is not None:
        return _resolved(name, "bundled", str(hit), _read_config(hit))
    remote = _hub_config(name)
    if remote is not None:
        return _resolved(name, "hub", None, remote)
    near = closest(_norm(name), [k for k in index if "/" not in k])
    hint = f" Did you mean '{near}'?" if near else ""
    raise UserError(f"Unknown model '{name}': it is not a local directory, not in the Hugging Face cache, not "
                    f"bundled, and the hub is not reachable.{hint} Bundled configs: {', '.join(bundled_names())}. "
                    "Or pass a local directory that has a config.json.")


def _read_config(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"Model config '{path}' cannot be read as JSON ({exc}). Replace it with a valid config.json.") from exc
    return data


def _resolved(name: str, source: str, path: str | None, config: dict[str, Any]) -> ResolvedModel:
    config = {k: v for k, v in config.items() if k != "_ftui"}
    return ResolvedModel(name=name, source=source, path=path, config=config, arch=arch_from_config(config))


WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json")


def has_weights(name_or_path: str) -> bool:
    """A hub id (the hub or cache has the weights: preflight checked), or a local dir with weight files."""
    path = Path(name_or_path)
    return not path.is_dir() or any((path / f).exists() for f in WEIGHT_FILES) or any(path.glob("*.safetensors"))


def pretrained(spec: RunSpec) -> bool:
    """model.init: pretrained loads weights (preflight made sure they exist); random builds from the config."""
    return getattr(spec.model, "init", "pretrained") != "random"


def load_tokenizer(spec: RunSpec) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(spec.model.tokenizer or spec.model.name_or_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return tokenizer
