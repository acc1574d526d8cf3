"""``ftui eval``'s half without torch: a held-out file checked against the run, and the results in the run dir.

The file is read by the run's own data rules (runners/data.py: the spec's columns, drop_empty, the preflight's
whole-file scan) and its labels are checked against the model's (config.json's ``id2label``, as the runner
wrote it): a missing file or column, an unreadable row, a label the model does not know or a run without a
checkpoint is a UserError before any model loads, and nothing is recorded. The metrics are the worker's
(runners/results/evaluate_worker.py). Each result is written to ``RUN/evaluations/<time>-<checkpoint>.json``
(docs/rundir.md), which the runs list, the monitor and ``ftui runs`` read; nothing here imports torch, so the
dashboard reads the records cheaply.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runners import data, rundir
from runners.errors import UserError
from runners.plan import cadence
from runners.results.checkpoints import BASE_DIR, Checkpoint
from runners.spec import RunSpec

EVALUATIONS_DIR = "evaluations"
RECORD_VERSION = 1
NOT_READ = ("label", "score")  # roles the model is scored against, not text it reads: overlap compares the rest
TIMINGS = ("runtime", "per_second", "model_preparation_time", "num_tokens", "num_input_tokens")  # not the file's
SHOWN_LABELS = 8  # unknown labels quoted in a message


@dataclass
class Prepared:
    """A file checked against a run, ready for the worker: what the record says about its input."""

    run_dir: Path
    spec: RunSpec
    checkpoint: Checkpoint
    data: Path
    rows: int
    roles: dict[str, str]
    file: dict[str, Any]                 # path, size, sha256
    overlap: dict[str, Any]              # rows also in the run's train / eval data, or why it was not checked
    notes: list[str] = field(default_factory=list)


# -- the file ---------------------------------------------------------------------------------------------------

def read(spec: RunSpec, source: Path) -> tuple[Any, dict[str, str]]:
    """The rows of a file and their column roles, by the run's rules; a UserError naming the file otherwise."""
    if not source.is_file():
        raise UserError(f"--data {source}: no such file. Give a CSV, TSV, JSONL, JSON or parquet file with the "
                        "columns the run trained on.")
    try:
        frame = data.load_table(str(source), spec.dataset.hub_config)
    except UserError as exc:
        raise UserError(f"--data {source}: {exc}") from exc
    try:
        roles = data.roles_for(frame, spec, str(source))
    except UserError as exc:
        raise UserError(f"--data {source}: {exc} (ftui eval reads the file by the run's own column rules: give it the "
                        "run's column names.)") from exc
    try:
        data.scan_file(str(source), roles, spec.dataset.hub_config).raise_problems(bool(spec.dataset.drop_empty))
    except UserError as exc:
        raise UserError(f"--data {source}: {exc}") from exc
    frame = data.apply_rules(frame, spec, str(source))
    if len(frame) == 0:
        raise UserError(f"--data {source} has no rows to evaluate on.")
    return frame[list(dict.fromkeys(roles.values()))], roles


def file_facts(path: Path) -> dict[str, Any]:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return {"path": str(path), "name": path.name, "size": path.stat().st_size, "sha256": digest.hexdigest()}


# -- labels -----------------------------------------------------------------------------------------------------

def config_labels(checkpoint: Checkpoint, run_dir: Path) -> list[str] | None:
    """The model's label names in id order, from the checkpoint's config.json (or the base a LoRA run saved);
    None when neither says (the worker checks against the loaded model then)."""
    for folder in (checkpoint.path, run_dir / rundir.OUTPUT_DIR / BASE_DIR):
        try:
            config = json.loads((folder / "config.json").read_text())
        except (OSError, ValueError):
            continue
        id2label = config.get("id2label")
        if isinstance(id2label, dict) and id2label:
            return [str(id2label[k]) for k in sorted(id2label, key=int)]
    return None


def resolve_labels(names: list[str], spec: RunSpec, notes: list[str]) -> list[str]:
    """The names, unless they are transformers' placeholders (LABEL_0, LABEL_1, ...), which a simpletransformers
    run from pretrained weights leaves: then the run's own sorted labels of its splits, the ids its runner gave."""
    if len(names) < 2 or any(n != f"LABEL_{i}" for i, n in enumerate(names)):
        return names
    try:
        train, evaluation = data.load_splits(spec)
        column = data.detect_columns(train, spec.dataset, "seq-cls", spec.dataset.train)["label"]
        found = [label_key(v) for v in data.label_list(train, evaluation, column)]
    except (UserError, OSError, ValueError):
        return names
    if len(found) != len(names):
        return names
    notes.append(f"the model's config names its labels {names[0]}..; their values come from the run's data: "
                 f"{', '.join(found)}")
    return found


