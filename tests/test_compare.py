"""`ftui compare` on real recorded runs: two demo runs (learning rate 0.001 for 4 epochs, 0.0005 for 2), and the
second run's own Trainer output dir and TensorBoard dir, read as foreign runs.

Every expectation is computed here from the recorded files (events.jsonl, spec.yaml, trainer_state.json), never
from the code under test.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from runners.results.compare import Comparison, compare
from tests.conftest import ROOT, ftui, records, spec_keys

DATA = Path(__file__).resolve().parent / "tui" / "data"
RUNS = DATA / "runs"
FAST = RUNS / "20261122-133534-demo-1116"  # lr 0.001, 4 epochs
SLOW = RUNS / "20261202-012257-demo-cf2a"  # lr 0.0005, 2 epochs
TRAINER_DIR = DATA / "foreign" / "trainer-lr5e-4"  # SLOW's output dir: checkpoint-104 and -136, no weights
TENSORBOARD_DIR = DATA / "foreign" / "tensorboard-lr5e-4"  # SLOW's TensorBoard event file
MISSING = object()




def spec_of(run: Path) -> dict[str, Any]:
    return spec_keys(run)


def losses(run: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in records(run) if r["type"] == "log" and "loss" in r}


def start_of(run: Path) -> dict[str, Any]:
    return next(r for r in records(run) if r["type"] == "start")


@pytest.fixture(scope="module")
def both() -> Comparison:
    return compare([FAST.name, "cf2a"], RUNS)


def test_the_spec_diff_has_exactly_the_keys_that_differ(both: Comparison) -> None:
    a, b = spec_of(FAST), spec_of(SLOW)
    expected = {k for k in a.keys() | b.keys() if a.get(k, MISSING) != b.get(k, MISSING)}
    assert {"training.learning_rate", "training.num_train_epochs"} <= expected  # what the second run changed
    diff = both.spec_diff()
    assert set(diff) == expected
    for key in expected:  # each run's own value, and no entry where its spec lacks the key
        assert diff[key] == {run.name: spec[key] for run, spec in ((FAST, a), (SLOW, b)) if key in spec}
    fast, slow = both.runs
    assert both.diff_cell(fast, "training.learning_rate") == str(a["training.learning_rate"])
    assert "dataset.packing" not in diff  # a key the older spec.yaml left out is read with its default, not a difference


def test_curves_are_aligned_by_step_and_by_samples(both: Comparison) -> None:
    for run, path in zip(both.runs, (FAST, SLOW)):
        expected = losses(path)
        by_step = run.curve("loss", "step", 10_000)  # wider than the run: every logged step is a bucket
        assert [(b.step_hi, b.mean) for b in by_step] == sorted(expected.items())
        start, spec = start_of(path), spec_of(path)
        batch = start["train_batch_size"]  # the callback writes the global batch: per device x accumulation x world
        assert batch == spec["training.per_device_train_batch_size"] * spec.get("training.gradient_accumulation_steps", 1) \
            * start["world_size"]
        by_samples = run.curve("loss", "samples", 10_000)
        assert [(b.step_hi, b.mean) for b in by_samples] == [(s * batch, v) for s, v in sorted(expected.items())]
    fast, slow = both.runs
    xs, values = both.aligned("loss", "samples")
    common = min(max(losses(p)) * start_of(p)["train_batch_size"] for p in (FAST, SLOW))
    assert xs[-1] == common and len(xs) == 4
    for run, path in ((fast, FAST), (slow, SLOW)):
        logged, batch = losses(path), start_of(path)["train_batch_size"]
        assert values[run.label] == [logged[max(s for s in logged if s * batch <= x)] for x in xs]


def test_tokens_seen_come_from_the_counted_tokens(both: Comparison) -> None:
    for run, path in zip(both.runs, (FAST, SLOW)):
        evals = [r for r in records(path) if r["type"] == "eval"]
        curve = run.curve("eval_loss", "tokens", 10_000)
        assert [(b.step_hi, b.mean) for b in curve] == [(int(e["metrics"]["num_input_tokens_seen"]),
                                                         e["metrics"]["eval_loss"]) for e in evals]


def test_best_duration_and_peak_memory_are_the_recorded_ones(both: Comparison) -> None:
    for run, path in zip(both.runs, (FAST, SLOW)):
        recs = records(path)
        best = [r for r in recs if r["type"] == "checkpoint" and r.get("is_best")][-1]
        assert run.history.best is not None
        assert (run.history.best["step"], run.history.best["value"]) == (best["step"], best["value"])
        start = next(r["t"] for r in recs if r["type"] == "start")
        assert run.duration_s == pytest.approx(max(r["t"] for r in recs) - start)
        assert run.peak_memory() == (max(r["rss"] for r in recs if r["type"] == "memory"), "rss")
        last_eval = [r for r in recs if r["type"] == "eval"][-1]["metrics"]
        assert run.last_eval()["eval_loss"] == last_eval["eval_loss"]


def test_json_shape_and_the_printed_report() -> None:
    done = ftui("compare", FAST.name, SLOW.name, "--json", "--by", "samples", "--runs-dir", str(RUNS), timeout=120)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["by"] == "samples" and data["metrics"][0] == "loss"
    assert [r["label"] for r in data["runs"]] == [FAST.name, SLOW.name]
    for run, path in zip(data["runs"], (FAST, SLOW)):
        assert run["kind"] == "ftui" and run["state"] == "finished" and run["global_batch"] == 32
        assert run["step"] == max(losses(path)) and 0 < len(run["curves"]["loss"]) <= 200
        assert run["curves"]["loss"][-1][0] == max(losses(path)) * 32  # the last bucket ends at the last step
    a, b = spec_of(FAST), spec_of(SLOW)
    assert data["spec_diff"]["training.learning_rate"] == {FAST.name: a["training.learning_rate"],
                                                           SLOW.name: b["training.learning_rate"]}
    assert data["aligned"]["metric"] == "loss" and set(data["aligned"]["values"]) == {FAST.name, SLOW.name}
    text = ftui("compare", FAST.name, SLOW.name, "--runs-dir", str(RUNS), timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert text.returncode == 0, text.stderr
    assert "training.learning_rate" in text.stdout and "dataset.max_seq_length" not in text.stdout  # equal: not shown


def test_a_trainer_output_dir_and_a_tensorboard_dir_compare_with_an_ftui_run() -> None:
    comparison = compare([FAST.name, str(TRAINER_DIR), str(TENSORBOARD_DIR)], RUNS)
    ftui_run, trainer, board = comparison.runs
    assert (ftui_run.kind, trainer.kind, board.kind) == ("ftui", "trainer", "tensorboard")
    state = json.loads((TRAINER_DIR / "checkpoint-136" / "trainer_state.json").read_text())
    logged = {e["step"]: e["loss"] for e in state["log_history"] if "loss" in e}
    assert [(b.step_hi, b.mean) for b in trainer.curve("loss", "step", 10_000)] == sorted(logged.items())
    assert trainer.history.best is not None and trainer.history.best["step"] == state["best_global_step"]
    # the same training seen by its TensorBoard file (float32 values) and by trainer_state.json
    assert [b.step_hi for b in board.curve("loss", "step", 10_000)] == sorted(logged)
    # samples seen: known for the ftui run only, and the others say why
    assert trainer.axis("samples") is None and "gradient accumulation" in trainer.axis_note("samples")
    assert board.axis("samples") is None and ftui_run.axis("samples") is not None
    tokens = {e["step"]: e["num_input_tokens_seen"] for e in state["log_history"] if "loss" in e}
    assert [b.step_hi for b in trainer.curve("loss", "tokens", 10_000)] == [tokens[s] for s in sorted(logged)]
    # settings: the Trainer dir records epochs and batch, not the learning rate; TensorBoard records none
    diff = comparison.spec_diff()
    assert diff["training.num_train_epochs"] == {FAST.name: spec_of(FAST)["training.num_train_epochs"],
                                                 trainer.label: state["num_train_epochs"]}
    assert "training.per_device_train_batch_size" not in diff  # 32 in both
    assert comparison.diff_cell(trainer, "training.learning_rate") == "not recorded"
    assert comparison.diff_cell(board, "training.learning_rate") == "unknown"


@pytest.mark.parametrize(("args", "words"), [
    ((FAST.name,), ["at least two runs", FAST.name]),
    ((FAST.name, "no-such-run"), ["No run matches 'no-such-run'", "--runs-dir"]),
    ((FAST.name, str(FAST)), ["the same run", "two different runs"]),
    (("2026", FAST.name), ["'2026' matches 2 runs", "give more of the run id"]),
    ((FAST.name, str(ROOT / "assets" / "demo")), ["is not a run ftui can read", "TensorBoard"]),
    ((FAST.name, SLOW.name, "--by", "epochs"), ["--by", "ftui compare --help"]),
], ids=["one run", "unknown", "twice", "ambiguous", "not a run", "bad axis"])
def test_bad_inputs_exit_2_with_a_clear_message(args: tuple[str, ...], words: list[str]) -> None:
    done = ftui("compare", *args, "--runs-dir", str(RUNS), timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    for word in words:
        assert word in done.stderr
    assert "Traceback" not in done.stderr


def test_settings_a_wandb_run_and_a_simpletransformers_dir_record(tmp_path: Path) -> None:
    """wandb keeps the Trainer's arguments in files/config.yaml ({key: {desc, value}}); simpletransformers its
    model_args.json. Both map onto the spec's names; only the headline TrainingArguments of wandb are kept."""
    from runners.results.run_settings import read_settings

    run = tmp_path / "wandb" / "offline-run-1"
    (run / "files").mkdir(parents=True)
    config = {"_wandb": {"value": {"cli_version": "0.31"}}, "learning_rate": {"desc": None, "value": 5e-5},
              "gradient_accumulation_steps": {"desc": None, "value": 4}, "logging_dir": {"desc": None, "value": "x"}}
    (run / "files" / "config.yaml").write_text(yaml.safe_dump(config))
    wandb = read_settings("wandb", run, {})
    assert wandb.values == {"training.learning_rate": 5e-5, "training.gradient_accumulation_steps": 4}
    assert wandb.global_batch is None and "processes" in wandb.batch_note
    out = tmp_path / "st"
    out.mkdir()
    (out / "model_args.json").write_text(json.dumps({"learning_rate": 4e-5, "train_batch_size": 8,
                                                     "gradient_accumulation_steps": 2, "manual_seed": 3}))
    st = read_settings("simpletransformers", out, {})
    assert st.values == {"training.learning_rate": 4e-5, "training.per_device_train_batch_size": 8,
                         "training.gradient_accumulation_steps": 2, "training.seed": 3}
    assert st.global_batch == 16
    assert read_settings("tensorboard", out, {}).values is None
