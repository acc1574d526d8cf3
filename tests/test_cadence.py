"""Cadence: steps counted like the Trainer, fractions resolved, checked by the real TrainingArguments."""
from __future__ import annotations

from pathlib import Path

import pytest

from runners.errors import UserError
from runners.plan import cadence
from runners.spec import from_dict

DEMO_MODEL = Path(__file__).resolve().parent.parent / "assets" / "demo" / "model"


def _spec(**training):
    return from_dict({"task": "seq-cls", "training": {"per_device_train_batch_size": 8, **training}})


def test_total_steps_matches_trainer_formula() -> None:
    # 1000 samples, 2 processes, batch 8, accumulation 4: ceil(ceil(500/8)/4) = 16 per epoch
    assert cadence.total_steps(1000, 8, 4, 3, 2) == (48, 16)
    assert cadence.total_steps(1000, 8, 4, 2.5, 2) == (40, 16)
    assert cadence.total_steps(10, 8, 1, 1, 1) == (2, 2)
    assert cadence.total_steps(1000, 8, 1, 3, 1, max_steps=7) == (7, 125)


def test_suggestion_is_about_ten_evals_and_saves_on_evals() -> None:
    cad = cadence.suggest(_spec(num_train_epochs=3), 10_000, 1)
    t = cad.training_arguments
    assert cad.total_steps == 3750
    assert t["logging_steps"] == 1 and t["eval_strategy"] == t["save_strategy"] == "steps"
    assert t["save_steps"] % t["eval_steps"] == 0
    assert 9 <= cad.evaluations <= 11 and 1 <= cad.saves <= 3
    assert t["load_best_model_at_end"] and t["metric_for_best_model"] == "eval_accuracy"
    assert cadence.validate_with_transformers(t) is None


def test_fractions_are_checked_after_resolving() -> None:
    """eval 0.02 / save 0.1 pass the Trainer's own check but resolve to 7 and 34 at 333 steps."""
    spec = _spec(eval_steps=0.02, save_steps=0.1, max_steps=333, load_best_model_at_end=True,
                 eval_strategy="steps", save_strategy="steps")
    assert cadence.resolve_step(0.02, 333) == 7 and cadence.resolve_step(0.1, 333) == 34  # ceil(6.66), ceil(33.3)
    assert cadence.validate_with_transformers(dict(spec.training)) is None  # the Trainer accepts it
    with pytest.raises(UserError, match="resolves to 34 and eval_steps to 7"):
        cadence.suggest(spec, 1000, 1)


def test_transformers_refusal_text_is_reported() -> None:
    error = cadence.validate_with_transformers({"eval_strategy": "steps", "eval_steps": 10, "save_strategy": "steps",
                                                "save_steps": 15, "load_best_model_at_end": True})
    assert error and "multiple of the evaluation steps" in error


def test_smoke_test_preset() -> None:
    spec = from_dict({"cadence": {"smoke_test": True}, "training": {"per_device_train_batch_size": 10}})
    cad = cadence.suggest(spec, 5000, 1)
    assert cad.training_arguments["save_strategy"] == "no"
    assert cad.training_arguments["load_best_model_at_end"] is False
    assert cad.steps_per_epoch == 10  # 100 samples / batch 10


def test_simpletransformers_counts_per_gpu_and_epoch_evals() -> None:
    st = cadence.simpletransformers_cadence(1000, 8, 1, 2, n_evals=10)
    assert st["total_steps"] == 250  # ceil(1000 / 8) = 125 steps per epoch, 2 epochs
    assert st["evaluate_during_training_steps"] == 25  # 250 steps / 10 evaluations
    assert st["evaluations"] == 12  # 250 / 25 = 10 during training, plus one at each of the 2 epoch ends
    assert st["logging_steps"] == 2  # about 100 logs: 250 / 100 = 2.5, rounded half to even
    odd = cadence.simpletransformers_cadence(999, 8, 3, 1, n_evals=7)
    # ceil(999 / 8) = 125 batches, 125 // 3 = 41 optimizer steps (simpletransformers drops the remainder);
    # 41 / 7 = 5.86 -> every 6 steps, 41 // 6 = 6 evaluations + 1 at the epoch end; logs: round(0.41) -> at least 1
    assert (odd["total_steps"], odd["evaluate_during_training_steps"], odd["evaluations"], odd["logging_steps"]) == \
        (41, 6, 7, 1)


def test_training_arguments_keeps_user_values() -> None:
    spec = _spec(eval_steps=50, save_steps=100)
    merged = cadence.training_arguments(spec, 2000, 1)
    assert merged["eval_steps"] == 50 and merged["save_steps"] == 100
    assert merged["per_device_train_batch_size"] == 8


def test_step_counts_and_resolved_fractions_match_the_real_trainer(tmp_path) -> None:
    """The Trainer itself (transformers installed here) counts the same steps and resolves the same fractions."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments
    from transformers.trainer_callback import TrainerState
    from transformers.utils import logging

    logging.set_verbosity_error()
    model = BertForSequenceClassification(BertConfig.from_pretrained(str(DEMO_MODEL)))

    class Rows(torch.utils.data.Dataset):
        def __init__(self, n: int) -> None:
            self.n = n

        def __len__(self) -> int:
            return self.n

        def __getitem__(self, i: int) -> dict:
            return {"input_ids": torch.tensor([1, 2, 3]), "labels": torch.tensor(0)}

    for n, batch, accum, epochs, max_steps in ((1001, 8, 3, 2.5, -1), (10, 8, 1, 1, -1), (333, 4, 5, 3, -1),
                                               (5000, 16, 2, 1, 77)):
        args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, per_device_train_batch_size=batch,
                                 gradient_accumulation_steps=accum, num_train_epochs=epochs, max_steps=max_steps,
                                 report_to="none", eval_steps=0.07, save_steps=0.21, logging_steps=0.013)
        trainer = Trainer(model=model, args=args, train_dataset=Rows(n))
        _, per_epoch, *_, real_total = trainer.set_initial_training_values(args, trainer.get_train_dataloader())
        ours = cadence.total_steps(n, batch, accum, epochs, 1, max_steps if max_steps > 0 else None)
        assert ours == (real_total, per_epoch), (n, batch, accum, epochs, max_steps)
        state = TrainerState()
        state.compute_steps(args, real_total)
        assert [cadence.resolve_step(v, real_total) for v in (0.013, 0.07, 0.21)] == \
            [state.logging_steps, state.eval_steps, state.save_steps]
