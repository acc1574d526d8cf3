"""Datasets for every runner: CSV/TSV/JSONL/JSON/parquet files or a datasets hub id, column roles
detected (or mapped in the spec), a seeded train/eval split, and sample caps.

Everything that can be wrong with the data (missing file, unreadable file, missing column) is found
by :func:`preflight` before a run dir is created, with a message that names the file and the column.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from runners.errors import UserError
from runners.spec import DatasetSpec, RunSpec

FILE_TYPES = (".csv", ".tsv", ".jsonl", ".json", ".parquet")
TEXT_NAMES = ("text", "sentence", "content", "review", "document", "input", "prompt", "question", "sentence1",
              "text_a", "premise")
PAIR_NAMES = ("text_pair", "sentence2", "text_b", "hypothesis", "context")
LABEL_NAMES = ("label", "labels", "target", "class", "score", "y")
TARGET_NAMES = ("target", "summary", "output", "response", "answer", "completion", "labels_text")
EMBEDDING_ROLES = ("anchor", "positive", "negative")


def load_table(source: str, hub_config: str | None = None, nrows: int | None = None) -> Any:
    """A pandas DataFrame from a local file or a datasets hub id (train split)."""
    import pandas as pd

    path = Path(source).expanduser()
    if path.suffix.lower() in FILE_TYPES or path.exists():
        if not path.is_file():
            raise UserError(f"Dataset file '{source}' does not exist. Check the path (relative paths in a spec are "
                            "relative to the spec file).")
        suffix = path.suffix.lower()
        try:
            if suffix in (".csv", ".tsv"):
                return pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", nrows=nrows)
            if suffix in (".jsonl", ".json"):
                frame = pd.read_json(path, lines=suffix == ".jsonl" or _looks_jsonl(path), nrows=nrows)
                return frame
            if suffix == ".parquet":
                frame = pd.read_parquet(path)
                return frame.head(nrows) if nrows else frame
        except (ValueError, OSError, UnicodeDecodeError) as exc:
            raise UserError(f"Dataset file '{source}' cannot be read as {suffix[1:].upper()}: {exc}. "
                            "Fix the file or convert it to CSV, JSONL or parquet.") from exc
        raise UserError(f"Dataset file '{source}' has an unsupported type '{suffix}'. Use CSV, TSV, JSONL or parquet.")
    try:
        from datasets import load_dataset

        frame = load_dataset(source, hub_config, split="train").to_pandas()
    except Exception as exc:  # noqa: BLE001 - any hub failure is the same user-facing problem
        raise UserError(f"Dataset '{source}' is neither a local file nor a loadable datasets hub id ({type(exc).__name__}: "
                        f"{str(exc)[:200]}). Pass a CSV/JSONL/parquet path, or a hub id when the hub is reachable.") from exc
    return frame.head(nrows) if nrows else frame


def _looks_jsonl(path: Path) -> bool:
    with path.open() as fh:
        first = fh.readline().strip()
    return first.startswith("{") and first.endswith("}")


def _pick(columns: list[str], wanted: str | None, names: tuple[str, ...], role: str, ds_source: str,
          required: bool = True) -> str | None:
    if wanted:
        if wanted not in columns:
            raise UserError(f"Dataset '{ds_source}' has no column '{wanted}' (the spec's {role} column). "
                            f"Its columns are: {', '.join(columns)}. Set dataset.{role}_column to one of them.")
        return wanted
    lower = {c.lower(): c for c in columns}
    for name in names:
        if name in lower:
            return lower[name]
    if required:
        raise UserError(f"Dataset '{ds_source}' has no {role} column ftui recognises (looked for "
                        f"{', '.join(names[:6])}). Its columns are: {', '.join(columns)}. "
                        f"Set dataset.{role}_column in the spec.")
    return None


def detect_columns(df: Any, ds: DatasetSpec, task: str, source: str = "dataset") -> dict[str, str]:
    """Column roles for the task: text (+ text_pair), label, or target; anchor/positive/negative/score."""
    columns = [str(c) for c in df.columns]
    mapping = dict(ds.columns)
    for role, col in mapping.items():
        if col not in columns:
            raise UserError(f"Dataset '{source}' has no column '{col}' (dataset.columns.{role}). "
                            f"Its columns are: {', '.join(columns)}.")
    if task == "embedding":
        if "anchor" in columns or "anchor" in mapping:
            roles = {r: mapping.get(r, r) for r in EMBEDDING_ROLES if r in mapping or r in columns}
            return roles
        roles = dict(mapping)
        roles.setdefault("text", _pick(columns, ds.text_column, TEXT_NAMES, "text", source))
        pair = _pick(columns, ds.text_pair_column, PAIR_NAMES, "text_pair", source, required=False)
        if pair:
            roles.setdefault("text_pair", pair)
        label = _pick(columns, ds.label_column, LABEL_NAMES, "label", source, required=False)
        if label:
            roles.setdefault("label", label)
        return {k: v for k, v in roles.items() if v}
    roles = {"text": mapping.get("text") or _pick(columns, ds.text_column, TEXT_NAMES, "text", source)}
    pair = mapping.get("text_pair") or _pick(columns, ds.text_pair_column, PAIR_NAMES, "text_pair", source, required=False)
    if pair and pair != roles["text"]:
        roles["text_pair"] = pair
    if task in ("seq-cls", "token-cls"):
        roles["label"] = mapping.get("label") or _pick(columns, ds.label_column, LABEL_NAMES, "label", source)
    elif task == "seq2seq":
        roles["target"] = mapping.get("target") or _pick(columns, ds.label_column, TARGET_NAMES, "target", source)
    return roles


def load_splits(spec: RunSpec) -> tuple[Any, Any]:
    """(train, eval) DataFrames: the eval file, or a seeded split of the train file; caps applied."""
    ds = spec.dataset
    train = load_table(ds.train, ds.hub_config)
    if ds.eval:
        evaluation = load_table(ds.eval, ds.hub_config)
    else:
        shuffled = train.sample(frac=1.0, random_state=ds.seed).reset_index(drop=True)
        n_eval = max(1, int(len(shuffled) * ds.eval_fraction))
        evaluation, train = shuffled.iloc[:n_eval].reset_index(drop=True), shuffled.iloc[n_eval:].reset_index(drop=True)
    if ds.max_train_samples:
        train = train.iloc[: ds.max_train_samples]
    if ds.max_eval_samples:
        evaluation = evaluation.iloc[: ds.max_eval_samples]
    if len(train) == 0:
        raise UserError(f"Dataset '{ds.train}' leaves no training rows after the eval split and caps. Add rows or "
                        "lower dataset.eval_fraction.")
    return train, evaluation


def preflight(spec: RunSpec) -> dict[str, str]:
    """Read the head of each data file and detect the columns: every data error surfaces before launch."""
    if not spec.dataset.train:
        raise UserError("The spec has no dataset.train: give a CSV/JSONL/parquet path or a datasets hub id.")
    head = load_table(spec.dataset.train, spec.dataset.hub_config, nrows=50)
    if len(head) == 0:
        raise UserError(f"Dataset '{spec.dataset.train}' has no rows.")
    roles = detect_columns(head, spec.dataset, spec.task, spec.dataset.train)
    if spec.dataset.eval:
        detect_columns(load_table(spec.dataset.eval, spec.dataset.hub_config, nrows=50), spec.dataset, spec.task,
                       spec.dataset.eval)
    return roles


def label_list(train: Any, evaluation: Any, column: str) -> list[Any]:
    """Sorted distinct labels over both splits, so ids agree between them."""
    values = set(train[column].tolist()) | set(evaluation[column].tolist())
    return sorted(values, key=lambda v: (str(type(v)), v))
