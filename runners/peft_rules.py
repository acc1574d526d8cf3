"""LoRA and QLoRA as ftui runs them: the one description the planner and the runners share.

The runner (runners/train/adapters.py) builds peft's ``LoraConfig`` and transformers' ``BitsAndBytesConfig`` from
the keyword arguments made here, and the planner (runners/plan/architecture.py, memory.py) counts what those
objects do from the same rules: which linear layers get adapters (peft's name matching, ``all-linear``, the
default targets per model family), which modules train whole beside them (``modules_to_save``; the classifier
head of sequence classification), the dtype of the adapters, the bytes of a quantized weight, what the k-bit
preparation upcasts, and the extra activations LoRA dropout saves. Pure Python: no torch, no peft.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from runners.errors import UserError, did_you_mean

ALL_LINEAR = "all-linear"
TASK_TYPES = {"seq-cls": "SEQ_CLS", "causal-lm": "CAUSAL_LM", "seq2seq": "SEQ_2_SEQ_LM"}
# peft's TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING for the families ftui plans (tests/test_lora.py keeps
# the copy equal to the installed peft); a family missing here needs model.lora.target_modules
DEFAULT_TARGETS: dict[str, list[str]] = {
    "bert": ["query", "value"], "roberta": ["query", "value"], "xlm-roberta": ["query", "value"],
    "deberta": ["in_proj"], "deberta-v2": ["query_proj", "value_proj"], "gpt2": ["c_attn"], "t5": ["q", "v"],
    "mt5": ["q", "v"], "bart": ["q_proj", "v_proj"], "opt": ["q_proj", "v_proj"], "gpt_neox": ["query_key_value"],
    "llama": ["q_proj", "v_proj"], "mistral": ["q_proj", "v_proj"], "mixtral": ["q_proj", "v_proj"],
    "qwen2": ["q_proj", "v_proj"], "qwen3": ["q_proj", "v_proj"], "gemma": ["q_proj", "v_proj"],
    "gemma2": ["q_proj", "v_proj"],
}
# peft adds these to modules_to_save for sequence classification (PeftModelForSequenceClassification): the head
# is trained whole and saved with the adapter; all-linear never puts adapters on a head
SEQ_CLS_HEADS = ("classifier", "score")
OUTPUT_HEADS = ("lm_head", "embed_out")  # output embeddings: never targeted by all-linear, never quantized
ADAPTER_BYTES = 4  # peft's autocast_adapter_dtype (default): adapters in float32 whatever the base dtype
UPCAST_BYTES = 4  # prepare_model_for_kbit_training casts every parameter that is not quantized to float32
NF4_BLOCK = 64  # bitsandbytes 4-bit: one float32 absmax per 64 weights ...
NESTED_BLOCK = 256  # ... which double quantization stores as uint8, with one float32 constant per 256 of them
QUANT_TYPE = "nf4"
DOUBLE_QUANT = True
WHERE = "model.lora.target_modules (--lora_target_modules)"


def _collapse(name: str) -> str:
    """A module name without its layer indices, as runners/plan/trace.py records them."""
    return re.sub(r"\.\d+\.", ".", "." + name + ".").strip(".")


def quant_bits(model: Any) -> int | None:
    """4, 8 or None, from a ModelSpec (or anything with load_in_4bit / load_in_8bit)."""
    return 4 if getattr(model, "load_in_4bit", False) else 8 if getattr(model, "load_in_8bit", False) else None


def quantized_weight_bytes(bits: int, fan_in: int) -> float:
    """Bytes per weight of a quantized linear layer: NF4 with (double-quantized) block constants, or LLM.int8
    with one float32 scale per output row."""
    if bits == 4:
        constants = (1 + 4 / NESTED_BLOCK) / NF4_BLOCK if DOUBLE_QUANT else 4 / NF4_BLOCK
        return 0.5 + constants
    return 1.0 + 4.0 / max(fan_in, 1)


def kbit_gradient_checkpointing(training: dict[str, Any]) -> bool:
    """The k-bit preparation turns gradient checkpointing on unless the spec turns it off explicitly."""
    value = training.get("gradient_checkpointing")
    return True if value is None else bool(value)


def compute_dtype(model: Any, training: dict[str, Any]) -> str:
    """The 4-bit compute dtype: the mixed precision if any, else the weights' dtype if half, else float32."""
    if training.get("bf16"):
        return "bfloat16"
    if training.get("fp16"):
        return "float16"
    dtype = getattr(model, "torch_dtype", "auto")
    return dtype if dtype in ("bfloat16", "float16") else "float32"


