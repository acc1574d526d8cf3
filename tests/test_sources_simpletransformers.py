"""A plain simpletransformers script run outside ftui, attached live and after it finished: every
row of training_progress_scores.csv must come through, with the best model and the end state."""
from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
from scripts.watch import SCRIPTS, merged, missing_from, watch

from runners.watch.sources import detect_kind, open_source
from runners.watch.sources.simpletransformers import SimpleTransformersSource, read_eval_results
from tui.commands.attach import snapshot


@pytest.fixture(scope="session")
def st_run(tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("simpletransformers")
    out = work / "out"
    watched = watch([str(SCRIPTS / "train_simpletransformers.py"), "--output_dir", str(out), "--rows", "128",
                     "--epochs", "1", "--step_delay", "0.3"], str(out), work)
    return out, watched


def scores(out: Path) -> list[dict[str, float]]:
    with open(out / "training_progress_scores.csv") as fh:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]


def test_every_row_comes_through_live_and_after(st_run) -> None:
    out, watched = st_run
    assert isinstance(watched.source, SimpleTransformersSource) and detect_kind(out) == "simpletransformers"
    assert [r for r in watched.live if r["type"] == "eval"], "no evaluation arrived while training"
    assert "running" in watched.live_states
    rows = scores(out)
    assert len(rows) >= 3
    expected_eval = {int(r["global_step"]): {k: v for k, v in r.items() if k not in ("global_step", "train_loss")}
                     for r in rows}
    expected_loss = {int(r["global_step"]): {"loss": r["train_loss"]} for r in rows}
    assert missing_from(expected_eval, merged(watched.records, "eval"), rel=0) == []
    assert missing_from(expected_loss, merged(watched.records, "log"), rel=0) == []
    assert watched.source.status()["state"] == "finished"


def test_snapshot_after_finish(st_run) -> None:
    out, _ = st_run
    rows = scores(out)
    snap = snapshot(open_source(str(out)))
    assert snap["source"] == "simpletransformers" and snap["state"] == "finished"
    last = int(rows[-1]["global_step"])
    assert snap["step"] == last and snap["max_steps"] == last  # 1 epoch: total = the epoch checkpoint's step
    assert snap["latest"]["loss"] == rows[-1]["train_loss"]
    # an evaluation at a step that is also an epoch end is written twice: one eval per step
    assert [e["step"] for e in snap["eval"]] == sorted({int(r["global_step"]) for r in rows})
    best_row = min(rows, key=lambda r: r["eval_loss"])  # early_stopping_metric eval_loss, minimised
    best = snap["best"]
    assert best["metric"] == "eval_loss" and best["value"] == best_row["eval_loss"]
    assert best["step"] == int(best_row["global_step"]) and best["checkpoint"] == str(out / "best_model")
    assert read_eval_results(out / "best_model" / "eval_results.txt")["eval_loss"] == best["value"]
    assert {Path(c["path"]).name for c in snap["checkpoints"]} >= {p.name for p in out.glob("checkpoint-*")}


def test_malformed_rows_and_missing_header(st_run, tmp_path: Path) -> None:
    out, _ = st_run
    copy = tmp_path / "out"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("*.safetensors", "*.pt", "*.bin", "checkpoint-*"))
    lines = (copy / "training_progress_scores.csv").read_text().splitlines()
    lines.insert(2, "12,oops")
    lines.insert(3, "nan-step," + ",".join(["1"] * (lines[0].count(","))))
    (copy / "training_progress_scores.csv").write_text("\n".join(lines) + "\n4,0.5")  # torn last line
    source = open_source(str(copy))
    records = source.poll()
    assert len(source.warnings) == 2 and all("skipped" in w for w in source.warnings)
    assert len(merged(records, "eval")) == len({r["global_step"] for r in scores(out)})
    (copy / "training_progress_scores.csv").write_text("garbage\n1,2\n")
    bad = SimpleTransformersSource(copy)
    assert [r for r in bad.poll() if r["type"] == "eval"] == [] and "not a header" in bad.warnings[0]
