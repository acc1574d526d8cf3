"""LoRA and QLoRA in the training process: peft's adapters and bitsandbytes' quantized base, for every runner
that trains a transformers model (the HF Trainer runner, the SFT runner).

The rules (default targets, the heads trained whole, all-linear, NF4 with double quantization, the compute dtype,
the k-bit preparation's gradient checkpointing) are runners/peft_rules.py's, the same the planner counts with; here
they become peft and transformers objects. Imports torch, peft and bitsandbytes, lazily: training process only.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

from runners import events as ev
from runners import peft_rules
from runners.errors import UserError
from runners.spec import RunSpec


def quantization_problem(spec: RunSpec) -> str | None:
    """Why bitsandbytes cannot load this spec's base here (None when it can, or nothing is quantized)."""
    if peft_rules.quant_bits(spec.model) is None:
        return None
    import torch

    cuda = torch.cuda.is_available()
    return peft_rules.quantization_refusal(spec.model, spec.hardware.strategy, sys.platform,
                                           importlib.util.find_spec("bitsandbytes") is not None,
                                           torch.cuda.device_count() if cuda else 0, cuda)


def load_kwargs(spec: RunSpec) -> dict[str, Any]:
    """Extra from_pretrained kwargs: the BitsAndBytesConfig and this rank's device, for a 4/8-bit base."""
    if peft_rules.quant_bits(spec.model) is None:
        return {}
    problem = quantization_problem(spec)
    if problem:
        raise UserError(problem)
    return {"quantization_config": bnb_config(spec),
            "device_map": {"": int(os.environ.get("LOCAL_RANK", 0))}}  # a quantized model cannot be moved later


def bnb_config(spec: RunSpec) -> Any:
    """transformers' BitsAndBytesConfig for the spec (NF4, double quantization, the compute dtype)."""
    import torch
    from transformers import BitsAndBytesConfig

    kwargs = peft_rules.bnb_config_kwargs(spec.model, spec.training)
    if "bnb_4bit_compute_dtype" in kwargs:
        kwargs["bnb_4bit_compute_dtype"] = getattr(torch, kwargs["bnb_4bit_compute_dtype"])
    return BitsAndBytesConfig(**kwargs)


def linear_layers(model: Any) -> dict[str, tuple[int, int, int]]:
    """The model's linear layers (Linear, GPT-2's Conv1D, bitsandbytes' Linear4bit/8bitLt): name -> (in, out, 1)."""
    import torch
    from transformers.pytorch_utils import Conv1D

    out: dict[str, tuple[int, int, int]] = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            out[name] = (int(module.in_features), int(module.out_features), 1)
        elif isinstance(module, Conv1D):
            out[name] = (int(module.weight.shape[0]), int(module.nf), 1)
    return out


def parameter_counts(model: Any) -> tuple[int, int]:
    """(trainable, total) parameters, counting a 4-bit weight by its unpacked shape and a ZeRO-3 shard whole."""
    trainable = total = 0
    for param in model.parameters():
        state = getattr(param, "quant_state", None)
        n = int(getattr(param, "ds_numel", 0) or (state.shape.numel() if state is not None else param.numel()))
        total += n
        trainable += n if param.requires_grad else 0
    return trainable, total


def wrap(spec: RunSpec, model: Any, writer: ev.EventWriter | None = None, base_dir: Path | None = None,
         pad_token_id: int | None = None) -> Any:
    """The model with the spec's LoRA adapters (a PeftModel); after the k-bit preparation for a quantized base.

    Target names are checked against the model's own linear layers first (a UserError listing them), and the
    trainable count peft reaches is compared with the one the planner's rules give (a warning if they differ)."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    lora = spec.model.lora
    assert lora is not None, "wrap() is only called for a spec with model.lora"
    family = str(getattr(model.config, "model_type", "") or "")
    linears = linear_layers(model)
    expected = peft_rules.trainable_params(linears, lora, family, spec.task)  # raises on unknown targets
    if peft_rules.quant_bits(spec.model) is not None:
        gc = peft_rules.kbit_gradient_checkpointing(spec.training)
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gc,
                                                gradient_checkpointing_kwargs={"use_reentrant": False})
    elif spec.training.get("gradient_checkpointing"):
        model.enable_input_require_grads()  # frozen embeddings: reentrant checkpointing needs an input with grad
    if base_dir is not None and writer is not None and getattr(spec.model, "init", "pretrained") == "random":
        # a random init cannot be rebuilt from the spec: keep the base, so `ftui export --merge` can merge into it
        if model.config.pad_token_id is None and pad_token_id is not None:
            model.config.pad_token_id = pad_token_id
        model.save_pretrained(base_dir)
    model = get_peft_model(model, LoraConfig(**peft_rules.lora_config_kwargs(lora, family, spec.task)))
    trainable, total = parameter_counts(model)
    if writer:
        bits = peft_rules.quant_bits(spec.model)
        base = f"{bits}-bit base" if bits else "frozen base"
        writer.emit(ev.MESSAGE, level="info", text=f"LoRA r={lora.r}: {trainable:,} of {total:,} parameters train "
                    f"({100 * trainable / max(total, 1):.2f}%), {base}")
        if trainable != expected:
            writer.emit(ev.MESSAGE, level="warning",
                        text=f"peft trains {trainable:,} parameters where ftui's plan counts {expected:,}: the memory "
                             "plan of this run is off by the difference (runners/peft_rules.py)")
    return model
