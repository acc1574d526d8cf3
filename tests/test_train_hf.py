"""The HF Trainer runner in-process: every task it trains, its metrics, best checkpoints, tracking.

The launchers and the detached job are tested in test_launch.py / test_control.py; here the runner's
own behaviour is checked on tiny random-init models built from local configs (no hub), through the
real Trainer.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from runners import events as ev
from runners import rundir
from runners import spec as specmod
from tests.conftest import DEMO_DATA, DEMO_MODEL, ROOT, records, tiny_model_dir, tiny_spec


def _train(tmp_path: Path, **overrides: Any) -> tuple[Path, list[dict[str, Any]]]:
    from runners.train import hf

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    spec = specmod.from_dict(tiny_spec(**overrides))
    hf.train(spec, run_dir)
    return run_dir, records(run_dir)


def _of(recs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [r for r in recs if r["type"] == kind]


def test_seq_cls_metrics_random_init_and_tokenizer(tmp_path: Path) -> None:
    from runners.plan import models

    spec = specmod.from_dict(tiny_spec())
    tokenizer = models.load_tokenizer(spec)
    assert len(tokenizer) == 90, "the vocab file must be used (BertTokenizerFast(vocab_file=) trap)"
    assert not models.has_weights(str(DEMO_MODEL))
    run, recs = _train(tmp_path)
    message = next(r for r in _of(recs, "message") if "random init" in r["text"])
    assert message["level"] == "warning"
    metrics = _of(recs, "eval")[-1]["metrics"]
    assert 0.0 <= metrics["eval_accuracy"] <= 1.0 and 0.0 <= metrics["eval_f1"] <= 1.0
    finish = _of(recs, "finish")[-1]
    assert finish["step"] == 16 and finish["stopped"] is False and "train_loss" in finish["metrics"]
    assert (run / "output" / "final" / "model.safetensors").exists()
    saved = json.loads((run / "output" / "final" / "config.json").read_text())
    assert sorted(saved["label2id"]) == ["0", "1"]  # labels mapped from the data, saved with the model


def test_best_checkpoint_follows_metric_for_best_model(tmp_path: Path) -> None:
    """eval_loss: lower is better; the is_best checkpoint is the Trainer's own best_model_checkpoint."""
    run, recs = _train(tmp_path, cadence={"metric_for_best_model": "eval_loss"},
                       training={"num_train_epochs": 2, "save_total_limit": None})
    evals = {r["step"]: r["metrics"]["eval_loss"] for r in _of(recs, "eval")}
    checkpoints = _of(recs, "checkpoint")
    assert checkpoints and all(c["metric"] == "eval_loss" for c in checkpoints)
    best = [c for c in checkpoints if c["is_best"]]
    assert best, checkpoints
    saved_steps = [c["step"] for c in checkpoints if c["step"] in evals]
    assert best[-1]["step"] == min(saved_steps, key=lambda s: evals[s])
    assert best[-1]["value"] == pytest.approx(evals[best[-1]["step"]])
    state = json.loads((run / "output" / f"checkpoint-{checkpoints[-1]['step']}" / "trainer_state.json").read_text())
    assert state["best_model_checkpoint"] == best[-1]["path"]


def test_causal_lm_reports_perplexity(tmp_path: Path) -> None:
    model = tiny_model_dir(tmp_path, "gpt", {"model_type": "gpt2", "vocab_size": 90, "n_embd": 32, "n_layer": 1,
                                          "n_head": 2, "n_positions": 64, "bos_token_id": 2, "eos_token_id": 3})
    _, recs = _train(tmp_path, task="causal-lm", model={"name_or_path": str(model)},
                     training={"learning_rate": 0.003, "num_train_epochs": 2})
    evals = _of(recs, "eval")
    assert evals and all(e["metrics"]["eval_perplexity"] == pytest.approx(math.exp(e["metrics"]["eval_loss"]))
                         for e in evals)
    # it learns: below its first evaluation, and well below a uniform guess over the 90-word vocab
    assert evals[-1]["metrics"]["eval_perplexity"] < min(evals[0]["metrics"]["eval_perplexity"], 45)
    assert _of(recs, "start")[0]["task"] == "causal-lm"
    best = [c for c in _of(recs, "checkpoint") if c["is_best"]]
    assert best and best[-1]["metric"] == "eval_loss"


