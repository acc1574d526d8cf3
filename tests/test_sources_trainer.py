"""A plain HF Trainer script with TensorBoard, run outside ftui; attached live and after it finished.

One real run per session (scope="session"): the live attach happens while it trains, the
after-the-fact checks read what it left. Every value in trainer_state.json's log_history must
come through the source.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
from scripts.watch import SCRIPTS, expected_from_log_history, merged, missing_from, watch

from runners.watch.history import RunHistory
from runners.watch.sources import detect_kind, open_source
from runners.watch.sources.trainer import TrainerSource
from tui.commands.attach import snapshot


@pytest.fixture(scope="session")
def trainer_run(tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("trainer")
    out = work / "out"
    watched = watch([str(SCRIPTS / "train_trainer.py"), "--output_dir", str(out), "--max_steps", "16",
                     "--step_delay", "0.4", "--report_to", "tensorboard"], str(out), work)
    return out, watched


def test_live_attach_sees_records_while_training(trainer_run) -> None:
    out, watched = trainer_run
    live_logs = [r for r in watched.live if r["type"] == "log"]
    assert live_logs, "no log record arrived while the script was running"
    assert "running" in watched.live_states
    assert watched.source.status()["state"] == "finished"
    # nothing arrives twice: (type, step) of log/eval/finish values are unique per key
    seen = set()
    for r in watched.records:
        if r["type"] == "log":
            for k in r:
                if k not in ("v", "t", "type", "step", "epoch"):
                    assert (r["step"], k) not in seen, (r["step"], k)
                    seen.add((r["step"], k))


def test_every_logged_value_comes_through(trainer_run) -> None:
    out, watched = trainer_run
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    expected = expected_from_log_history(history)
    for kind in ("log", "eval", "finish"):
        assert expected[kind]
        assert missing_from(expected[kind], merged(watched.records, kind)) == [], kind


def test_after_finish_snapshot_has_best_and_all_evals(trainer_run) -> None:
    out, _ = trainer_run
    state = json.loads((out / "trainer_state.json").read_text())
    source = open_source(str(out))
    assert isinstance(source, TrainerSource) and detect_kind(out) == "trainer"
    snap = snapshot(source)
    assert snap["source"] == "trainer" and snap["state"] == "finished"
    assert snap["step"] == state["global_step"] == 16 and snap["max_steps"] == 16
    expected = expected_from_log_history(state["log_history"])
    assert [e["step"] for e in snap["eval"]] == sorted(expected["eval"])
    assert missing_from(expected["eval"], {e["step"]: e["metrics"] for e in snap["eval"]}) == []
    last_log = max(expected["log"])
    assert snap["latest"]["loss"] == expected["log"][last_log]["loss"]
    best = snap["best"]
    assert best["value"] == state["best_metric"] and best["metric"] == "eval_accuracy"
    assert Path(best["checkpoint"]).name == Path(state["best_model_checkpoint"]).name
    assert best["step"] == state["best_global_step"]
    assert snap["warnings"] == [] and snap["processes"] == []


def test_tensorboard_fills_logs_after_the_last_checkpoint(trainer_run, tmp_path: Path) -> None:
    """Without the root state and the last checkpoint, TensorBoard still carries every log."""
    out, _ = trainer_run
    copy = tmp_path / "out"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("*.safetensors", "*.pt", "*.pth", "*.bin"))
    (copy / "trainer_state.json").unlink()
    for ckpt in sorted(copy.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))[1:]:
        shutil.rmtree(ckpt)
    kept = [p.name for p in copy.glob("checkpoint-*")]
    assert len(kept) == 1 and kept[0] != "checkpoint-16"
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    expected = expected_from_log_history(history)
    old = time.time() - 60  # written a while ago: TensorBoard's last step is not held back as in-flight
    for event_file in copy.rglob("events.out.tfevents.*"):
        os.utime(event_file, (old, old))
    source = open_source(str(copy))
    records = source.poll()
    for kind in ("log", "eval", "finish"):
        assert missing_from(expected[kind], merged(records, kind), rel=1e-6) == [], kind
    h = RunHistory()
    h.apply(records)
    assert h.state == "finished" and h.step == 16


def test_corrupt_and_truncated_files_warn_and_never_crash(trainer_run, tmp_path: Path) -> None:
    out, _ = trainer_run
    copy = tmp_path / "out"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("*.safetensors", "*.pt", "*.pth", "*.bin"))
    root_state = copy / "trainer_state.json"
    root_state.write_text(root_state.read_text()[:200])  # truncated mid-write
    tb = next(copy.rglob("events.out.tfevents.*"))
    data = bytearray(tb.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the middle
    tb.write_bytes(bytes(data) + b"\x10\x00\x00\x00")  # and a torn last record
    old = time.time() - 60
    os.utime(tb, (old, old))
    source = open_source(str(copy))
    records = source.poll()
    text = " ".join(source.warnings)
    assert "trainer_state.json: unreadable" in text
    assert "checksum" in text or "corrupt record header" in text
    assert "truncated record" in text
    steps = {r["step"] for r in records if r["type"] == "log"}
    assert {2, 16} <= steps  # records on both sides of the damage still come through