def label_key(value: Any) -> str:
    """A label value as the runners name it (``str(v)``); numpy scalars as Python ones."""
    value = value.item() if hasattr(value, "item") else value
    return str(value)


def label_ids(values: list[Any], labels: list[str], source: Path, column: str) -> list[int]:
    """Each row's label id in the model's order; a UserError naming every label the model does not know."""
    index = {name: i for i, name in enumerate(labels)}
    ids: list[int] = []
    unknown: dict[str, int] = {}
    for value in values:
        key = label_key(value)
        if key not in index and isinstance(value, float) and value.is_integer():
            key = str(int(value))  # a column with a gap reads 1 as 1.0
        if key in index:
            ids.append(index[key])
        else:
            unknown[key] = unknown.get(key, 0) + 1
    if unknown:
        shown = ", ".join(f"'{k}' ({n} row{'s' * (n != 1)})" for k, n in list(unknown.items())[:SHOWN_LABELS])
        more = f" and {len(unknown) - SHOWN_LABELS} more" if len(unknown) > SHOWN_LABELS else ""
        raise UserError(f"--data {source}: column '{column}' has labels the model does not know: {shown}{more}. The "
                        f"model's labels are: {', '.join(labels)}. Fix those rows, or evaluate a run trained on "
                        "these labels.")
    return ids


# -- overlap with the run's own data ----------------------------------------------------------------------------

def _plain(value: Any) -> Any:
    return value.tolist() if hasattr(value, "tolist") and not isinstance(value, str) else value


def row_keys(frame: Any, roles: dict[str, str], wanted: list[str]) -> list[str]:
    """One key a row: the exact text of the columns the model reads (``wanted`` roles, in order)."""
    columns = [frame[roles[r]].tolist() for r in wanted]
    return [json.dumps([_plain(v) for v in row], sort_keys=True, default=str) for row in zip(*columns)]


def overlap(frame: Any, roles: dict[str, str], spec: RunSpec) -> dict[str, Any]:
    """How many rows of the file the run saw: the same text as a row of its training data, or of its eval data
    (the splits and caps it trained with). ``checked`` False with ``why`` when its data cannot be read now."""
    wanted = [r for r in roles if r not in NOT_READ]
    try:
        splits = data.load_splits(spec)
        mine = row_keys(frame, roles, wanted)
        found: dict[str, Any] = {"checked": True, "rows": len(mine)}
        for name, split in zip(("train", "eval"), splits):
            theirs = data.roles_for(split, spec, name)
            seen = set(row_keys(split, theirs, wanted)) if all(r in theirs for r in wanted) else set()
            found[name] = sum(key in seen for key in mine)
    except Exception as exc:  # noqa: BLE001 - the check is a courtesy: its failure must not stop the evaluation
        return {"checked": False, "why": f"{type(exc).__name__}: {str(exc)[:200]}"}
    return found


def overlap_warning(prepared: Prepared) -> str | None:
    seen = prepared.overlap
    if not seen.get("checked") or not (seen.get("train") or seen.get("eval")):
        return None
    parts = [f"{seen[name]:,} of the {seen['rows']:,} rows of {prepared.data.name} are in the run's {name} data"
             for name in ("train", "eval") if seen.get(name)]
    if len(parts) == 2:
        parts[1] = f"{seen['eval']:,} in its eval data"
    return f"{', and '.join(parts)} (the same text): the run has seen them, so they are not held out"


# -- before the worker ------------------------------------------------------------------------------------------

def prepare(run_dir: Path, source: str, which: str | None) -> Prepared:
    """Everything checkable without a model: the run's spec and checkpoint, the file and its labels."""
    from runners.results import loading  # torch-free at import; its load() runs in the worker only

    notes: list[str] = []
    spec = loading.run_spec(run_dir)
    path = Path(source).expanduser().resolve()
    frame, roles = read(spec, path)
    checkpoint = loading.choose(run_dir, which, notes)
    if spec.task == "seq-cls" and spec.runner != "sentence_transformers":
        names = config_labels(checkpoint, run_dir)
        if names is not None and len(names) > 1:
            label_ids(frame[roles["label"]].tolist(), resolve_labels(names, spec, notes), path, roles["label"])
    return Prepared(run_dir, spec, checkpoint, path, len(frame), roles, file_facts(path),
                    overlap(frame, roles, spec), notes)


# -- the record -------------------------------------------------------------------------------------------------

