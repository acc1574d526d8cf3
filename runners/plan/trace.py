"""Learn a model's memory structure from the model itself: a meta-device training step, tensor by tensor.

Imports torch and transformers (seconds), so the planner never imports this module: it runs once per
config (``python -m runners.plan.trace CONFIG.json OUT.json``) and :mod:`runners.plan.structure` caches the result.

How: the model is built on the ``meta`` device (no memory, no compute) truncated to one or two periods
of its layer pattern, and one forward + backward runs on meta token ids. Every tensor any op creates is
tracked by its storage until the storage dies (C++ weak references), so the tracker sees what really
exists: the tensors autograd saves for backward, the loss's float32 copies, backward's transients.
Two emulations make the meta step behave like CUDA's: CUDA autocast's cast lists (linear/matmul in the
half dtype, softmax/log_softmax/layer_norm/pow/exp... in float32, weight casts saved for backward), and
SDPA as CUDA's flash / memory-efficient kernels save it (q, k, v, output, a float32 log-sum-exp per
head and query, plus any additive mask such as T5's position bias). Bytes are fitted, per token, as
``a + b*seq`` per layer and ``c + d*seq`` outside the layers, from three sequence lengths and two depths.
"""
from __future__ import annotations

import json
import sys
from typing import Any

import torch
from torch.multiprocessing.reductions import StorageWeakRef

from runners.plan.cudalike import CudaLike, Tracker, _all_ones, _Backward, _recompute_like, _sdpa_without_softcap
from runners.plan.structure import VERSION, anchor

MODES = {  # name -> (weights dtype, autocast dtype or None)
    "fp32": (torch.float32, None), "mixed": (torch.float32, torch.bfloat16), "half": (torch.bfloat16, torch.bfloat16)}
AUTO = {"causal-lm": "AutoModelForCausalLM", "seq-cls": "AutoModelForSequenceClassification",
        "seq2seq": "AutoModelForSeq2SeqLM", "token-cls": "AutoModelForTokenClassification", "base": "AutoModel"}


def _depth_keys(cfg: Any) -> list[str]:
    keys = [k for k in ("num_hidden_layers", "num_layers", "n_layer", "n_layers") if hasattr(cfg, k)][:1]
    if getattr(cfg, "is_encoder_decoder", False) and hasattr(cfg, "num_decoder_layers"):
        keys.append("num_decoder_layers")
    return keys


def period(cfg: dict[str, Any]) -> int:
    """Layers in one repetition of the layer pattern (sliding/global mixes), 1 for uniform stacks."""
    types = cfg.get("layer_types") or []
    for p in range(1, min(len(types), 8) + 1):
        if all(types[i] == types[i % p] for i in range(len(types))):
            return p
    return 1 if not types else min(len(types), 6)


def build(cfg_dict: dict[str, Any], task: str, depth: int, dtype: torch.dtype, attn: str) -> Any:
    import transformers
    from transformers.utils import logging

    logging.set_verbosity_error()
    import transformers.masking_utils as masking

    masking.find_packed_sequence_indices = lambda position_ids: None  # reads values; ours are contiguous
    _sdpa_without_softcap()
    cfg = transformers.AutoConfig.for_model(**{k: v for k, v in cfg_dict.items() if not k.startswith("_")})
    for key in _depth_keys(cfg):
        setattr(cfg, key, depth)
    if getattr(cfg, "layer_types", None):
        cfg.layer_types = list(cfg.layer_types)[:depth]
    if task == "seq-cls":
        cfg.num_labels = 2
        if getattr(cfg, "pad_token_id", None) is None:
            cfg.pad_token_id = 0
    auto = getattr(transformers, AUTO[task])
    with torch.device("meta"):
        try:
            model = auto.from_config(cfg, dtype=dtype, attn_implementation=attn)
        except ValueError as exc:  # some releases refuse sdpa for a family others run with it (gemma-2)
            if attn != "sdpa" or "scaled_dot_product_attention" not in str(exc):
                raise
            family = sys.modules[auto._model_mapping[type(cfg)].__module__]
            for obj in vars(family).values():
                if isinstance(obj, type) and hasattr(obj, "_supports_sdpa"):
                    obj._supports_sdpa = True
            model = auto.from_config(cfg, dtype=dtype, attn_implementation=attn)
    model.train()
    return model, cfg


def _param_shapes(model: Any) -> set[tuple[int, ...]]:
    return {tuple(p.shape) for p in model.parameters()}


