"""Merging a LoRA adapter into its base: the full model a plain ``from_pretrained`` loads, without peft.

The base is rebuilt exactly as the runner built it: the base the run saved in ``output/base/`` when there is
one (the LoRA runner saves it for ``model.init: random`` runs, whose random init cannot be rebuilt), else
``model.name_or_path`` from the spec, with the labels the runner gave it (num_labels, id2label and label2id
from the run's data by the runner's rule; the adapter's classifier head size when the data is gone) and the
tokenizer's pad token when the config has none. It is loaded in float32, the adapter applied with
``PeftModel.from_pretrained`` and folded in with ``merge_and_unload``, and the result saved in the spec's
torch_dtype (the base's own dtype for ``auto``). torch, transformers and peft are imported here only.
"""
from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from runners import data, rundir
from runners.errors import UserError
from runners.plan.models import load_tokenizer
from runners.results.checkpoints import ADAPTER_CONFIG, BASE_DIR, Checkpoint, kind_of
from runners.spec import RunSpec

AUTO_CLASSES = {"seq-cls": "AutoModelForSequenceClassification", "causal-lm": "AutoModelForCausalLM",
                "seq2seq": "AutoModelForSeq2SeqLM", "token-cls": "AutoModelForTokenClassification"}
PEFT_CLASSES = {"seq-cls": "AutoPeftModelForSequenceClassification", "causal-lm": "AutoPeftModelForCausalLM",
                "seq2seq": "AutoPeftModelForSeq2SeqLM", "token-cls": "AutoPeftModelForTokenClassification"}


def saved_base(run_dir: Path) -> Path | None:
    """``output/base/`` when the run saved its base model there (config and weights)."""
    path = run_dir / rundir.OUTPUT_DIR / BASE_DIR
    return path if kind_of(path) == "full" else None


def base_for(run_dir: Path, spec: RunSpec) -> tuple[str, str]:
    """(what to load the base from, where that came from); a UserError when the base cannot be rebuilt."""
    saved = saved_base(run_dir)
    if saved is not None:
        return str(saved), "the base model the run saved"
    if spec.model.init == "random":
        raise UserError(
            f"Run {run_dir.name} trained its adapter on a random init of {spec.model.name_or_path} (model.init: random) "
            f"and did not save that base ({run_dir / rundir.OUTPUT_DIR / BASE_DIR} is missing), so --merge cannot rebuild "
            "it: a new random init would give another model. Export the adapter without --merge, or train on pretrained "
            "weights (model.init: pretrained), or with a runner that saves the base of a random-init LoRA run.")
    if spec.task not in AUTO_CLASSES:
        raise UserError(f"--merge supports tasks {', '.join(AUTO_CLASSES)}; run {run_dir.name} is '{spec.task}'. "
                        "Export the adapter without --merge.")
    return spec.model.name_or_path, "model.name_or_path of the run's spec"


def _labels_from_data(spec: RunSpec) -> dict[str, Any]:
    """num_labels/id2label/label2id as runners/train/hf.py gives them to the model (the same rule)."""
    train_df, eval_df = data.load_splits(spec)
    roles = data.detect_columns(train_df, spec.dataset, spec.task, spec.dataset.train)
    labels = data.label_list(train_df, eval_df, roles["label"])
    if all(isinstance(v, float) and not float(v).is_integer() for v in labels[:50]) and len(labels) > 20:
        return {"num_labels": 1}
    return {"num_labels": len(labels), "id2label": {i: str(v) for i, v in enumerate(labels)},
            "label2id": {str(v): i for i, v in enumerate(labels)}}


def head_size(adapter_dir: Path) -> int | None:
    """The classifier head's output size from the adapter's saved head (peft's modules_to_save)."""
    from safetensors import safe_open

    weights = adapter_dir / "adapter_model.safetensors"
    if not weights.is_file():
        return None
    heads = json.loads((adapter_dir / ADAPTER_CONFIG).read_text()).get("modules_to_save") or []
    with safe_open(str(weights), "pt") as fh:
        keys = sorted(k for k in fh.keys() if "lora_" not in k and k.endswith(".weight")
                      and any(f".{h}." in f".{k}" for h in heads))
        shapes = [fh.get_slice(k).get_shape() for k in keys]
    shapes = [s for s in shapes if len(s) == 2]
    return int(shapes[-1][0]) if shapes else None