def test_seq2seq_on_an_eval_file(tmp_path: Path) -> None:
    """A copy task (target: the text's last three words) with a separate JSONL eval file."""
    frame = pd.read_csv(DEMO_DATA).head(200)
    frame = pd.DataFrame({"source": frame["text"], "summary": frame["text"].str.split().str[-3:].str.join(" ")})
    train, evaluation = tmp_path / "train.csv", tmp_path / "eval.jsonl"
    frame.iloc[:160].to_csv(train, index=False)
    frame.iloc[160:].to_json(evaluation, orient="records", lines=True)
    model = tiny_model_dir(tmp_path, "t5", {"model_type": "t5", "vocab_size": 90, "d_model": 32, "d_kv": 16, "d_ff": 64,
                                         "num_layers": 1, "num_decoder_layers": 1, "num_heads": 2, "pad_token_id": 0,
                                         "eos_token_id": 3, "decoder_start_token_id": 0})
    _, recs = _train(tmp_path, task="seq2seq", model={"name_or_path": str(model)},
                     dataset={"train": str(train), "eval": str(evaluation), "text_column": "source",
                              "max_train_samples": None, "max_eval_samples": None},
                     training={"learning_rate": 0.003, "num_train_epochs": 2})
    start = _of(recs, "start")[0]
    assert start["num_train_samples"] == 160 and start["total_steps"] == 40
    evals = _of(recs, "eval")
    assert "eval_perplexity" in evals[0]["metrics"]
    assert evals[-1]["metrics"]["eval_loss"] < evals[0]["metrics"]["eval_loss"]


def test_sentence_pairs_from_parquet(tmp_path: Path) -> None:
    """A text pair, detected by name (sentence1/sentence2), is passed to the tokenizer as a pair."""
    frame = pd.read_csv(DEMO_DATA).head(96)
    words = frame["text"].str.split()
    pairs = pd.DataFrame({"sentence1": words.str[:4].str.join(" "), "sentence2": words.str[4:].str.join(" "),
                          "label": frame["label"]})
    path = tmp_path / "pairs.parquet"
    pairs.to_parquet(path)
    from runners import data

    spec = specmod.from_dict(tiny_spec(dataset={"train": str(path)}))
    assert data.preflight(spec) == {"text": "sentence1", "text_pair": "sentence2", "label": "label"}
    _, recs = _train(tmp_path, dataset={"train": str(path)})
    assert _of(recs, "finish") and "eval_accuracy" in _of(recs, "eval")[-1]["metrics"]


def test_wandb_offline_without_api_key(tmp_path: Path) -> None:
    """report_to wandb with no key: an offline run in the run dir, named from the spec; output dir as is.

    Through the real entry point (python -m runners.train) so wandb's service stays out of pytest."""
    run = tmp_path / "run"
    run.mkdir()
    spec = specmod.from_dict(tiny_spec(name="wb", tracking={"report_to": ["wandb"], "run_name": "my-run"},
                                       dataset={"max_train_samples": 32, "max_eval_samples": 16}))
    specmod.save(spec, run / rundir.SPEC_FILE)
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(HOME=str(tmp_path), PYTHONPATH=str(ROOT))  # no ~/.netrc, no key: must go offline by itself
    proc = subprocess.run([sys.executable, "-m", "runners.train", "--run-dir", str(run)], env=env, cwd=run,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    offline = list((run / "wandb").glob("offline-run-*"))
    assert len(offline) == 1 and list(offline[0].glob("run-*.wandb")), list(run.rglob("*"))[:20]
    args = _trainer_args(run)
    assert args["run_name"] == "my-run" and args["output_dir"] == str(run / "output")
    assert _of(records(run), "finish")


def _trainer_args(run: Path) -> dict[str, Any]:
    """The TrainingArguments the run used, from its last checkpoint's training_args.bin."""
    import torch

    ckpt = max((run / "output").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    return torch.load(ckpt / "training_args.bin", weights_only=False).to_dict()


def test_crash_record_from_the_entry_point(tmp_path: Path) -> None:
    """runners.train turns an exception into a crash record with the one-line error, and exit code 1."""
    run = tmp_path / "run"
    run.mkdir()
    spec = specmod.from_dict(tiny_spec(task="seq2seq"))  # the demo data has no target column
    specmod.save(spec, run / rundir.SPEC_FILE)
    proc = subprocess.run([sys.executable, "-m", "runners.train", "--run-dir", str(run), "--local_rank=0"],
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    crash = _of(records(run), ev.CRASH)
    assert len(crash) == 1 and "no target column" in crash[0]["error"] and crash[0]["rank"] == 0
    assert "Traceback" in crash[0]["traceback"] and "\n" not in crash[0]["error"]