def step(cfg_dict: dict[str, Any], task: str, mode: str, depth: int, seq: int, attn: str = "sdpa",
         gc: bool = False, batch: int = 1) -> dict[str, int]:
    """Bytes of one meta training step at batch 1: saved at the end of forward, forward/backward/eval peaks."""
    wdtype, half = MODES[mode]
    model, cfg = build(cfg_dict, task, depth, wdtype, attn)
    if gc:
        model.gradient_checkpointing_enable()
        for mod in model.modules():  # the recompute in backward must see the same casts as the forward
            if getattr(mod, "_gradient_checkpointing_func", None) is not None:
                mod._gradient_checkpointing_func = _recompute_like(mod._gradient_checkpointing_func, half)
    params = {p.untyped_storage()._cdata for p in model.parameters()}
    vocab = int(getattr(cfg, "vocab_size", 2))
    ids = torch.randint(0, max(vocab, 2), (batch, seq), device="meta")
    inputs: dict[str, Any] = {"input_ids": ids, "attention_mask": torch.ones(batch, seq, dtype=torch.long, device="meta")}
    if task == "seq-cls":
        inputs["labels"] = torch.zeros(batch, dtype=torch.long, device="meta")
    elif task == "token-cls":
        inputs["labels"] = torch.zeros(batch, seq, dtype=torch.long, device="meta")
    else:
        inputs["labels"] = ids.clone()
    saved: dict[int, tuple[StorageWeakRef, int]] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        if st._cdata not in params:
            saved.setdefault(st._cdata, (StorageWeakRef(st), st.nbytes()))
        return t

    fwd = Tracker(set(params))
    with _all_ones(), CudaLike(half), fwd, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(**inputs).loss
    end = fwd.current()
    kept = sum(n for ref, n in saved.values() if not ref.expired())
    bwd = _Backward(set(params), _param_shapes(model))
    bwd.start(fwd.live, end)
    with _all_ones(), CudaLike(half), bwd:
        loss.backward()
    del loss
    end_backward = bwd.current()
    model.zero_grad(set_to_none=True)
    ev = Tracker(set(params))
    model.eval()
    with _all_ones(), CudaLike(half), ev, torch.no_grad():
        model(**inputs)
    return {"saved": kept, "end_forward": end, "forward_peak": fwd.peak, "backward_peak": bwd.peak,
            "backward_peak_no_grads": bwd.peak_no_grads, "grads_at_peak": bwd.grads_at_peak, "end_backward": end_backward,
            "eval_peak": ev.peak, "largest_block": max(fwd.largest, bwd.largest), "eval_largest_block": ev.largest}


QUANTITIES = ("saved", "forward_peak", "backward_peak", "backward_peak_no_grads", "grads_at_peak", "end_backward",
              "eval_peak", "largest_block", "eval_largest_block")
DEPTH_KEYS = ("num_hidden_layers", "num_layers", "n_layer", "n_layers")


def depth_of(cfg: dict[str, Any]) -> int:
    return next((int(cfg[k]) for k in DEPTH_KEYS if cfg.get(k) is not None), 1)


TOKEN_FREE = ("grads_at_peak", "end_backward")  # gradients of parameters: per layer, not per token


def fit(cfg: dict[str, Any], task: str, mode: str, attn: str, gc: bool, seq: int) -> dict[str, list[float]]:
    """Per quantity: (K0, K1, c, a, d, b) with Q = K0 + L*K1 + B*(s*(c + L*a) + s^2*(d + L*b)) bytes.

    Six steps: depths P and 2P (P: the layer pattern's period) at (batch, seq) = (8, s2), (16, s2), (8, s1)
    with s2 the anchor of ``seq`` and s1 = s2/2. Batches this large keep the per-token regime (what a real
    run is in) and the batch pair separates what does not grow with it (weight casts) from what does.
    Parameter gradients (``TOKEN_FREE``) are fitted per layer only."""
    import numpy as np

    p = period(cfg)
    s2 = anchor(seq, cfg)
    s1 = s2 // 2
    rows: list[list[int]] = []
    values: dict[str, list[int]] = {q: [] for q in QUANTITIES}
    for depth in (p, 2 * p):
        for batch, sq in ((8, s2), (16, s2), (8, s1)):
            r = step(cfg, task, mode, depth, sq, attn, gc, batch)
            rows.append([1, depth, batch * sq, depth * batch * sq, batch * sq * sq, depth * batch * sq * sq])
            for q in QUANTITIES:
                values[q].append(r[q])
    a = np.array(rows, dtype=float)
    out = {}
    for q, v in values.items():
        y = np.array(v, dtype=float)
        if q in TOKEN_FREE:
            k0k1 = np.linalg.lstsq(a[:, :2], y, rcond=None)[0]
            out[q] = [float(k0k1[0]), float(k0k1[1]), 0.0, 0.0, 0.0, 0.0]
        else:
            out[q] = [float(x) for x in np.linalg.solve(a, y)]
    return out