def primary_metric(spec: RunSpec) -> str:
    """The metric the run ranks its checkpoints by: the held-out number shown beside its best."""
    metric = spec.cadence.metric_for_best_model or spec.training.get("metric_for_best_model") \
        or cadence.default_metric(spec.task, spec.runner)
    metric = str(metric)
    return metric if metric.startswith("eval_") else f"eval_{metric}"


def clean_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The metrics of the file: numbers only (NaN as None is left out), no timings or training counters."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if key == "epoch" or any(t in key for t in TIMINGS):
            continue
        value = value.item() if hasattr(value, "item") else value
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[key] = float(value)
    return out


def confusion(true: list[int], predicted: list[int], labels: list[str]) -> dict[str, Any]:
    """Counts by true label (rows) and predicted label (columns), named."""
    matrix = [[0] * len(labels) for _ in labels]
    for t, p in zip(true, predicted):
        matrix[int(t)][int(p)] += 1
    return {"labels": list(labels), "matrix": matrix}


def record(prepared: Prepared, result: dict[str, Any], seconds: float, now: float | None = None) -> tuple[Path, dict]:
    """Write one result into the run dir (atomically: readers never see half a file); its path and content."""
    now = time.time() if now is None else now
    ckpt = prepared.checkpoint
    content = {
        "v": RECORD_VERSION, "created_at": round(now, 3), "run": prepared.run_dir.name,
        "runner": prepared.spec.runner, "task": prepared.spec.task,
        "data": {**prepared.file, "rows": result.get("rows", prepared.rows)},
        "checkpoint": {"name": ckpt.name, "step": ckpt.step, "path": str(ckpt.path), "kind": ckpt.kind, "why": ckpt.why},
        "primary": primary_metric(prepared.spec), "metrics": clean_metrics(result.get("metrics") or {}),
        "confusion_matrix": result.get("confusion_matrix"), "tokens": result.get("tokens"),
        "overlap": prepared.overlap, "seconds": round(seconds, 2), "device": result.get("device"),
        "notes": list(dict.fromkeys([*prepared.notes, *result.get("notes", [])])),
    }
    folder = prepared.run_dir / EVALUATIONS_DIR
    folder.mkdir(exist_ok=True)
    stem = f"{time.strftime('%Y%m%d-%H%M%S', time.localtime(now))}-{re.sub(r'[^A-Za-z0-9_.-]+', '-', ckpt.name)}"
    path, n = folder / f"{stem}.json", 2
    while path.exists():
        path, n = folder / f"{stem}-{n}.json", n + 1
    rundir.write_json_atomic(path, content)
    return path, content


def records(run_dir: Path) -> list[dict[str, Any]]:
    """Every held-out result of a run, oldest first (unreadable files skipped); each with its ``file``."""
    try:
        paths = [p for p in (run_dir / EVALUATIONS_DIR).iterdir() if p.suffix == ".json" and not p.name.startswith(".")]
    except OSError:
        return []
    found = []
    for path in paths:
        try:
            content = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(content, dict) and isinstance(content.get("metrics"), dict):
            found.append({**content, "file": str(path)})
    return sorted(found, key=lambda r: (r.get("created_at") or 0, r["file"]))


def latest(run_dir: Path) -> dict[str, Any] | None:
    found = records(run_dir)
    return found[-1] if found else None


def headline(content: dict[str, Any]) -> tuple[str, float] | None:
    """The number a list shows for a result: the run's own ranking metric, else the loss, else the first."""
    metrics = content.get("metrics") or {}
    for name in (content.get("primary"), "eval_loss", *metrics):
        if isinstance(name, str) and isinstance(metrics.get(name), (int, float)):
            return name, float(metrics[name])
    return None


def short(content: dict[str, Any] | None) -> str:
    """``accuracy 0.93``: a result in one cell ('' for none)."""
    top = headline(content) if content else None
    return f"{top[0].removeprefix('eval_')} {top[1]:.4g}" if top else ""


def line(content: dict[str, Any], metrics: int = 4) -> str:
    """One line naming the file, the checkpoint and the first metrics: the monitor's held-out line."""
    shown = [content.get("primary"), "eval_loss", *content.get("metrics", {})]
    names = [n for n in dict.fromkeys(shown) if isinstance(n, str) and n in content.get("metrics", {})][:metrics]
    values = " · ".join(f"{n.removeprefix('eval_')} {content['metrics'][n]:.4g}" for n in names)
    data_ = content.get("data") or {}
    ckpt = content.get("checkpoint") or {}
    when = time.strftime("%m-%d %H:%M", time.localtime(content.get("created_at") or 0))
    return (f"held-out {data_.get('name', '?')} ({data_.get('rows', '?')} rows) · {ckpt.get('name', '?')} · {values} "
            f"· {when}")