def modules_to_save(lora: Any, task: str) -> list[str]:
    """What trains whole beside the adapters: the spec's modules_to_save, plus peft's classifier heads for seq-cls."""
    names = list(getattr(lora, "modules_to_save", None) or [])
    if task == "seq-cls":
        names += [n for n in SEQ_CLS_HEADS if n not in names]
    return names


def requested_targets(lora: Any, family: str) -> list[str] | str:
    """The spec's target modules (``all-linear`` as peft's string), or the family's default."""
    targets = getattr(lora, "target_modules", None)
    if targets:
        return ALL_LINEAR if [t.lower() for t in targets] in ([ALL_LINEAR], ["all"]) else list(targets)
    default = DEFAULT_TARGETS.get(family)
    if default is None:
        raise UserError(f"model.lora.target_modules is not set and ftui knows no default LoRA targets for {family} "
                        "models. Name the linear layers to adapt (model.lora.target_modules, or --lora_target_modules "
                        "for the planner), or use all-linear.")
    return list(default)


def _saved(name: str, saved: Iterable[str]) -> bool:
    """peft's ModulesToSaveWrapper rule: the module's name, or one of its parents', ends with a saved name."""
    parts = name.split(".")
    return any(".".join(parts[:i]).endswith(m) for m in saved for i in range(1, len(parts) + 1))


def _excluded(name: str, saved: Iterable[str]) -> bool:
    """peft never puts an adapter inside a module to save (check_target_module_exists)."""
    return any(re.match(rf"(^|.*\.){re.escape(m)}($|\..*)", name) for m in saved)


def _matches(target: str, name: str) -> bool:
    """peft's list rule: the full name, or a name ending in ``.target`` (layer indices ignored)."""
    target = _collapse(target)
    return name == target or name.endswith("." + target)


def unknown_targets(linears: Iterable[str], requested: list[str] | str) -> list[str]:
    """The requested target names that match no linear layer (none for all-linear)."""
    if requested == ALL_LINEAR:
        return []
    names = [_collapse(n) for n in linears]
    return [t for t in requested if not any(_matches(t, short) for short in names)]


def normalize(linears: dict[str, tuple[int, int, int]]) -> dict[str, tuple[int, int, int]]:
    """Linear layers by name without layer indices, counted (a model's named_modules, or the trace's facts)."""
    out: dict[str, tuple[int, int, int]] = {}
    for name, (fan_in, fan_out, count) in linears.items():
        key = _collapse(name)
        if key in out and out[key][:2] != (fan_in, fan_out):
            key = name
        out[key] = (fan_in, fan_out, out.get(key, (0, 0, 0))[2] + count)
    return out


def select(linears: dict[str, tuple[int, int, int]], lora: Any, family: str, task: str,
           where: str = WHERE) -> tuple[list[str], list[str]]:
    """(linear layers that get adapters, linear layers trained whole), named as in :func:`normalize`, by peft's
    rules; a target naming no module is a UserError that lists the model's own names."""
    names = {n: n for n in normalize(linears)}
    saved = modules_to_save(lora, task)
    trained = [full for short, full in names.items() if _saved(short, saved)]
    requested = requested_targets(lora, family)
    if requested == ALL_LINEAR:
        heads = OUTPUT_HEADS + (SEQ_CLS_HEADS if task == "seq-cls" else ())
        targets = [full for short, full in names.items()
                   if short.split(".")[-1] not in heads and not _excluded(short, saved)]
        return targets, trained
    unknown = unknown_targets(linears, requested)
    if unknown:
        short_names = sorted({s.split(".")[-1] for s in names})
        hint = did_you_mean(unknown[0], short_names) if short_names else ""
        raise UserError(f"{where} names {', '.join(unknown)}, which {family} models do not have (no linear layer "
                        f"of this model is called that).{hint} Choose from: {', '.join(short_names) or '(none found)'}, "
                        f"or {ALL_LINEAR} for every linear layer but the output head.")
    targets = [full for short, full in names.items()
               if any(_matches(t, short) for t in requested) and not _excluded(short, saved)]
    if not targets:
        raise UserError(f"{where} names only modules that train whole ({', '.join(saved)}: modules_to_save), so no "
                        "layer would get an adapter. Name other linear layers, or use all-linear.")
    return targets, trained


