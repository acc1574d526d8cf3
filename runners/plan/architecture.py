"""Architecture arithmetic: the numbers the memory model needs, read from a model's config.

Parameter counts come from the config through a closed form per architecture family, or from the
structure learned by tracing the model (runners/plan/structure.py); unknown families fall back to
instantiating the model on the ``meta`` device (no memory, but it imports transformers).
"""
from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from typing import Any

from runners.errors import UserError

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
ENCODER_DECODER = ("t5", "mt5", "umt5", "longt5", "bart", "mbart", "pegasus", "marian")


@dataclass
class Arch:
    """The numbers the memory model needs, read from a config of any supported family."""

    family: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    max_positions: int
    gated_mlp: bool
    tied: bool
    norm: str  # "layernorm" or "rmsnorm"
    dropout: bool
    experts: int = 1
    experts_per_token: int = 1
    decoder_layers: int = 0  # encoder-decoder models: layers is the encoder depth
    params: dict[str, int] = field(default_factory=dict)  # per task: total parameter count
    largest_layer: int = 0  # parameters of the largest single layer (ZeRO-3 gathers it whole)
    linear_shapes: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # name -> (in, out, count)
    config_dtype: str | None = None
    config: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)  # the raw config, for tracing


def _get(cfg: dict[str, Any], *keys: str, default: Any = None) -> Any:
    for key in keys:
        if cfg.get(key) is not None:
            return cfg[key]
    return default


