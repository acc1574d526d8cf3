"""The simpletransformers runner, for real on CPU: events as they happen, best model, one wandb run, stop."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from runners import rundir
from tests.conftest import DEMO_DATA, ftui, only_run, records, wait_until

ST = {"runner": "simpletransformers", "cadence": {"metric_for_best_model": "eval_accuracy"}}


def _by_type(recs: list[dict], type_: str) -> list[dict]:
    return [r for r in recs if r["type"] == type_]


def test_events_stream_during_training_and_best_model_saved(tmp_path: Path, write_spec) -> None:
    spec = write_spec(**ST, training={"num_train_epochs": 2})
    proc = ftui("run", str(spec), "--headless", "--runs-dir", str(tmp_path / "runs"))
    run = only_run(tmp_path / "runs")
    assert proc.returncode == 0, (run / "stdout.log").read_text()[-3000:]
    recs = records(run)
    start, finish = _by_type(recs, "start")[0], _by_type(recs, "finish")[0]
    assert start["runner"] == "simpletransformers" and start["total_steps"] == 32  # 128 rows / 8, 2 epochs
    assert any("random init" in r["text"] for r in _by_type(recs, "message"))
    logs, evals = _by_type(recs, "log"), _by_type(recs, "eval")
    assert logs[-1]["step"] == 32 and all(k in logs[-1] for k in ("loss", "learning_rate", "grad_norm"))
    steps = [r["step"] for r in evals]
    assert len(evals) >= 8 and steps == sorted(set(steps)) and steps[-1] == 32
    assert {"eval_mcc", "eval_accuracy", "eval_f1", "eval_auroc", "eval_loss"} <= set(evals[0]["metrics"])
    # streamed while training, not dumped at the end: the first evaluation precedes most of the logs
    assert evals[0]["t"] < logs[len(logs) // 2]["t"] <= finish["t"]
    best = [r for r in _by_type(recs, "checkpoint") if r["is_best"]]
    assert best and best[-1]["metric"] == "eval_accuracy"
    assert best[-1]["value"] == max(r["metrics"]["eval_accuracy"] for r in evals if r["step"] <= best[-1]["step"])
    assert (Path(best[-1]["path"]) / "model.safetensors").exists() and best[-1]["path"].endswith("best_model")
    assert (run / "init_model" / "config.json").exists()
    assert rundir.read_status(run)["state"] == "finished"


def test_multiclass_string_labels_with_one_wandb_run(tmp_path: Path, write_spec) -> None:
    frame = pd.read_csv(DEMO_DATA).head(160)
    frame["label"] = [("mixed" if i % 3 == 0 else "positive" if v else "negative") for i, v in enumerate(frame["label"])]
    frame.to_csv(tmp_path / "three.csv", index=False)
    spec = write_spec(**ST, dataset={"train": str(tmp_path / "three.csv"), "max_train_samples": 96},
                      tracking={"report_to": ["wandb"], "wandb_project": "ftui-test"})
    proc = ftui("run", str(spec), "--headless", "--runs-dir", str(tmp_path / "runs"))
    run = only_run(tmp_path / "runs")
    assert proc.returncode == 0, (run / "stdout.log").read_text()[-3000:]
    recs = records(run)
    assert _by_type(recs, "start")[0]["num_labels"] == 3
    evals = _by_type(recs, "eval")
    assert len(evals) >= 4 and {"eval_mcc", "eval_accuracy", "eval_loss"} <= set(evals[-1]["metrics"])
    # simpletransformers alone opens one wandb run per evaluation; ftui gives one per training
    assert len(list((run / "wandb").glob("offline-run-*"))) == 1


def test_stop_request_checkpoints_and_stops(tmp_path: Path, write_spec) -> None:
    runs = tmp_path / "runs"
    spec = write_spec(**ST, dataset={"max_train_samples": None}, training={"per_device_train_batch_size": 4})
    assert ftui("run", str(spec), "--detach", "--runs-dir", str(runs)).returncode == 0
    run = only_run(runs)
    wait_until(lambda: any(r["type"] == "log" and r["step"] >= 3 for r in records(run)), timeout=120,
               what=f"step 3 (log: {run / 'stdout.log'})")
    out = ftui("stop", run.name, "--runs-dir", str(runs), "--wait", "120")
    assert out.returncode == 0 and "stopped" in out.stdout, out.stdout + out.stderr
    recs = records(run)
    stop = _by_type(recs, "stop")[0]
    ckpt = _by_type(recs, "checkpoint")[-1]
    assert stop["reason"] == "user request" and ckpt["step"] == stop["step"] < 540
    assert (Path(ckpt["path"]) / "model.safetensors").exists() and ckpt["path"].endswith(f"checkpoint-{stop['step']}")
    assert _by_type(recs, "finish")[0]["stopped"] is True
    assert rundir.read_status(run)["state"] == "stopped" and not (run / "control" / "stop").exists()