def _bias(name: str) -> int:
    """Heads called ``score`` (decoder models) have no bias; the others have one (an estimate: shapes only)."""
    return 0 if name.split(".")[-1] == "score" else 1


def trainable_params(linears: dict[str, tuple[int, int, int]], lora: Any, family: str, task: str) -> int:
    """Parameters a LoRA run trains: r * (in + out) per adapted layer (+ out for DoRA's magnitude), plus the
    layers trained whole (weights and an assumed bias)."""
    linears = normalize(linears)
    targets, trained = select(linears, lora, family, task)
    r = int(lora.r)
    total = 0
    for name in targets:
        fan_in, fan_out, count = linears[name]
        total += (r * (fan_in + fan_out) + (fan_out if getattr(lora, "use_dora", False) else 0)) * count
    for name in trained:
        fan_in, fan_out, count = linears[name]
        total += (fan_in * fan_out + fan_out * _bias(name)) * count
    return total


def dropout_bytes_per_token(linears: dict[str, tuple[int, int, int]], targets: list[str], dropout: float, r: int,
                            half_weights: bool, autocast: bool) -> float:
    """Activation bytes one token adds through the adapters, over all adapted layers: lora_A's input and
    lora_B's. With dropout, a dropped copy of each adapted layer's input (in the matmul dtype: 2 B under
    autocast, else the float32 of the adapters) and its mask (1 B); without, a float32 copy only when the input
    is half precision and nothing casts it back (the adapters run in float32)."""
    linears = normalize(linears)
    matmul = 2 if autocast else ADAPTER_BYTES
    per_in = (1 + matmul) if dropout > 0 else (ADAPTER_BYTES if half_weights and not autocast else 0)
    return float(sum((linears[n][0] * per_in + r * matmul) * linears[n][2] for n in targets))


def lora_config_kwargs(lora: Any, family: str, task: str) -> dict[str, Any]:
    """peft.LoraConfig(**these) for the spec's LoRA section."""
    kwargs: dict[str, Any] = {
        "r": int(lora.r), "lora_alpha": lora.alpha, "lora_dropout": float(lora.dropout),
        "target_modules": requested_targets(lora, family), "task_type": TASK_TYPES.get(task),
        "use_dora": bool(getattr(lora, "use_dora", False)), "use_rslora": bool(getattr(lora, "use_rslora", False)),
    }
    if getattr(lora, "modules_to_save", None):
        kwargs["modules_to_save"] = list(lora.modules_to_save)
    return kwargs


def bnb_config_kwargs(model: Any, training: dict[str, Any]) -> dict[str, Any]:
    """transformers.BitsAndBytesConfig(**these) (the compute dtype as a name: the runner turns it into torch's)."""
    if quant_bits(model) == 8:
        return {"load_in_8bit": True}
    return {"load_in_4bit": True, "bnb_4bit_quant_type": QUANT_TYPE, "bnb_4bit_use_double_quant": DOUBLE_QUANT,
            "bnb_4bit_compute_dtype": compute_dtype(model, training)}


