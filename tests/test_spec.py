"""Run spec: loading, validation errors that name the key, redaction of secrets."""
from __future__ import annotations

import dataclasses
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
