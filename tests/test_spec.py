"""Run spec: loading, validation errors that name the key, redaction of secrets."""
from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from runners import spec as specmod
from runners.errors import UserError

ASSETS = Path(__file__).resolve().parent.parent / "assets"


def test_demo_spec_loads_and_resolves_paths() -> None:
    spec = specmod.load(ASSETS / "specs" / "demo.yaml")
    assert spec.runner == "hf_trainer"
    assert Path(spec.dataset.train).is_file()
    assert (Path(spec.model.name_or_path) / "config.json").is_file()
    assert spec.training["per_device_train_batch_size"] == 32


def test_unknown_top_level_key_names_closest() -> None:
    with pytest.raises(UserError, match=r"unknown top-level key 'trainig'.*Did you mean 'training'"):
        specmod.from_dict({"trainig": {}})


def test_unknown_section_key_names_closest() -> None:
    with pytest.raises(UserError, match=r"'dataset.max_seq_len'.*Did you mean 'max_seq_length'"):
        specmod.from_dict({"dataset": {"max_seq_len": 128}})


def test_unknown_training_argument_names_closest() -> None:
    with pytest.raises(UserError, match=r"training.evaluation_strategy.*Did you mean 'eval_strategy'"):
        specmod.from_dict({"training": {"evaluation_strategy": "steps"}})


def test_sentence_transformers_training_extras_accepted() -> None:
    spec = specmod.from_dict({"runner": "sentence_transformers", "task": "embedding",
                              "training": {"batch_sampler": "no_duplicates"}})
    assert spec.training["batch_sampler"] == "no_duplicates"


@pytest.mark.parametrize("bad", [0, -1, 1.5, "4"])
def test_batch_size_must_be_positive_int(bad: object) -> None:
    with pytest.raises(UserError, match="per_device_train_batch_size must be a whole number"):
        specmod.from_dict({"training": {"per_device_train_batch_size": bad}})