def validate(model: Any, source: str) -> None:
    """A ModelSpec's LoRA and quantization values no run can use (runners.spec calls this; whether this machine
    can quantize is preflight's)."""
    lora = model.lora
    if lora is not None:
        if lora.r < 1:
            raise UserError(f"{source}: model.lora.r must be a whole number of at least 1, got {lora.r!r}.")
        if lora.alpha <= 0:
            raise UserError(f"{source}: model.lora.alpha must be positive, got {lora.alpha!r} (the adapters' scale "
                            "is alpha / r; 16 or 2 * r are usual).")
        if not 0 <= lora.dropout < 1:
            raise UserError(f"{source}: model.lora.dropout must be at least 0 and below 1, got {lora.dropout!r}.")
        for key in ("target_modules", "modules_to_save"):
            names = getattr(lora, key)
            if names is not None and (not names or any(not n.strip() for n in names)):
                raise UserError(f"{source}: model.lora.{key} must be a list of module names, got {names!r}. Remove "
                                "the key to use the default, or name modules (e.g. [q_proj, v_proj], or [all-linear]).")
        targets = [t.lower() for t in lora.target_modules or []]
        if "all-linear" in targets and len(targets) > 1:
            raise UserError(f"{source}: model.lora.target_modules lists all-linear with other names "
                            f"({lora.target_modules}): all-linear already means every linear layer. Give it alone.")
    if model.load_in_4bit and model.load_in_8bit:
        raise UserError(f"{source}: model.load_in_4bit and model.load_in_8bit are both set: a model is loaded one "
                        "way. Keep one (4-bit for QLoRA, the smaller).")
    bits = "load_in_4bit" if model.load_in_4bit else "load_in_8bit" if model.load_in_8bit else None
    if bits and lora is None:
        raise UserError(f"{source}: model.{bits} freezes a quantized base, which only trains through adapters, but "
                        "the spec has no model.lora. Add a model.lora section (e.g. lora: {r: 16}; --lora_r 16 for "
                        f"ftui --plan), or remove model.{bits} to train the whole model.")
    if bits and model.init == "random":
        raise UserError(f"{source}: model.{bits} with model.init random would quantize and freeze a random base: the "
                        "adapters would learn on noise. Use pretrained weights (model.init: pretrained), or drop "
                        f"model.{bits} (LoRA on a random init is fine for a smoke test).")


KBIT_STRATEGIES = ("single", "ddp")  # a quantized base is replicated whole: DeepSpeed and FSDP would shard it
BNB_PLATFORMS = ("linux", "win32")  # where bitsandbytes ships CUDA builds


def quantization_refusal(model: Any, strategy: str, platform: str, bnb_installed: bool, cuda_gpus: int,
                         torch_cuda: bool | None = None) -> str | None:
    """Why this machine cannot load the spec's 4/8-bit base (the message of a UserError), or None when it can.

    ``cuda_gpus``: the GPUs this process sees; ``torch_cuda``: whether torch can use CUDA (None: not asked)."""
    bits = quant_bits(model)
    if bits is None:
        return None
    key = f"model.load_in_{bits}bit"
    fix = (f"LoRA without quantization trains here, on CPU too: remove {key} and keep model.lora. Or run this spec "
           "on a machine with an NVIDIA GPU (hardware.strategy: single, or ddp for several).")
    why = None
    if strategy == "cpu":
        why = "hardware.strategy is cpu"
    elif strategy not in KBIT_STRATEGIES:
        return (f"{key} with hardware.strategy {strategy}: a quantized base cannot be sharded or offloaded by "
                f"DeepSpeed/FSDP here. Use hardware.strategy single (one GPU) or ddp (a quantized replica per GPU), "
                f"or remove {key} to train LoRA on a {strategy} base.")
    elif platform not in BNB_PLATFORMS:
        why = f"bitsandbytes has no CUDA build for this platform ({platform})"
    elif not bnb_installed:
        why = "the bitsandbytes package is not installed (pip install bitsandbytes)"
    elif cuda_gpus < 1:
        why = "no CUDA GPU is visible on this machine"
    elif torch_cuda is False:
        why = "this torch cannot use CUDA (a CPU-only build, or a driver it does not support)"
    if why is None:
        return None
    return (f"{key} loads the base model quantized by bitsandbytes, which needs a CUDA GPU, but {why}. {fix}")
