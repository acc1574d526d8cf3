"""The instruction-tuning runner: trl's SFTTrainer on conversations, prompt-completion pairs or plain text.

Runs in every rank of the training job. The data's format comes from ``runners.chat_data`` (the same detection
the preflight and the planner use); conversations go through the tokenizer's chat template, or the spec's
(``dataset.chat_template``); loss covers the completions (``dataset.completion_only_loss``) or the assistant turns
(``dataset.assistant_only_loss``) only when asked; ``dataset.packing`` packs rows into ``max_seq_length`` blocks
(trl's best-fit decreasing) and ``dataset.max_seq_length`` is trl's ``max_length``. ``model.lora`` trains a LoRA
adapter (peft), which is what the checkpoints then hold. Events, stop/checkpoint requests and the cadence are the
other runners' (``runners.train.callback``, ``runners.plan.cadence``); the cadence counts the rows trl trains on
(packed rows when packing), known once trl has prepared the data.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from runners import chat_data, data, peft_rules, rundir
from runners import events as ev
from runners.errors import UserError
from runners.plan import cadence
from runners.plan.models import load_tokenizer, pretrained
from runners.spec import RunSpec
from runners.train import adapters
from runners.train.callback import make_event_callback
from runners.train.common import RankInfo, configure_tracking, trainer_plumbing

STEP_KEYS = ("logging_steps", "eval_steps", "save_steps")


def load_model(spec: RunSpec, writer: ev.EventWriter | None, base_dir: Path | None = None,
               pad_token_id: int | None = None) -> Any:
    """The causal LM: its weights (model.init pretrained; quantized with model.load_in_4bit/8bit) or a random init
    from its config (said in the events); with model.lora, wrapped in LoRA adapters (runners/train/adapters.py)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    kwargs: dict[str, Any] = {}
    if spec.model.torch_dtype != "auto":
        import torch

        kwargs["dtype"] = getattr(torch, spec.model.torch_dtype)
    name = spec.model.name_or_path
    if pretrained(spec):
        model = AutoModelForCausalLM.from_pretrained(name, attn_implementation=spec.model.attn_implementation,
                                                     **kwargs, **adapters.load_kwargs(spec))
    else:
        if peft_rules.quant_bits(spec.model) is not None:
            raise UserError("model.load_in_4bit/8bit quantizes pretrained weights, but model.init is random (no weights "
                            "to quantize). Remove the quantization, or train from the weights (model.init: pretrained).")
        config = AutoConfig.from_pretrained(name)
        config._attn_implementation = spec.model.attn_implementation
        if writer:
            writer.emit(ev.MESSAGE, level="warning", text=f"{name}: training from a random init (model.init: random)")
        model = AutoModelForCausalLM.from_config(config, **kwargs)
    return adapters.wrap(spec, model, writer, base_dir, pad_token_id) if spec.model.lora else model


def datasets_for(train_df: Any, eval_df: Any, layout: chat_data.Layout) -> tuple[Any, Any]:
    """The rows as trl takes them (messages / prompt + completion / text columns)."""
    from datasets import Dataset

    def build(frame: Any) -> Any:
        return Dataset.from_list([chat_data.example(row, layout) for row in frame.to_dict("records")])

    return build(train_df), build(eval_df)


def use_template(spec: RunSpec, tokenizer: Any, layout: chat_data.Layout) -> str | None:
    """The chat template the run formats conversations with: the spec's (set on the tokenizer, so checkpoints
    keep it) or the tokenizer's; a UserError when conversations have none."""
    own = chat_data.spec_template(spec.dataset.chat_template)
    if own:
        tokenizer.chat_template = own
    template = tokenizer.chat_template
    if layout.format == "messages" and not template:
        raise UserError(f"The tokenizer of '{spec.model.tokenizer or spec.model.name_or_path}' has no chat template, and "
                        f"dataset '{spec.dataset.train}' is in the messages format. Set dataset.chat_template to a "
                        "Jinja chat template (text or a .jinja file), or give prompt-completion or text data.")
    return template if isinstance(template, str) else None


def sft_arguments(spec: RunSpec, run_dir: Path, num_train: int, world_size: int) -> dict[str, Any]:
    """The SFTConfig kwargs: the spec's training values, the suggested cadence, trl's data options from the dataset
    section, and ftui's plumbing. trl's defaults that change memory (gradient checkpointing and bf16 on) give way to
    TrainingArguments' (off), which the plan assumes, unless the spec sets them."""
    args = cadence.training_arguments(spec, num_train, world_size)
    args.update(data_arguments(spec))
    if "gradient_checkpointing" not in args:  # its new name, so transformers does not warn about the old one
        args.setdefault("activation_checkpointing", False)
    args.setdefault("bf16", False)
    return trainer_plumbing(spec, run_dir, world_size, args)


