"""`ftui eval` (issue 14) on real checkpoints of the four bundled demos (tests/trained.py).

Each demo's checkpoint is evaluated on the run's own eval split written to a file, so the metrics must be the ones
the run's evaluation recorded at that checkpoint's step in events.jsonl: the same names, the same values. Then the
additions (a confusion matrix that sums to the rows, a perplexity that is the exponential of the loss), the record
in the run dir, the runs list, the monitor and `ftui runs` showing it, and the inputs that must exit 2 with a
message and record nothing. The four evaluations run at once (the worker's time is mostly imports, one core each).
"""
from __future__ import annotations

import io
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from rich.console import Console

from runners import data, rundir
from runners.errors import UserError
from runners.results import evaluate, loading
from tests.conftest import ROOT, ftui, records
from tests.trained import copy_run, demo_run
from tests.tui.tui_fakes import FrozenTelemetry, h100_nvml, wait_for
from tui.app import make_app

# demo -> the --checkpoint it is evaluated at (None: the default, the best the run marked); the slowest evaluation
# first, so that it runs while the next demos train
DEMOS = {"demo_sentence_transformers": "step", "demo_sft": "step", "demo_simpletransformers": "best", "demo": None}
NOT_COMPARED = ("runtime", "per_second", "num_tokens", "epoch", "num_input_tokens_seen", "model_preparation_time")


def eval_split_file(run_dir: Path, folder: Path) -> Path:
    """The run's own eval split (load_splits on its spec), as a file its reader takes back unchanged."""
    spec = loading.run_spec(run_dir)
    _, evaluation = data.load_splits(spec)
    if spec.runner == "sft":  # conversations: lists of turns, so JSONL
        path = folder / "eval_split.jsonl"
        evaluation.to_json(path, orient="records", lines=True)
    else:
        path = folder / "eval_split.csv"
        evaluation.to_csv(path, index=False)
    return path


def eval_at(run_dir: Path, step: int) -> dict[str, float]:
    found = [r["metrics"] for r in records(run_dir) if r.get("type") == "eval" and r.get("step") == step]
    assert found, f"no eval record at step {step} in {run_dir}"
    return found[-1]


