"""The sentence-transformers runner: loss choice from the data's shape, real runs on CPU (1 and 2 processes)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from runners import rundir
from runners.errors import UserError
from runners.plan.st_losses import choose_loss
from tests.conftest import DEMO_DATA, ROOT, ftui, only_run, records

SE = {"runner": "sentence_transformers", "task": "embedding",
      "cadence": {"metric_for_best_model": "eval_clustering_v_measure"}}


@pytest.mark.parametrize("columns, values, expected", [
    ({"text": "text", "label": "label"}, [0, 1, 1], "BatchHardTripletLoss"),
    ({"anchor": "q", "positive": "a"}, None, "MultipleNegativesRankingLoss"),
    ({"anchor": "q", "positive": "a", "negative": "n"}, None, "TripletLoss"),
    ({"text": "sentence1", "text_pair": "sentence2", "label": "score"}, [0.2, 0.9], "CoSENTLoss"),
    ({"text1": "s1", "text2": "s2", "score": "sim"}, None, "CoSENTLoss"),
    ({"text": "s1", "text_pair": "s2", "label": "relevance"}, [0.25, 0.5, 1.0], "CoSENTLoss"),
    ({"text": "s1", "text_pair": "s2", "label": "label"}, [0, 1, 0], "ContrastiveLoss"),
    ({"text": "s1", "text_pair": "s2", "label": "label"}, [0, 1, 2], "SoftmaxLoss"),
])
def test_loss_follows_the_data_shape(columns: dict, values: list | None, expected: str) -> None:
    name, reason = choose_loss(columns, None, values)
    assert name == expected and reason


def test_loss_override_and_bad_shapes() -> None:
    assert choose_loss({"text": "t", "label": "l"}, "BatchAllTripletLoss") == ("BatchAllTripletLoss", "set in runner_args.loss")
    with pytest.raises(UserError, match="Did you mean 'TripletLoss'"):
        choose_loss({"anchor": "a", "positive": "p", "negative": "n"}, "TripletLos")
    with pytest.raises(UserError, match="takes scored pairs data"):
        choose_loss({"text": "t", "label": "l"}, "CoSENTLoss")
    with pytest.raises(UserError, match="dataset.columns"):
        choose_loss({"text": "t"}, None)


def test_loss_choice_imports_no_torch() -> None:
    code = "import sys, runners.plan.st_losses; assert 'torch' not in sys.modules and 'sentence_transformers' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


def _check_run(run: Path, world_size: int) -> list[dict]:
    recs = records(run)
    assert next(r for r in recs if r["type"] == "start")["world_size"] == world_size
    evals = [r for r in recs if r["type"] == "eval"]
    steps = [r["step"] for r in evals]
    assert len(evals) >= 4 and steps == sorted(set(steps))
    finish = next(r for r in recs if r["type"] == "finish")
    assert evals[0]["t"] < finish["t"] and steps[-1] == finish["step"]
    best = [r for r in recs if r["type"] == "checkpoint" and r["is_best"]]
    assert best and best[-1]["metric"] == "eval_clustering_v_measure" and Path(best[-1]["path"]).is_dir()
    assert (run / "output" / "best_model" / "modules.json").exists()
    assert rundir.read_status(run)["state"] == "finished"
    return recs


def test_text_label_run_streams_clustering_and_triplet_scores(tmp_path: Path, write_spec) -> None:
    spec = write_spec(**SE, training={"num_train_epochs": 2})
    proc = ftui("run", str(spec), "--headless", "--runs-dir", str(tmp_path / "runs"))
    run = only_run(tmp_path / "runs")
    assert proc.returncode == 0, (run / "stdout.log").read_text()[-3000:]
    recs = _check_run(run, 1)
    assert any(r["type"] == "message" and r["text"].startswith("loss BatchHardTripletLoss") for r in recs)
    metrics = [r for r in recs if r["type"] == "eval"][0]["metrics"]
    assert {"eval_loss", "eval_clustering_v_measure", "eval_clustering_ari", "eval_triplet_cosine_accuracy"} <= set(metrics)
    assert all(k in [r for r in recs if r["type"] == "log"][-1] for k in ("loss", "learning_rate", "grad_norm"))
    best_model = run / "output" / "best_model"
    assert (best_model / "model.safetensors").exists() and (best_model / "1_Pooling" / "config.json").exists()


def test_scored_pairs_run_cosent_with_similarity_evaluator(tmp_path: Path, write_spec) -> None:
    frame = pd.read_csv(DEMO_DATA).head(160)
    other = frame.sample(frac=1.0, random_state=0).reset_index(drop=True)
    pairs = pd.DataFrame({"sentence1": frame["text"], "sentence2": other["text"],
                          "score": [0.9 if a == b else 0.1 for a, b in zip(frame["label"], other["label"])]})
    pairs.to_csv(tmp_path / "pairs.csv", index=False)
    spec = write_spec(runner="sentence_transformers", task="embedding",
                      dataset={"train": str(tmp_path / "pairs.csv"), "max_train_samples": 64, "max_eval_samples": 32})
    proc = ftui("run", str(spec), "--headless", "--runs-dir", str(tmp_path / "runs"))
    run = only_run(tmp_path / "runs")
    assert proc.returncode == 0, (run / "stdout.log").read_text()[-3000:]
    recs = records(run)
    assert any(r["type"] == "message" and r["text"].startswith("loss CoSENTLoss") for r in recs)
    evals = [r for r in recs if r["type"] == "eval"]
    assert evals and "eval_similarity_spearman_cosine" in evals[-1]["metrics"]


def test_two_processes_torchrun(tmp_path: Path, write_spec) -> None:
    spec = write_spec(**SE, hardware={"num_processes": 2})
    proc = ftui("run", str(spec), "--headless", "--runs-dir", str(tmp_path / "runs"))
    run = only_run(tmp_path / "runs")
    assert proc.returncode == 0, (run / "stdout.log").read_text()[-3000:]
    assert "torchrun" in (run / "launch.sh").read_text()
    recs = _check_run(run, 2)
    assert {r["rank"] for r in recs if r["type"] == "memory"} == {0, 1}
    assert next(r for r in recs if r["type"] == "start")["total_steps"] == 8  # 128 rows / (2 x 8)