def data_arguments(spec: RunSpec) -> dict[str, Any]:
    """trl's data options from the dataset section: how rows are cut, packed and masked for the loss (``ftui eval``
    prepares a held-out file with the same)."""
    ds = spec.dataset
    return {"max_length": ds.max_seq_length, "packing": ds.packing, "completion_only_loss": ds.completion_only_loss,
            "assistant_only_loss": ds.assistant_only_loss, "dataset_text_field": "text"}


def recount_cadence(spec: RunSpec, args: Any, num_rows: int, world_size: int) -> None:
    """The cadence again from the rows trl prepared (packed rows when packing, rows left after truncation drops):
    the step settings the spec leaves unset follow that count."""
    suggested = cadence.training_arguments(spec, num_rows, world_size)
    for key in STEP_KEYS:
        if key not in spec.training and key in suggested:
            setattr(args, key, suggested[key])


def make_trainer_class() -> Any:
    from trl import SFTTrainer

    class FtuiSFTTrainer(SFTTrainer):
        """Adds perplexity to evaluations (from the loss)."""

        def evaluation_loop(self, *args: Any, **kwargs: Any) -> Any:
            output = super().evaluation_loop(*args, **kwargs)
            prefix = kwargs.get("metric_key_prefix", "eval")
            metrics = output.metrics
            loss = metrics.get(f"{prefix}_loss") if metrics is not None else None
            if metrics is not None and loss is not None:
                metrics[f"{prefix}_perplexity"] = math.exp(min(loss, 50.0))
            return output

    return FtuiSFTTrainer


def build_trainer(spec: RunSpec, run_dir: Path, writer: ev.EventWriter | None = None) -> Any:
    """The SFTTrainer of a spec, with its data prepared (tokenized, masked, packed) and the cadence counted from it,
    not yet trained: what :func:`train` runs and what the tests look into."""
    from datasets.utils.logging import disable_progress_bar
    from trl import SFTConfig

    disable_progress_bar()  # trl's preparation steps would draw a dozen progress bars into stdout.log
    rank = RankInfo.from_env()
    train_df, eval_df = data.load_splits(spec)
    layout = chat_data.Layout.of(data.roles_for(train_df, spec, spec.dataset.train))
    train_ds, eval_ds = datasets_for(train_df, eval_df, layout)
    tokenizer = load_tokenizer(spec)
    use_template(spec, tokenizer, layout)
    model = load_model(spec, writer, run_dir / rundir.OUTPUT_DIR / rundir.BASE_DIR, tokenizer.pad_token_id)
    args = SFTConfig(**sft_arguments(spec, run_dir, len(train_ds), rank.world_size))
    try:
        trainer = make_trainer_class()(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                                       processing_class=tokenizer)
    except ValueError as exc:  # trl's refusals of the data or the template: the user's to fix
        raise UserError(f"trl's SFTTrainer refuses this setup: {exc}") from exc
    recount_cadence(spec, trainer.args, len(trainer.train_dataset), rank.world_size)
    return trainer


def train(spec: RunSpec, run_dir: Path) -> None:
    from transformers import set_seed

    rank = RankInfo.from_env()
    set_seed(int(spec.training.get("seed", 42)))
    configure_tracking(spec, run_dir)
    writer = ev.EventWriter(run_dir / ev.EVENTS_FILE, rank=rank.rank) if rank.is_main else None
    trainer = build_trainer(spec, run_dir, writer)
    callback = make_event_callback(run_dir, spec.spec_hash(), spec.runner, spec.task, len(trainer.train_dataset))
    trainer.add_callback(callback)
    if writer is not None:
        rows = len(trainer.train_dataset)
        packed = f"packed into {rows:,} rows of {spec.dataset.max_seq_length} tokens" if spec.dataset.packing else \
            f"{rows:,} rows of at most {spec.dataset.max_seq_length} tokens"
        writer.emit(ev.MESSAGE, level="info", text=f"sft: trl prepared the {len(trainer.train_dataset):,} training rows "
                                                  f"({packed}); the cadence counts them")
        writer.close()
    result = trainer.train(resume_from_checkpoint=spec.training.get("resume_from_checkpoint"))
    trainer.save_model(str(run_dir / "output" / "final"))
    callback.finish(result.metrics, trainer.state.global_step)