def test_bad_choice_lists_choices() -> None:
    with pytest.raises(UserError, match=r"hardware.strategy 'zero4'.*Choose one of"):
        specmod.from_dict({"hardware": {"strategy": "zero4"}})


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        specmod.load(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML"):
        specmod.load(bad)


def test_secrets_are_redacted_on_dump(tmp_path: Path) -> None:
    token = "hf_" + "a" * 34
    spec = specmod.from_dict({"training": {"hub_token": token, "push_to_hub": False},
                              "runner_args": {"wandb_kwargs": {"api_key": "k" * 40, "note": f"uses {token}"}}})
    path = tmp_path / "spec.yaml"
    specmod.save(spec, path)
    text = path.read_text()
    assert token not in text and "k" * 40 not in text
    data = yaml.safe_load(text)
    assert data["training"]["hub_token"] == specmod.REDACTED
    assert data["runner_args"]["wandb_kwargs"]["note"] == f"uses {specmod.REDACTED}"
    assert data["training"]["push_to_hub"] is False


def test_round_trip_through_yaml(tmp_path: Path) -> None:
    spec = specmod.load(ASSETS / "specs" / "demo.yaml")
    path = tmp_path / "spec.yaml"
    specmod.save(spec, path)
    again = specmod.load(path)
    assert again == spec
    assert again.spec_hash() == spec.spec_hash()


def test_training_fields_asset_matches_installed_transformers() -> None:
    """The field list that lets the spec validate without importing transformers must be current."""
    from transformers import TrainingArguments

    installed = {f.name for f in dataclasses.fields(TrainingArguments) if f.init}
    assert installed <= specmod.training_argument_fields()
    shipped = set(yaml.safe_load((ASSETS / "training_arguments_fields.json").read_text())["training_arguments"])
    assert shipped == installed


def test_training_types_asset_matches_installed_transformers() -> None:
    """The shipped types and enum choices are the installed TrainingArguments' (regenerate with
    `python -m runners.spec_types`)."""
    from runners import spec_types

    shipped = json.loads((ASSETS / "training_arguments_fields.json").read_text())
    generated = spec_types.generate_fields()
    assert shipped["types"] == generated["types"]
    assert shipped["choices"] == generated["choices"]
    assert set(shipped["types"]) == specmod.training_argument_fields()
    assert shipped["types"]["learning_rate"] == "float" and shipped["types"]["fp16"] == "bool"
    assert "steps" in shipped["choices"]["eval_strategy"]


@pytest.mark.parametrize(("section", "value", "key", "expected"), [
    ("cadence", {"n_evals": "ten"}, "cadence.n_evals", "a whole number"),
    ("model", {"lora": {"r": "big"}}, "model.lora.r", "a whole number"),
    ("model", {"lora": {"target_modules": "q_proj"}}, "model.lora.target_modules", "a list of strings"),
    ("training", {"learning_rate": "fast"}, "training.learning_rate", "a number"),
    ("training", {"fp16": "no"}, "training.fp16", "true or false"),
    ("training", {"per_device_train_batch_size": True}, "training.per_device_train_batch_size", "a whole number"),
    ("training", {"max_steps": 10.5}, "training.max_steps", "a whole number"),
    ("training", {"report_to": 3}, "training.report_to", "empty \\(null\\) or a string or a list of strings"),
    ("hardware", {"gpus": [0, "1"]}, "hardware.gpus", "a list of whole numbers"),
    ("hardware", {"gpu_memory_gib": "80G"}, "hardware.gpu_memory_gib", "a number"),
    ("dataset", {"max_train_samples": 1.5}, "dataset.max_train_samples", "a whole number"),
    ("dataset", {"text_column": 5}, "dataset.text_column", "a string"),
    ("tracking", {"wandb_project": False}, "tracking.wandb_project", "a string"),
])
def test_type_errors_name_key_value_and_expected_type(section: str, value: dict, key: str, expected: str) -> None:
    with pytest.raises(UserError, match=rf"{re.escape(key)} must be {expected}.*, got ") as err:
        specmod.from_dict({section: value})
    leaf = value
    while isinstance(leaf, dict):
        leaf = next(iter(leaf.values()))
    assert repr(leaf) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("training", [
    {"num_train_epochs": 0}, {"num_train_epochs": -1}, {"num_train_epochs": 0, "max_steps": -1},
    {"learning_rate": 0}, {"learning_rate": -0.001},
])
def test_nothing_to_train_or_no_learning_is_refused(training: dict) -> None:
    with pytest.raises(UserError, match=r"training\.(num_train_epochs|learning_rate) must be positive"):
        specmod.from_dict({"training": training})


def test_typed_values_users_write_are_accepted() -> None:
    spec = specmod.from_dict({"training": {
        "learning_rate": 1, "num_train_epochs": 0, "max_steps": 20, "eval_strategy": "steps", "eval_steps": 0.1,
        "optim": "adamw_torch", "lr_scheduler_type": "cosine", "report_to": "wandb", "include_num_input_tokens_seen": True,
        "debug": "", "deepspeed": {"zero_optimization": {"stage": 2}}, "hub_token": None},
        "tracking": {"report_to": "tensorboard"}, "model": {"lora": {"r": 8, "dropout": 0}, "num_labels": None}})
    assert spec.tracking.report_to == ["tensorboard"] and spec.model.lora is not None and spec.model.lora.r == 8
    assert specmod.from_dict({"training": {"report_to": ["wandb", "tensorboard"]}}).training["report_to"][0] == "wandb"


def test_enum_fields_take_their_strings_only() -> None:
    with pytest.raises(UserError, match=r"training.eval_strategy 'step'.*Did you mean 'steps'.*no, steps, epoch"):
        specmod.from_dict({"training": {"eval_strategy": "step"}})
    with pytest.raises(UserError, match=r"training.lr_scheduler_type 'cosin'.*Did you mean 'cosine'"):
        specmod.from_dict({"training": {"lr_scheduler_type": "cosin"}})


def test_yaml_exponent_numbers_are_numbers_quoted_ones_are_not(tmp_path: Path) -> None:
    """PyYAML reads 5e-5 as a string (YAML 1.1); the spec loader reads it as the number users mean."""
    path = tmp_path / "spec.yaml"
    path.write_text("training:\n  learning_rate: 5e-5\n  weight_decay: 1E-2\n")
    spec = specmod.load(path)
    assert spec.training["learning_rate"] == 5e-5 and spec.training["weight_decay"] == 0.01
    path.write_text("training:\n  learning_rate: '5e-5'\n")
    with pytest.raises(UserError, match="training.learning_rate must be a number, got '5e-5'"):
        specmod.load(path)


def test_validation_imports_no_training_library() -> None:
    code = ("import sys; from runners import spec; spec.from_dict({'training': {'learning_rate': 1e-3, "
            "'eval_strategy': 'steps'}, 'cadence': {'n_evals': 3}}); "
            "bad = [m for m in ('transformers', 'torch') if m in sys.modules]; assert not bad, bad")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ASSETS.parent)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(("yaml_text", "needle"), [
    ("cadence:\n  n_evals: ten\n", "cadence.n_evals must be a whole number, got 'ten'"),
    ("training:\n  fp16: 'no'\n", "training.fp16 must be true or false, got 'no'"),
    ("training:\n  num_train_epochs: 0\n", "training.num_train_epochs must be positive"),
])
def test_cli_type_errors_are_one_paragraph_exit_2(tmp_path: Path, yaml_text: str, needle: str) -> None:
    from tests.conftest import ftui

    path = tmp_path / "spec.yaml"
    path.write_text("model:\n  name_or_path: " + str(ASSETS / "demo" / "model") + "\n" + yaml_text)
    proc = ftui("--plan", str(path), "--json")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert needle in proc.stderr and "Traceback" not in proc.stderr


def test_plan_flags_are_validated_like_a_spec() -> None:
    from tui.commands import plan as cmd_plan

    parser = cmd_plan.build_parser()
    spec = cmd_plan.spec_from_args(parser.parse_args(["--model_name_or_path", "gpt2", "--num_train_epochs", "2",
                                                      "--lora_r", "8", "--fp16", "--per_device_train_batch_size", "4"]))
    assert spec.training["num_train_epochs"] == 2.0 and spec.training["fp16"] is True and spec.model.lora.r == 8
    with pytest.raises(UserError, match="training.num_train_epochs must be positive"):
        cmd_plan.spec_from_args(parser.parse_args(["--model_name_or_path", "gpt2", "--num_train_epochs", "0"]))