def checkpoint_with_eval(run_dir: Path) -> str:
    """A checkpoint-N on disk whose step has an evaluation (the weights that evaluation saw)."""
    steps = {r["step"] for r in records(run_dir) if r.get("type") == "eval"}
    numbered = [p for p in rundir.numbered_checkpoints(run_dir) if int(p.name.split("-")[1]) in steps]
    assert numbered, f"no checkpoint of {run_dir} has an evaluation at its step"
    return numbered[-1].name.split("-")[1]


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Each demo's copy evaluated once on its eval split (`ftui eval --json`, the four at once)."""
    runs = tmp_path_factory.mktemp("eval") / "runs"
    started: dict[str, tuple[Path, Path, str | None, subprocess.Popen]] = {}
    for demo, how in DEMOS.items():
        run = copy_run(demo_run(tmp_path_factory, demo), runs)
        split = eval_split_file(run, run.parent.parent)
        split = split.rename(split.with_name(f"{demo}-{split.name}"))
        which = checkpoint_with_eval(run) if how == "step" else how
        args = ["eval", run.name, "--runs-dir", str(runs), "--data", str(split), "--json"]
        args += ["--checkpoint", which] if which else []
        proc = subprocess.Popen([sys.executable, "-m", "tui", *args], cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        started[demo] = (run, split, which, proc)
    done = {}
    for demo, (run, split, which, proc) in started.items():
        out, err = proc.communicate(timeout=600)
        done[demo] = {"run": run, "data": split, "checkpoint": which, "rc": proc.returncode, "stdout": out,
                      "stderr": err}
    return done


@pytest.mark.parametrize("demo", list(DEMOS))
def test_eval_reproduces_the_runs_own_evaluation_at_that_checkpoint(evaluated: dict, demo: str) -> None:
    got = evaluated[demo]
    assert got["rc"] == 0, got["stderr"][-3000:]
    result = json.loads(got["stdout"])  # stdout is the one JSON object and nothing else
    step = result["checkpoint"]["step"]
    assert isinstance(step, int), result["checkpoint"]
    if got["checkpoint"] not in (None, "best"):
        assert result["checkpoint"]["name"] == f"checkpoint-{got['checkpoint']}"
    recorded = {k: v for k, v in eval_at(got["run"], step).items() if not any(n in k for n in NOT_COMPARED)}
    assert recorded and set(recorded) <= set(result["metrics"]), (sorted(recorded), sorted(result["metrics"]))
    for name, value in recorded.items():
        assert result["metrics"][name] == pytest.approx(value, rel=1e-4, abs=1e-4), name
    spec = loading.run_spec(got["run"])
    _, split = data.load_splits(spec)
    assert result["data"]["rows"] == len(split) and result["data"]["path"] == str(got["data"])
    assert result["overlap"]["checked"] and result["overlap"]["eval"] == len(split)
    warning = next(line for line in got["stderr"].splitlines() if line.startswith("ftui eval: warning: "))
    assert "not held out" in warning and (f"{len(split):,} in its eval data" in warning
                                          or f"{len(split):,} of the {len(split):,} rows of" in warning), warning
    assert result["primary"] == evaluate.primary_metric(spec) and result["primary"] in result["metrics"]


@pytest.mark.parametrize("demo", ["demo", "demo_simpletransformers"])
def test_classification_adds_a_confusion_matrix_that_sums_to_the_rows(evaluated: dict, demo: str) -> None:
    result = json.loads(evaluated[demo]["stdout"])
    matrix = result["confusion_matrix"]
    labels = matrix["labels"]
    config = json.loads((Path(result["checkpoint"]["path"]) / "config.json").read_text())
    assert labels == [config["id2label"][k] for k in sorted(config["id2label"], key=int)]
    cells = matrix["matrix"]
    assert len(cells) == len(labels) and all(len(row) == len(labels) for row in cells)
    assert sum(map(sum, cells)) == result["data"]["rows"]
    diagonal = sum(cells[i][i] for i in range(len(labels)))
    assert diagonal / result["data"]["rows"] == pytest.approx(result["metrics"]["eval_accuracy"])


def test_a_language_model_adds_the_perplexity_of_its_loss_tokens(evaluated: dict) -> None:
    result = json.loads(evaluated["demo_sft"]["stdout"])
    metrics = result["metrics"]
    assert result["tokens"] > result["data"]["rows"]  # assistant tokens only, but several a row
    # the short demo's eval split fits one eval batch: the token mean is the Trainer's batch mean
    assert metrics["perplexity"] == pytest.approx(math.exp(metrics["eval_loss"]), rel=1e-6)
    assert metrics["eval_perplexity"] == pytest.approx(math.exp(metrics["eval_loss"]), rel=1e-6)
    assert result["confusion_matrix"] is None


def test_the_result_is_recorded_in_the_run_dir(evaluated: dict) -> None:
    for got in evaluated.values():
        result = json.loads(got["stdout"])
        saved = Path(result["file"])
        assert saved.parent == got["run"] / evaluate.EVALUATIONS_DIR and saved.is_file()
        assert json.loads(saved.read_text()) == {k: v for k, v in result.items() if k != "file"}
        assert [p.name for p in saved.parent.iterdir()] == [saved.name], "one file, no temp file left"
        assert result["data"]["sha256"] and result["data"]["size"] == got["data"].stat().st_size
        assert result["seconds"] > 0 and result["device"] == "cpu" and result["created_at"] > 0


def test_the_text_report_shows_metrics_and_the_confusion_matrix(evaluated: dict, capsys: pytest.CaptureFixture) -> None:
    from tui.commands.eval import _print

    result = json.loads(evaluated["demo"]["stdout"])
    _print(result, result["file"])
    shown = capsys.readouterr().out
    assert "accuracy *" in shown and "confusion matrix (rows: true label, columns: predicted)" in shown
    assert result["checkpoint"]["name"] in shown and result["data"]["name"] in shown
    for row in result["confusion_matrix"]["matrix"]:
        assert " ".join(str(n) for n in row) in " ".join(shown.split())


def test_ftui_runs_lists_the_held_out_metric(evaluated: dict) -> None:
    runs = evaluated["demo"]["run"].parent
    listed = ftui("runs", "--runs-dir", str(runs), "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {r["id"]: r for r in json.loads(listed.stdout)}
    for got in evaluated.values():
        result = json.loads(got["stdout"])
        held = rows[got["run"].name]["held_out"]
        assert held["metric"] == result["primary"] and held["value"] == result["metrics"][result["primary"]]
        assert held["record"] == result["file"] and held["checkpoint"] == result["checkpoint"]["name"]
    table = ftui("runs", "--runs-dir", str(runs), env={**os.environ, "COLUMNS": "200"})
    assert "held-out" in table.stdout and "accuracy=" in table.stdout


async def test_the_runs_list_shows_the_newest_held_out_result(evaluated: dict) -> None:
    from textual.widgets import DataTable

    from tui.screens.runs import RunsScreen

    runs = evaluated["demo"]["run"].parent
    app = make_app(runs_dir=runs, telemetry=FrozenTelemetry(nvml=h100_nvml(0)))
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(lambda: isinstance(app.screen, RunsScreen) and len(app.screen.rows) == len(evaluated))(pilot)
        screen = app.screen
        assert "held-out" in screen.columns
        table = screen.query_one("#runs", DataTable)
        headers = [str(c.label) for c in table.columns.values()]
        assert headers.index("held-out") == headers.index("best") + 1
        for row in screen.rows:
            result = json.loads(next(g for g in evaluated.values() if g["run"] == row["path"])["stdout"])
            name, value = result["primary"].removeprefix("eval_"), result["metrics"][result["primary"]]
            assert row["held-out"] == f"{name} {value:.4g}"
            assert table.get_row(row["run"])[headers.index("held-out")] == row["held-out"]


async def test_the_monitor_shows_the_held_out_result_under_the_evaluations(evaluated: dict) -> None:
    from runners.watch.sources import open_source
    from tui.screens.monitor import MonitorScreen
    from tui.widgets.eval_table import HeldOut

    got = evaluated["demo"]
    result = json.loads(got["stdout"])
    app = make_app(runs_dir=got["run"].parent, source=open_source(str(got["run"])),
                   telemetry=FrozenTelemetry(nvml=h100_nvml(0)))
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(lambda: isinstance(app.screen, MonitorScreen) and app.screen.polls > 0)(pilot)
        await pilot.pause(0.3)
        held = app.screen.query_one(HeldOut)
        assert held.display
        text = str(held.render())
        assert got["data"].name in text and result["checkpoint"]["name"] in text
        assert f"accuracy {result['metrics']['eval_accuracy']:.4g}" in text and f"{result['data']['rows']} rows" in text
        console = Console(file=io.StringIO(), width=120, record=True)
        console.print(app.screen._compositor.render_update(full=True))
        assert "held-out " + got["data"].name in console.export_text()


# -- inputs that must be refused -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the hf demo run, for the refusals."""
    return copy_run(demo_run(tmp_path_factory, "demo"), tmp_path_factory.mktemp("refusals") / "runs")


def _bad_file(kind: str, folder: Path, run: Path) -> Path:
    rows = data.load_splits(loading.run_spec(run))[1].head(6)
    path = folder / f"{kind}.csv"
    if kind == "unreadable":
        path = folder / "unreadable.parquet"
        path.write_text("this is not parquet")
    elif kind == "no_label":
        rows[["text"]].to_csv(path, index=False)
    elif kind == "unknown_label":
        rows = rows.astype({"label": object})
        rows.loc[rows.index[:2], "label"] = "maybe"
        rows.to_csv(path, index=False)
    elif kind == "empty_text":
        rows.loc[rows.index[0], "text"] = ""
        rows.to_csv(path, index=False)
    return path


@pytest.mark.parametrize("kind, said", [
    ("missing", "no such file"),
    ("unreadable", "cannot be read as PARQUET"),
    ("no_label", "has no column 'label'"),
    ("unknown_label", "labels the model does not know: 'maybe' (2 rows)"),
    ("empty_text", "empty"),
])
def test_bad_input_exits_2_naming_the_fix_and_records_nothing(classifier: Path, tmp_path: Path, kind: str,
                                                              said: str) -> None:
    path = _bad_file(kind, tmp_path, classifier)
    proc = ftui("eval", classifier.name, "--runs-dir", str(classifier.parent), "--data", str(path))
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert proc.stderr.startswith("ftui: error: --data ") and said in proc.stderr, proc.stderr
    assert str(path) in proc.stderr
    assert not (classifier / evaluate.EVALUATIONS_DIR).exists()


def test_a_run_without_a_checkpoint_exits_2_and_records_nothing(classifier: Path, tmp_path: Path) -> None:
    bare = copy_run(classifier, tmp_path / "runs")
    shutil.rmtree(bare / rundir.OUTPUT_DIR)  # and no checkpoint recorded (a recorded one may live elsewhere)
    kept = [line for line in (bare / "events.jsonl").read_text().splitlines() if '"type":"checkpoint"' not in line]
    (bare / "events.jsonl").write_text("\n".join(kept) + "\n")
    split = eval_split_file(bare, tmp_path)
    proc = ftui("eval", bare.name, "--runs-dir", str(bare.parent), "--data", str(split))
    assert proc.returncode == 2 and "has nothing to load" in proc.stderr, proc.stderr
    wrong = ftui("eval", bare.name, "--runs-dir", str(bare.parent), "--data", str(split), "--checkpoint", "7")
    assert wrong.returncode == 2 and "no checkpoint-7" in wrong.stderr, wrong.stderr
    assert not (bare / evaluate.EVALUATIONS_DIR).exists()


# -- the pieces without a model ---------------------------------------------------------------------------------

def test_overlap_counts_the_rows_the_run_trained_on(classifier: Path) -> None:
    spec = loading.run_spec(classifier)
    train, evaluation = data.load_splits(spec)
    roles = data.roles_for(train, spec, "train")
    seen = pd.concat([train.head(5), evaluation.head(3)], ignore_index=True)
    found = evaluate.overlap(seen, roles, spec)
    assert found["checked"] and found["rows"] == 8 and found["train"] >= 5 and found["eval"] >= 3
    unseen = seen.head(2).assign(text=["a sentence no run has seen", "nor this one"])
    assert evaluate.overlap(unseen, roles, spec) == {"checked": True, "rows": 2, "train": 0, "eval": 0}


def test_label_ids_name_every_unknown_label() -> None:
    assert evaluate.label_ids([1, 0, 1.0], ["0", "1"], Path("t.csv"), "label") == [1, 0, 1]
    with pytest.raises(UserError) as err:
        evaluate.label_ids(["pos", "neg", "meh", "meh", "?"], ["neg", "pos"], Path("t.csv"), "label")
    assert "'meh' (2 rows), '?' (1 row)" in str(err.value) and "labels are: neg, pos" in str(err.value)


def test_confusion_counts_true_by_predicted() -> None:
    assert evaluate.confusion([0, 0, 1, 1, 1], [0, 1, 1, 1, 0], ["a", "b"]) == {"labels": ["a", "b"],
                                                                                "matrix": [[1, 1], [1, 2]]}


def test_perplexity_weights_each_batch_by_its_loss_tokens() -> None:
    """The trainers average the loss per batch; the perplexity is over tokens: a batch of three loss tokens
    weighs three times one of one (causal LMs: labels shifted, -100 masked)."""
    import torch

    from runners.results.evaluate_worker import Progress, counting

    class Trainer:
        def prediction_step(self, model: Any, inputs: Any, prediction_loss_only: bool, ignore_keys: Any = None) -> Any:
            return inputs["loss"], None, None

    seen: list[dict[str, int]] = []
    trainer = counting(Trainer, Progress(lambda **p: seen.append(p), total=5, batch=4), "causal")()
    for loss, labels in ((2.0, [[7, 8, -100]]), (4.0, [[7, 8, 9, 10]])):
        trainer.prediction_step(None, {"loss": torch.tensor(loss), "labels": torch.tensor(labels)}, True)
    assert trainer.tokens == 1 + 3 and trainer.token_loss / trainer.tokens == pytest.approx((2.0 + 4.0 * 3) / 4)
    assert seen == [{"done": 4, "total": 5}, {"done": 5, "total": 5}]
