"""A plain sentence-transformers script (SentenceTransformerTrainer, TensorBoard) run outside ftui:
its output dir is a Trainer output dir, attached live and after it finished."""
from __future__ import annotations

import json

import pytest
from scripts.watch import SCRIPTS, expected_from_log_history, merged, missing_from, watch

from runners.watch.sources import open_source
from tui.commands.attach import snapshot


@pytest.fixture(scope="session")
def sentence_run(tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("sentence")
    out = work / "out"
    watched = watch([str(SCRIPTS / "train_sentence.py"), "--output_dir", str(out), "--max_steps", "8",
                     "--step_delay", "0.5"], str(out), work)
    return out, watched


def test_live_and_every_value(sentence_run) -> None:
    out, watched = sentence_run
    assert watched.source.kind == "trainer"
    assert [r for r in watched.live if r["type"] in ("log", "eval")], "nothing arrived while training"
    assert "running" in watched.live_states
    start = [r for r in watched.records if r["type"] == "start"][-1]  # the one with totals
    assert start["runner"] == "sentence_transformers" and start["total_steps"] == 8
    # no trainer_state.json at the root (SentenceTransformerTrainer does not save_state): the last
    # checkpoint holds the history, TensorBoard the final train_runtime entry
    state = json.loads((out / "checkpoint-8" / "trainer_state.json").read_text())
    expected = expected_from_log_history(state["log_history"])
    for kind in ("log", "eval"):
        assert expected[kind]
        assert missing_from(expected[kind], merged(watched.records, kind)) == [], kind
    assert merged(watched.records, "finish")[8]["train_runtime"] > 0


def test_snapshot_after_finish(sentence_run) -> None:
    out, _ = sentence_run
    state = json.loads((out / "checkpoint-8" / "trainer_state.json").read_text())
    snap = snapshot(open_source(str(out)))
    assert snap["state"] == "finished" and snap["step"] == 8 and snap["max_steps"] == 8
    assert [e["step"] for e in snap["eval"]] == [4, 8]
    assert snap["best"]["metric"] == "eval_loss" and snap["best"]["value"] == state["best_metric"]