def head_kwargs(spec: RunSpec, adapter_dir: Path, notes: list[str]) -> dict[str, Any]:
    """The config overrides a seq-cls base got from the runner (none for other tasks)."""
    if spec.task != "seq-cls":
        return {}
    try:
        return _labels_from_data(spec)
    except (UserError, OSError, ValueError, KeyError) as exc:
        size = head_size(adapter_dir)
        if size is None:
            raise UserError(f"Cannot tell how many labels the base model needs: the run's data cannot be read ({exc}) "
                            f"and the adapter in {adapter_dir} saves no classifier head. Restore the dataset the "
                            "spec names, or export without --merge.") from exc
        notes.append(f"the run's data cannot be read ({str(exc)[:120]}): {size} labels taken from the adapter's "
                     "classifier head, named LABEL_0.. in the merged config")
        return {"num_labels": size}


def _save_dtype(spec: RunSpec, config: Any) -> Any:
    import torch

    name = spec.model.torch_dtype
    if name == "auto":
        own = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
        name = str(own).removeprefix("torch.") if own is not None else "float32"
    return getattr(torch, name) if name in ("bfloat16", "float16") else torch.float32


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """No progress bars or library chatter on the CLI's terminal (restored afterwards)."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def merge(ckpt: Checkpoint, run_dir: Path, spec: RunSpec, out: Path, notes: list[str]) -> dict[str, Any]:
    """Write the base with the adapter merged into ``out`` (save_pretrained); returns facts for the metadata."""
    with _quiet():
        return _merge(ckpt, run_dir, spec, out, notes)


def _merge(ckpt: Checkpoint, run_dir: Path, spec: RunSpec, out: Path, notes: list[str]) -> dict[str, Any]:
    import torch
    import transformers
    from peft import PeftModel
    from transformers import AutoTokenizer

    base, origin = base_for(run_dir, spec)
    saved = saved_base(run_dir) is not None
    kwargs = {} if saved else head_kwargs(spec, ckpt.path, notes)
    auto = getattr(transformers, AUTO_CLASSES.get(spec.task, "AutoModelForCausalLM"))
    try:
        model = auto.from_pretrained(base, dtype=torch.float32, **kwargs)
    except (OSError, ValueError) as exc:
        raise UserError(f"Cannot load the base model '{base}' ({origin}) to merge into: {str(exc).splitlines()[0]}. It "
                        "must be a local folder, in the Hugging Face cache, or reachable on the hub (set HF_TOKEN for "
                        "a gated model).") from exc
    if model.config.pad_token_id is None:  # the runner's rule: the tokenizer's pad token
        has_tokenizer = (ckpt.path / "tokenizer_config.json").is_file()
        tokenizer = AutoTokenizer.from_pretrained(str(ckpt.path)) if has_tokenizer else load_tokenizer(spec)
        model.config.pad_token_id = tokenizer.pad_token_id
    try:
        peft_model = PeftModel.from_pretrained(model, str(ckpt.path))
    except (RuntimeError, ValueError, KeyError) as exc:
        raise UserError(f"The adapter in {ckpt.path} does not fit the base model '{base}' ({origin}): "
                        f"{str(exc).strip().splitlines()[0][:300]}. The base must be the model the run trained on.") from exc
    merged = peft_model.merge_and_unload()
    merged.eval()
    dtype = _save_dtype(spec, model.config)
    if dtype != torch.float32:
        merged = merged.to(dtype)
    merged.save_pretrained(str(out))
    return {"base_model": base, "base_from": origin, "auto_class": auto.__name__, "dtype": str(dtype).removeprefix("torch."),
            **({"num_labels": kwargs["num_labels"]} if "num_labels" in kwargs else {})}