def facts(cfg_dict: dict[str, Any], task: str) -> dict[str, Any]:
    """Linear layers (name -> in, out, count), 2-D parameters, parameter counts: from the model's modules."""
    p = period(cfg_dict)
    shapes = {}
    for depth in (p, 2 * p):
        model, cfg = build(cfg_dict, task, depth, torch.float32, "sdpa")
        shapes[depth] = model
    full_depth = depth_of(cfg_dict)
    scale = (full_depth - p) / p

    def linears(model: Any) -> dict[str, list[int]]:
        import re

        out: dict[str, list[int]] = {}
        for name, mod in model.named_modules():
            w = getattr(mod, "weight", None)
            kind = type(mod).__name__
            if w is None or w.dim() != 2 or kind not in ("Linear", "Conv1D", "Linear4bit", "Linear8bitLt"):
                continue
            key = re.sub(r"\.\d+\.", ".", "." + name + ".").strip(".")
            fi, fo = (w.shape[1], w.shape[0]) if kind != "Conv1D" else (w.shape[0], w.shape[1])
            entry = out.setdefault(key, [int(fi), int(fo), 0])
            entry[2] += 1
        return out

    def two_d(model: Any) -> tuple[int, int, int]:
        factored = vectors = largest = 0
        for prm in model.parameters():
            if prm.dim() >= 2:
                factored += prm.shape[-1] + int(prm.numel() // prm.shape[-1])
                largest = max(largest, prm.numel())
            else:
                vectors += prm.numel()
        return factored, vectors, largest

    one, two = linears(shapes[p]), linears(shapes[2 * p])
    lin = {k: [v[0], v[1], round(v[2] + (two.get(k, v)[2] - v[2]) * scale)] for k, v in one.items()}
    n1, n2 = (sum(x.numel() for x in m.parameters()) for m in (shapes[p], shapes[2 * p]))
    f1, f2 = two_d(shapes[p]), two_d(shapes[2 * p])
    tied = shapes[p].get_output_embeddings() is not None and shapes[p].get_input_embeddings() is not None and \
        shapes[p].get_output_embeddings().weight is shapes[p].get_input_embeddings().weight
    return {"linear": lin, "params": round(n1 + (n2 - n1) * scale),
            "adafactor_factored": round(f1[0] + (f2[0] - f1[0]) * scale),
            "adafactor_vectors": round(f1[1] + (f2[1] - f1[1]) * scale), "largest_param": f1[2], "tied": bool(tied),
            "period": p}


def learn(cfg: dict[str, Any], keys: list[str], known: dict[str, Any] | None = None) -> dict[str, Any]:
    """Facts and fits for each key (task/mode/attn/gc/anchor) not already in ``known``."""
    out: dict[str, Any] = known or {"version": VERSION, "facts": {}, "fits": {}}
    for k in keys:
        # a setting torch cannot run for this model is recorded as failed, so later plans take the closed
        # form at once instead of tracing again (and the other settings are still learned)
        try:
            task = k.split("/")[0]
            if task not in out["facts"]:
                out["facts"][task] = facts(cfg, task)
            if k.endswith("/facts"):
                continue
            task, mode, attn, gc, seq = k.split("/")
            if k not in out["fits"]:
                out["fits"][k] = fit(cfg, task, mode, attn, gc == "gc", int(seq))
        except Exception as exc:  # noqa: BLE001 - whatever the model raises, the plan falls back
            out.setdefault("failed", {})[k] = f"{type(exc).__name__}: {str(exc)[:300]}"
    return out



def main(argv: list[str]) -> int:
    """python -m runners.plan.trace CONFIG.json OUT.json KEY [KEY ...]: adds the keys' facts and fits to OUT.json."""
    import os

    cfg = {k: v for k, v in json.loads(open(argv[0]).read()).items() if k != "_ftui"}
    known = None
    if os.path.exists(argv[1]):
        with open(argv[1]) as fh:
            known = json.load(fh)
        if known.get("version") != VERSION:
            known = None
    data = learn(cfg, argv[2:], known)
    tmp = argv[1] + f".{os.getpid()}.tmp"
    with open(tmp, "w") as fh:
        json.dump(data, fh)
    os.replace(tmp, argv[1])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