def arch_from_config(cfg: dict[str, Any]) -> Arch:
    """Read the architecture numbers; parameter counts per task are filled by :func:`count_params`."""
    mt = str(cfg.get("model_type", "")).lower()
    hidden = int(_get(cfg, "hidden_size", "d_model", "n_embd", "dim", default=0))
    layers = int(_get(cfg, "num_hidden_layers", "num_layers", "n_layer", "n_layers", default=0))
    heads = int(_get(cfg, "num_attention_heads", "num_heads", "n_head", "n_heads", default=1))
    if not hidden or not layers:
        raise UserError(f"Model config of type '{mt or 'unknown'}' has no hidden size or layer count that ftui "
                        "can read (hidden_size/d_model/n_embd, num_hidden_layers/num_layers/n_layer).")
    kv = int(_get(cfg, "num_key_value_heads", default=heads) or heads)
    head_dim = int(_get(cfg, "head_dim", "d_kv", default=hidden // max(heads, 1)))
    inter = int(_get(cfg, "intermediate_size", "d_ff", "n_inner", "hidden_dim", default=4 * hidden) or 4 * hidden)
    gated = mt in ("llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma", "gemma2", "phi3") or \
        str(cfg.get("feed_forward_proj", "")).startswith("gated")
    arch = Arch(
        family=mt or "unknown", hidden=hidden, layers=layers, heads=heads, kv_heads=kv, head_dim=head_dim,
        intermediate=inter, vocab=int(_get(cfg, "vocab_size", default=32000)),
        max_positions=int(_get(cfg, "max_position_embeddings", "n_positions", default=2048)),
        gated_mlp=gated, tied=bool(cfg.get("tie_word_embeddings", mt in ("bert", "roberta", "distilbert", "gpt2", "t5"))),
        norm="rmsnorm" if mt in ("llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma", "gemma2", "t5") else "layernorm",
        dropout=any(float(_get(cfg, k, default=0) or 0) > 0 for k in
                    ("hidden_dropout_prob", "dropout", "resid_pdrop", "dropout_rate", "attention_dropout")),
        experts=int(_get(cfg, "num_local_experts", "num_experts", default=1) or 1),
        experts_per_token=int(_get(cfg, "num_experts_per_tok", default=1) or 1),
        decoder_layers=int(_get(cfg, "num_decoder_layers", default=layers)) if cfg.get(
            "is_encoder_decoder", mt in ENCODER_DECODER) else 0,  # the config class's default when the file omits it
        config_dtype=_get(cfg, "dtype", "torch_dtype"),
        config=dict(cfg),
    )
    count_params(arch, cfg)
    return arch


def _lin(i: int, o: int, bias: bool) -> int:
    return i * o + (o if bias else 0)


def count_params(arch: Arch, cfg: dict[str, Any], num_labels: int = 2) -> None:
    """Closed-form parameter counts per task for the families ftui knows; others via the meta device."""
    h, i, v, L = arch.hidden, arch.intermediate, arch.vocab, arch.layers
    q_out, kv_out = arch.heads * arch.head_dim, arch.kv_heads * arch.head_dim
    fam = arch.family
    if fam in ("bert", "roberta"):
        emb = v * h + arch.max_positions * h + int(cfg.get("type_vocab_size", 2)) * h + 2 * h
        layer = 3 * _lin(h, h, True) + _lin(h, h, True) + 2 * h + _lin(h, i, True) + _lin(i, h, True) + 2 * h
        base = emb + L * layer
        pooler = _lin(h, h, True)
        cls = base + (pooler + _lin(h, num_labels, True) if fam == "bert" else _lin(h, h, True) + _lin(h, num_labels, True))
        arch.params = {"base": base + (pooler if fam == "bert" else 0), "seq-cls": cls, "embedding": base + pooler,
                       "token-cls": base + _lin(h, num_labels, True)}
        arch.linear_shapes = {"query": (h, h, L), "key": (h, h, L), "value": (h, h, L), "attention.output.dense": (h, h, L),
                              "intermediate.dense": (h, i, L), "output.dense": (i, h, L)}
    elif fam == "distilbert":
        layer = 4 * _lin(h, h, True) + 2 * h + _lin(h, i, True) + _lin(i, h, True) + 2 * h
        base = v * h + arch.max_positions * h + 2 * h + L * layer
        arch.params = {"base": base, "embedding": base, "seq-cls": base + _lin(h, h, True) + _lin(h, num_labels, True),
                       "token-cls": base + _lin(h, num_labels, True)}
        arch.linear_shapes = {"q_lin": (h, h, L), "k_lin": (h, h, L), "v_lin": (h, h, L), "out_lin": (h, h, L),
                              "lin1": (h, i, L), "lin2": (i, h, L)}
    elif fam == "gpt2":
        layer = 2 * h + _lin(h, 3 * h, True) + _lin(h, h, True) + 2 * h + _lin(h, i, True) + _lin(i, h, True)
        base = v * h + arch.max_positions * h + L * layer + 2 * h
        arch.params = {"base": base, "causal-lm": base, "seq-cls": base + h * num_labels, "embedding": base,
                       "token-cls": base + _lin(h, num_labels, True)}
        arch.linear_shapes = {"c_attn": (h, 3 * h, L), "attn.c_proj": (h, h, L), "c_fc": (h, i, L), "mlp.c_proj": (i, h, L)}
    elif fam == "t5":
        inner = arch.heads * arch.head_dim
        ff = (3 if arch.gated_mlp else 2) * h * i
        buckets = int(cfg.get("relative_attention_num_buckets", 32)) * arch.heads
        enc = L * (4 * h * inner + ff + 2 * h) + buckets + h
        dec = arch.decoder_layers * (8 * h * inner + ff + 3 * h) + buckets + h
        base = v * h + enc + dec
        arch.params = {"base": base, "seq2seq": base + (0 if arch.tied else v * h), "embedding": v * h + enc}
        arch.linear_shapes = {"q": (h, inner, L + 2 * arch.decoder_layers), "k": (h, inner, L + 2 * arch.decoder_layers),
                              "v": (h, inner, L + 2 * arch.decoder_layers), "o": (inner, h, L + 2 * arch.decoder_layers),
                              "wi": (h, i, L + arch.decoder_layers), "wo": (i, h, L + arch.decoder_layers)}
    elif fam in ("llama", "mistral", "mixtral", "qwen2", "gemma", "gemma2"):
        bias = bool(cfg.get("attention_bias", fam == "qwen2"))
        attn = _lin(h, q_out, bias) + 2 * _lin(h, kv_out, bias) + _lin(q_out, h, bool(cfg.get("attention_bias", False)))
        mlp = 3 * h * i * arch.experts + (h * arch.experts if arch.experts > 1 else 0)
        norms = (4 if fam == "gemma2" else 2) * h
        base = v * h + L * (attn + mlp + norms) + h
        head = 0 if arch.tied else v * h
        arch.params = {"base": base, "causal-lm": base + head, "seq-cls": base + h * num_labels, "embedding": base,
                       "token-cls": base + _lin(h, num_labels, True)}
        n_mlp = L * arch.experts
        arch.linear_shapes = {"q_proj": (h, q_out, L), "k_proj": (h, kv_out, L), "v_proj": (h, kv_out, L),
                              "o_proj": (q_out, h, L), "gate_proj": (h, i, n_mlp), "up_proj": (h, i, n_mlp),
                              "down_proj": (i, h, n_mlp)}
        if arch.experts > 1:  # Mixtral names its expert projections w1 (gate), w3 (up), w2 (down)
            arch.linear_shapes.update({"w1": (h, i, n_mlp), "w3": (h, i, n_mlp), "w2": (i, h, n_mlp)})
    else:
        arch.params = meta_param_counts(cfg)
        arch.linear_shapes = _learned_linears(cfg)
    per_layer = (arch.params.get("base", 0) - v * h) // max(L + arch.decoder_layers, 1)
    arch.largest_layer = max(per_layer, v * h)


def _learned_linears(cfg: dict[str, Any]) -> dict[str, tuple[int, int, int]]:
    """For families without a closed form: the linear layers the trace learned from the model, if cached,
    by their short names (the names PEFT's target_modules match)."""
    from runners.plan import structure

    facts = structure.load(cfg)["facts"]
    fact = facts.get("causal-lm") or next(iter(facts.values()), None)
    out: dict[str, tuple[int, int, int]] = {}
    for name, (fi, fo, count) in (fact or {}).get("linear", {}).items():
        short = name.split(".")[-1]
        if short in out and out[short][:2] != (fi, fo):
            short = ".".join(name.split(".")[-2:])
        prev = out.get(short, (fi, fo, 0))
        out[short] = (fi, fo, prev[2] + count)
    return out


def meta_param_counts(cfg: dict[str, Any]) -> dict[str, int]:
    """General fallback: build the model on the meta device and count (imports transformers)."""
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification

    config = AutoConfig.for_model(**cfg)
    counts: dict[str, int] = {}
    with torch.device("meta"):
        for task, auto in (("base", AutoModel), ("causal-lm", AutoModelForCausalLM),
                           ("seq-cls", AutoModelForSequenceClassification)):
            try:
                model = auto.from_config(config)
            except (ValueError, KeyError):
                continue
            counts[task] = sum(p.numel() for p in model.parameters())
    if not counts:
        raise UserError(f"ftui cannot count the parameters of model type '{cfg.get('model_type')}'. "
                        "Pass a config of a model that transformers can build.")
    counts.setdefault("embedding", counts.get("base", max(counts.values())))
    return counts


def params_for_task(arch: Arch, task: str) -> int:
    """Parameters of the model ftui would train for ``task`` (head included)."""
    for key in (task, "causal-lm" if task == "seq2seq" else task, "base"):
        if key in arch.params:
            return arch.params[key]
    return max(arch.params.values())


TRACE_TASKS = ("causal-lm", "seq-cls", "seq2seq", "token-cls")
CLOSED_FORM = ("bert", "roberta", "distilbert", "gpt2", "t5", "llama", "mistral", "mixtral", "qwen2", "gemma", "gemma2")
# families whose table lists every linear layer (all-linear can be counted from it); t5 only without gated MLPs,
# mixtral's experts are not Linear modules in transformers 5
COMPLETE_TABLES = ("bert", "roberta", "distilbert", "gpt2", "llama", "mistral", "qwen2", "gemma", "gemma2")


@dataclass(frozen=True)
class Lora:
    """The LoRA settings the planner counts (the fields of runners.spec.LoraSpec that change memory)."""

    r: int
    target_modules: tuple[str, ...] | None = None  # None: the family's default (runners/peft_rules.py)
    modules_to_save: tuple[str, ...] = ()
    use_dora: bool = False
    dropout: float = 0.0


def _tables(arch: Arch, task: str) -> dict[str, tuple[int, int, int]]:
    """The closed form's linear layers with the task's head, named as the models name them."""
    h, fam = arch.hidden, arch.family
    out = dict(arch.linear_shapes)
    if task == "seq-cls":
        out.update({"roberta": {"classifier.dense": (h, h, 1), "classifier.out_proj": (h, 2, 1)},
                    "distilbert": {"pre_classifier": (h, h, 1), "classifier": (h, 2, 1)},
                    "bert": {"pooler.dense": (h, h, 1), "classifier": (h, 2, 1)}, "t5": {}}.get(fam, {"score": (h, 2, 1)}))
    elif task in ("causal-lm", "seq2seq"):
        out["lm_head"] = (h, arch.vocab, 1)
    return out


def meta_linears(cfg: dict[str, Any], task: str) -> dict[str, tuple[int, int, int]]:
    """The model's own linear layers, built on the meta device in this process (imports transformers): the
    route when the trace subprocess is off or failed."""
    import re

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoModelForSequenceClassification

    auto = {"seq-cls": AutoModelForSequenceClassification, "seq2seq": AutoModelForSeq2SeqLM}.get(task, AutoModelForCausalLM)
    config = AutoConfig.for_model(**{k: v for k, v in cfg.items() if k != "_ftui"})
    if task == "seq-cls" and getattr(config, "pad_token_id", None) is None:
        config.pad_token_id = 0
    with torch.device("meta"):
        model = auto.from_config(config)
    out: dict[str, tuple[int, int, int]] = {}
    for name, mod in model.named_modules():
        w, kind = getattr(mod, "weight", None), type(mod).__name__
        if w is None or w.dim() != 2 or kind not in ("Linear", "Conv1D"):
            continue
        key = re.sub(r"\.\d+\.", ".", "." + name + ".").strip(".")
        fi, fo = (w.shape[1], w.shape[0]) if kind != "Conv1D" else (w.shape[0], w.shape[1])
        out[key] = (int(fi), int(fo), out.get(key, (0, 0, 0))[2] + 1)
    return out


def lora_linears(arch: Arch, lora: Lora, task: str = "causal-lm") -> dict[str, tuple[int, int, int]]:
    """Linear layers by name -> (in, out, count), to place LoRA adapters on: the model's own modules (learned once
    by the trace, on the meta device, and cached: runners.plan.structure) when known; the closed form's table when
    it names every target; else the model's modules learned now (trace subprocess, or the meta device here)."""
    from runners import peft_rules
    from runners.plan import structure

    def tupled(linear: dict[str, Any]) -> dict[str, tuple[int, int, int]]:
        return {k: (int(v[0]), int(v[1]), int(v[2])) for k, v in linear.items()}

    if not arch.config:
        return _tables(arch, task)
    known = structure.load(arch.config)["facts"]
    if task in known:
        return tupled(known[task]["linear"])
    requested = peft_rules.requested_targets(lora, arch.family)  # a family without defaults: the error, at once
    table = _tables(arch, task) if arch.family in CLOSED_FORM else {}
    complete = arch.family in COMPLETE_TABLES or (arch.family == "t5" and not arch.gated_mlp)
    if table and (complete if requested == peft_rules.ALL_LINEAR else not peft_rules.unknown_targets(table, requested)):
        return table  # else a name the table lacks may still be the model's, or all-linear needs them all: ask it
    if structure.tracing_allowed() and task in TRACE_TASKS:
        try:
            structure.learn(arch.config, [f"{task}/facts"])
            learned = structure.load(arch.config)["facts"].get(task)
            if learned:
                return tupled(learned["linear"])
        except (RuntimeError, OSError, subprocess.SubprocessError):
            pass
    try:
        return meta_linears(arch.config, task)
    except Exception:  # noqa: BLE001 - transformers cannot build it: the closed form or the learned names
        return table or dict(arch.linear_shapes)


def lora_params(arch: Arch, r: int, target_modules: list[str] | None, task: str = "causal-lm",
                modules_to_save: tuple[str, ...] = (), use_dora: bool = False) -> int:
    """Trainable parameters of a LoRA run, by the runner's rules (runners/peft_rules.py): r * (in + out) per
    targeted linear layer, DoRA's magnitudes, and the modules trained whole (the seq-cls head)."""
    from runners import peft_rules

    lora = Lora(r=r, target_modules=tuple(target_modules) if target_modules else None,
                modules_to_save=tuple(modules_to_save), use_dora=use_dora)
    return peft_rules.trainable_params(lora_linears(arch, lora, task), lora, arch.family, task)


def lora_activation_bytes(arch: Arch, lora: Lora, task: str, half_weights: bool, autocast: bool) -> float:
    """Bytes per token the adapters add to the saved activations (dropout copies: runners/peft_rules.py)."""
    from runners import peft_rules

    linears = lora_linears(arch, lora, task)
    targets, _ = peft_rules.select(linears, lora, arch.family, task)
    return peft_rules.dropout_bytes_per_token(linears, targets, lora.dropout, lora.r, half_weights, autocast)


def quantized_bytes(arch: Arch, task: str, bits: int) -> tuple[float, int]:
    """(bytes, parameters) of the linear layers bitsandbytes quantizes: every linear layer but the output and
    classifier heads (transformers keeps those, and the last module, in full precision)."""
    from runners import peft_rules
    from runners.plan import structure

    heads = peft_rules.OUTPUT_HEADS + peft_rules.SEQ_CLS_HEADS
    known = structure.load(arch.config)["facts"].get(task) if arch.config else None
    shapes = {k: tuple(v) for k, v in known["linear"].items()} if known else dict(arch.linear_shapes)
    if arch.experts > 1 and not known:  # the closed form's w1/w2/w3 alias gate/up/down
        shapes = {k: v for k, v in shapes.items() if k not in ("w1", "w2", "w3")}
    total, params = 0.0, 0
    for name, (fan_in, fan_out, count) in shapes.items():
        if name.split(".")[-1] in heads or name.split(".")[0] in heads:
            continue
        params += fan_in * fan_out * count
        total += fan_in * fan_out * count * peft_rules.quantized_weight_bytes(bits, fan_in)
    return total, params


def linear_weight_params(arch: Arch) -> int:
    """Parameters inside the decoder/encoder linear layers (what 4-bit quantization compresses)."""
    total = sum(fan_in * fan_out * count for fan_in, fan_out, count in arch.linear_shapes.values())
    if arch.experts > 1:  # w1/w2/w3 alias gate/up/down
        total -= sum(fi * fo * c for k, (fi, fo, c) in arch.linear_shapes.items() if k in ("w1", "w2", "w3"))
    return total
