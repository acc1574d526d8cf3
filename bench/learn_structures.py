"""Learn the memory structure of every bundled model config once, into assets/structure/ (ships with ftui).

`ftui --plan` learns a (config, setting) it has never seen in a subprocess (about 10 s, then cached); the
bundled configs are learned here ahead of time for the settings people use most, so plans of them stay
under a second from a fresh install. Nothing is tuned: each entry is the tracer's count of the real
model on the meta device (runners/plan/trace.py).

    .venv/bin/python bench/learn_structures.py [NAME ...]
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from runners.plan import models, structure  # noqa: E402

ENCODER_TYPES = ("bert", "roberta", "distilbert", "deberta", "deberta-v2", "electra", "xlm-roberta", "mpnet")


def settings(cfg: dict) -> tuple[str, list[tuple[str, int]]]:
    """The natural task of a config and the (attention, window) pairs worth learning for it."""
    kind = cfg.get("model_type", "")
    if kind in ENCODER_TYPES:
        # eager attention and T5's position bias hold S x S tensors, so their fits do not carry across
        # windows (runners/activations.traced): each common window is learned
        return "seq-cls", [("sdpa", structure.anchor(512, cfg)), ("sdpa", structure.anchor(128, cfg))] + [
            ("eager", structure.anchor(s, cfg)) for s in (128, 256, 512)]
    if kind == "t5":
        return "seq2seq", [("sdpa", structure.anchor(s, cfg)) for s in (128, 256, 512, 1024)]
    return "causal-lm", [("sdpa", structure.anchor(2048, cfg)), ("sdpa", structure.anchor(4096, cfg))]


def main(names: list[str]) -> int:
    for name in names or models.bundled_names():
        cfg = models.resolve(name).config
        task, pairs = settings(cfg)
        keys = [structure.key(task, mode, attn, gc, window) for attn, window in pairs
                for mode in ("fp32", "mixed", "half") for gc in (False, True)]
        target = structure.BUNDLED / f"{structure.config_hash(cfg)}.json"
        start = time.perf_counter()
        try:
            structure.learn(cfg, keys, out_path=target)
        except RuntimeError as exc:
            print(f"{name:32s} not learned: {exc}")
            continue
        print(f"{name:32s} {task:10s} {len(keys)} settings in {time.perf_counter() - start:5.1f} s -> {target.name}",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
