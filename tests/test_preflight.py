"""The preflight catches what would crash a run in its first minute: each case is the real CLI on real files,
refused with exit 2, a message naming the input and the fix, and no run dir left behind."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from runners import spec as specmod
from tests.conftest import DEMO_DATA, DEMO_MODEL, ftui, tiny_model_dir, tiny_spec


def _spec(tmp_path: Path, name: str = "spec.yaml", **overrides: Any) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(tiny_spec(**overrides)))
    return path


def _refused(tmp_path: Path, spec: Path, *needles: str, **kwargs: Any) -> str:
    runs = tmp_path / "runs"
    proc = ftui("run", str(spec), "--headless", "--runs-dir", str(runs), **kwargs)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr
    for needle in needles:
        assert needle in proc.stderr, (needle, proc.stderr)
    assert not runs.exists() or not any(runs.iterdir()), "a refused run leaves no run dir"
    return proc.stderr


def _lines() -> list[str]:
    return DEMO_DATA.read_text().splitlines()


# -- the whole dataset, not its first rows ------------------------------------------------------------------------
def _csv_with(tmp_path: Path, row: int, line: str | bytes) -> Path:
    """The demo CSV with data row ``row`` (1 = first after the header) replaced, far past the first 50."""
    lines = [x.encode() for x in _lines()]
    lines[row] = line if isinstance(line, bytes) else line.encode()
    path = tmp_path / "data.csv"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def _jsonl_with(tmp_path: Path, line_no: int, line: str) -> Path:
    import pandas as pd

    rows = [json.dumps(r) for r in pd.read_csv(DEMO_DATA).to_dict("records")]
    rows[line_no - 1] = line
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.mark.parametrize("make, needles", [
    (lambda p: _csv_with(p, 1500, "a lamp, with a comma,1"), ["ragged row", "data row 1500", "3 fields"]),
    (lambda p: _csv_with(p, 2000, b"caf\xe9 latin-1 review,1"), ["not UTF-8", "line 2001", "iconv"]),
    (lambda p: _csv_with(p, 900, ",1"), ["column 'text'", "empty in 1 of", "data row 900", "dataset.drop_empty"]),
    (lambda p: _csv_with(p, 1200, "a review with no label,"), ["column 'label'", "data row 1200"]),
    (lambda p: _jsonl_with(p, 700, '{"text": "an unfinished line", "label": '), ["malformed JSON line", "line 700"]),
    (lambda p: _jsonl_with(p, 800, '{"text": {"not": "text"}, "label": 1}'), ["holds dict values", "line 800"]),
], ids=["ragged-csv", "undecodable", "empty-text", "empty-label", "malformed-jsonl", "dict-text"])
def test_whole_dataset_is_checked(tmp_path: Path, make, needles: list[str]) -> None:
    data = make(tmp_path)
    _refused(tmp_path, _spec(tmp_path, dataset={"train": str(data)}), f"Dataset '{data}'", *needles)


def test_text_column_of_numbers_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "numbers.csv"
    path.write_text("text,label\n" + "".join(f"{i * 7},{i % 2}\n" for i in range(300)))
    _refused(tmp_path, _spec(tmp_path, dataset={"train": str(path)}), "column 'text'", "holds only numbers",
             "dataset.text_column")


def test_drop_empty_policy_is_counted_and_applied(tmp_path: Path, capsys) -> None:
    from runners import data

    lines = _lines()
    for row in (100, 700, 2300):
        lines[row] = ",1" if row != 700 else "a text without its label,"
    path = tmp_path / "gaps.csv"
    path.write_text("\n".join(lines) + "\n")
    spec = specmod.from_dict(tiny_spec(dataset={"train": str(path), "drop_empty": True, "max_train_samples": None,
                                                "max_eval_samples": None}))
    data.preflight(spec)
    assert "dropping 3 of 2,400 rows" in capsys.readouterr().err
    train, evaluation = data.load_splits(spec)
    assert len(train) + len(evaluation) == 2397
    assert train["text"].notna().all() and train["label"].notna().all() and evaluation["label"].notna().all()


# -- the tokenizer ------------------------------------------------------------------------------------------------
def test_tokenizer_with_an_empty_vocabulary_is_refused(tmp_path: Path) -> None:
    """Seen on a GPU machine: a Qwen2 config next to a BERT vocab loads a tokenizer with no vocabulary, and the run
    crashed at step 0 with "cannot reshape tensor of 0 elements"."""
    model = tiny_model_dir(tmp_path, "model", {"model_type": "qwen2", "vocab_size": 90, "hidden_size": 32,
                                               "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
                                               "intermediate_size": 64, "max_position_embeddings": 64}, ("vocab.txt",))
    _refused(tmp_path, _spec(tmp_path, task="causal-lm", model={"name_or_path": str(model)}),
             f"The tokenizer of '{model}'", "into no ids", "model.tokenizer")


def test_tokenizer_ids_past_the_embedding_table_are_refused(tmp_path: Path) -> None:
    config = json.loads((DEMO_MODEL / "config.json").read_text())
    model = tiny_model_dir(tmp_path, "model", {**config, "vocab_size": 10})
    _refused(tmp_path, _spec(tmp_path, model={"name_or_path": str(model)}), "vocab_size 10", "index out of range")


# -- the model's weights --------------------------------------------------------------------------------------------
def test_config_only_dir_needs_init_random(tmp_path: Path) -> None:
    spec = _spec(tmp_path, model={"name_or_path": str(DEMO_MODEL), "init": "pretrained"})
    _refused(tmp_path, spec, f"Model '{DEMO_MODEL}' has no weights", "model.init: random", "download the weights")


def test_bundled_config_without_the_hub_is_refused_at_once(tmp_path: Path) -> None:
    """Seen on a GPU machine: a DeepSpeed run of Llama-3.1-8B started and crashed 56 s later on the missing hub."""
    spec = _spec(tmp_path, task="causal-lm", model={"name_or_path": "meta-llama/Llama-3.1-8B", "init": "pretrained"},
                 hardware={"strategy": "zero2", "num_processes": 2})
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    err = _refused(tmp_path, spec, "Model 'meta-llama/Llama-3.1-8B' has no weights", "Hugging Face cache",
                   "HF_HUB_OFFLINE", "huggingface-cli download", "model.init: random", env=env)
    random = _spec(tmp_path, "random.yaml", task="causal-lm",
                   model={"name_or_path": "meta-llama/Llama-3.1-8B", "init": "random"})
    assert err and _refused(tmp_path, random, "bundled copy", env=env)
    # the hub allowed but unreachable (nothing listens there): refused within seconds, saying so
    unreachable = {k: v for k, v in env.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    _refused(tmp_path, spec, "the hub is not reachable", env={**unreachable, "HF_ENDPOINT": "http://127.0.0.1:9"})


def test_incomplete_sharded_download_is_refused(tmp_path: Path) -> None:
    model = tiny_model_dir(tmp_path, "model", json.loads((DEMO_MODEL / "config.json").read_text()))
    (model / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    (model / "model-00001-of-00002.safetensors").write_bytes(b"")
    _refused(tmp_path, _spec(tmp_path, model={"name_or_path": str(model), "init": "pretrained"}),
             "model-00002-of-00002.safetensors", "incomplete")


def test_weights_are_found_locally_and_in_the_cache(tmp_path: Path, monkeypatch) -> None:
    from runners.launch import preflight

    local = tiny_model_dir(tmp_path, "model", json.loads((DEMO_MODEL / "config.json").read_text()), ("vocab.txt",))
    assert preflight.local_weights(local)[0] is None
    (local / "model.safetensors").write_bytes(b"")
    assert preflight.local_weights(local)[0] == str(local / "model.safetensors")
    cache = tmp_path / "hub"
    snapshot = cache / "models--org--tiny" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (cache / "models--org--tiny" / "refs").mkdir()
    (cache / "models--org--tiny" / "refs" / "main").write_text("a" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    assert preflight.cached_weights("org/tiny")[0] is None
    (snapshot / "model.safetensors").write_bytes(b"")
    assert preflight.cached_weights("org/tiny")[0] == str(snapshot / "model.safetensors")


# -- absurd plans ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("overrides, needles", [
    ({"dataset": {"max_seq_length": 128}}, ["max_seq_length is 128", "learned position embeddings for 64"]),
    ({"dataset": {"max_seq_length": 100_000_000_000}}, ["100,000,000,000 tokens", "context parallelism"]),
    ({"hardware": {"strategy": "single", "num_processes": 8}}, ["strategy single", "num_processes is 8"]),
], ids=["past-learned-positions", "absurd-length", "single-with-8"])
def test_absurd_plans_are_refused(tmp_path: Path, overrides: dict, needles: list[str]) -> None:
    _refused(tmp_path, _spec(tmp_path, **overrides), *needles)


def test_rotary_model_past_its_context_is_a_warning(capsys) -> None:
    from runners.launch import preflight
    from runners.plan import models

    spec = specmod.from_dict({"model": {"name_or_path": "Llama-2-7b-hf"}, "task": "causal-lm",
                              "dataset": {"max_seq_length": 8192}})
    preflight.check_sequence(spec, models.resolve("Llama-2-7b-hf"))
    assert "above the 4,096 positions" in capsys.readouterr().err


# -- the runs dir ---------------------------------------------------------------------------------------------------
def _mount(target: Path, options: str) -> None:
    target.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip()})")


@pytest.mark.parametrize("kind", ["read-only", "full"])
def test_unwritable_runs_dir_is_refused(tmp_path: Path, kind: str) -> None:
    disk = tmp_path / "disk"
    _mount(disk, "size=1m,ro" if kind == "read-only" else "size=256k")
    try:
        if kind == "full":
            with (disk / "filler").open("wb", buffering=0) as fh, pytest.raises(OSError):
                while True:
                    fh.write(b"\0" * 4096)
        before = sorted(p.name for p in disk.iterdir())
        proc = ftui("run", str(_spec(tmp_path)), "--headless", "--runs-dir", str(disk))
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert f"Runs dir '{disk}' cannot take a new run" in proc.stderr and "--runs-dir" in proc.stderr, proc.stderr
        assert ("Read-only" if kind == "read-only" else "No space") in proc.stderr, proc.stderr
        assert sorted(p.name for p in disk.iterdir()) == before, "nothing left behind"
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_seq2seq_on_a_decoder_only_model_is_refused_before_launch(tmp_path: Path) -> None:
    """`ftui run` refuses what `ftui --plan` refuses: a gpt2 model cannot train seq2seq (no encoder-decoder)."""
    model = tiny_model_dir(tmp_path, "gpt", {"model_type": "gpt2", "vocab_size": 90, "n_embd": 32, "n_layer": 1,
                                             "n_head": 2, "n_positions": 64, "bos_token_id": 2, "eos_token_id": 3})
    _refused(tmp_path, _spec(tmp_path, task="seq2seq", model={"name_or_path": str(model)}),
             "needs an encoder-decoder model", "--task causal-lm")
