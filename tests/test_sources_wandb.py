"""A Trainer script with report_to=wandb in offline mode, run outside ftui; its run-*.wandb file is
attached while it is written and after, and every value of trainer_state.json must come through."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from scripts.watch import SCRIPTS, expected_from_log_history, merged, missing_from, watch

from runners.watch.sources import detect_kind, open_source
from runners.watch.sources.wandb_run import BLOCK, FILE_HEADER, WandbSource
from tui.commands.attach import snapshot


@pytest.fixture(scope="session")
def wandb_run(tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("wandb")
    out = work / "out"
    # max_steps 40 and small logs: the .wandb file grows past one 32 KiB block while the job runs
    watched = watch([str(SCRIPTS / "train_trainer.py"), "--output_dir", str(out), "--max_steps", "40",
                     "--step_delay", "0.25", "--report_to", "wandb"], str(work), work)
    return work, out, watched


def test_live_and_complete(wandb_run) -> None:
    work, out, watched = wandb_run
    assert isinstance(watched.source, WandbSource) and detect_kind(work) == "wandb"
    assert "running" in watched.live_states
    assert [r for r in watched.live if r["type"] == "log"], "nothing arrived while the run was live"
    expected = expected_from_log_history(json.loads((out / "trainer_state.json").read_text())["log_history"])
    for kind in ("log", "eval", "finish"):
        assert expected[kind]
        assert missing_from(expected[kind], merged(watched.records, kind)) == [], kind
    assert watched.source.status()["state"] == "finished"


def test_snapshot_after_finish_from_each_kind_of_target(wandb_run) -> None:
    work, out, _ = wandb_run
    state = json.loads((out / "trainer_state.json").read_text())
    run_dir = next((work / "wandb").glob("offline-run-*"))
    wandb_file = next(run_dir.glob("run-*.wandb"))
    for target in (work, work / "wandb", run_dir, wandb_file):
        snap = snapshot(open_source(str(target)))
        assert snap["source"] == "wandb" and snap["state"] == "finished", target
        assert snap["step"] == 40 and snap["max_steps"] == 40
        assert len(snap["eval"]) == 10 and snap["warnings"] == []
        assert snap["final_metrics"]["train_runtime"] == state["log_history"][-1]["train_runtime"]


def test_wandb_is_not_imported_until_a_wandb_source_is_opened(wandb_run) -> None:
    work, _, _ = wandb_run
    code = ("import sys\nfrom runners.watch.sources import open_source\nfrom tui.commands import attach as cmd_attach\n"
            "cmd_attach.main('ps', ['--json'])\n"
            "assert not [m for m in ('wandb', 'torch', 'transformers', 'tensorboard') if m in sys.modules]\n"
            f"open_source({str(work)!r})\nassert 'wandb' in sys.modules\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_corrupt_and_truncated_wandb_files(wandb_run, tmp_path: Path) -> None:
    work, _, watched = wandb_run
    wandb_file = next((work / "wandb").glob("offline-run-*/run-*.wandb"))
    data = wandb_file.read_bytes()
    assert len(data) > BLOCK + FILE_HEADER, "the run should span more than one block"
    good = len([r for r in open_source(str(wandb_file)).poll() if r["type"] == "log"])

    damaged = tmp_path / "damaged" / "run-x.wandb"
    damaged.parent.mkdir()
    flipped = bytearray(data)
    flipped[FILE_HEADER + 500] ^= 0xFF  # inside the first block
    damaged.write_bytes(bytes(flipped))
    source = open_source(str(damaged))
    records = source.poll()
    assert any("corrupt chunk" in w for w in source.warnings)
    logs = [r for r in records if r["type"] == "log"]
    assert 0 < len(logs) < good  # the rest of the first block is lost, later blocks still read

    cut = tmp_path / "cut" / "run-y.wandb"
    cut.parent.mkdir()
    cut.write_bytes(data[: BLOCK + 1000])  # truncated mid-record in the second block
    source = open_source(str(cut))
    first = source.poll()
    assert 0 < len([r for r in first if r["type"] == "log"]) < good and source.warnings == []
    with cut.open("ab") as fh:  # the writer goes on: the rest arrives at the next poll
        fh.write(data[BLOCK + 1000:])
    rest = source.poll()
    assert len([r for r in first + rest if r["type"] == "log"]) == good

    junk = tmp_path / "junk" / "run-z.wandb"
    junk.parent.mkdir()
    junk.write_bytes(b"not a wandb file at all" * 10)
    source = open_source(str(junk))
    assert source.poll() == [] and "bad header" in source.warnings[0]
