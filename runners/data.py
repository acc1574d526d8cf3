"""Datasets for every runner: CSV/TSV/JSONL/JSON/parquet files or a datasets hub id, column roles
detected (or mapped in the spec), a seeded train/eval split, and sample caps.

Everything that can be wrong with the data (missing file, unreadable file, missing column, and in a scan of
every row: undecodable bytes, malformed lines, ragged rows, empty texts or labels, text columns without text)
is found by :func:`preflight` before a run dir is created, with a message that names the file, the column and
the rows. The whole-file scan lives in :mod:`runners.data_scan`; :func:`scan_file` picks its reader for a
dataset.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, overload

from runners.data_scan import TEXT_ROLES, DataScan, scan_csv, scan_frame, scan_jsonl, scan_parquet
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
    with path.open("rb") as fh:
        first = fh.readline().strip()
    return first.startswith(b"{") and first.endswith(b"}")


@overload
def _pick(columns: list[str], wanted: str | None, names: tuple[str, ...], role: str, ds_source: str,
          required: Literal[True] = True) -> str: ...
@overload
def _pick(columns: list[str], wanted: str | None, names: tuple[str, ...], role: str, ds_source: str,
          required: bool) -> str | None: ...
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


def roles_for(frame: Any, spec: RunSpec, source: str) -> dict[str, str]:
    """The column roles of a dataset for the spec's runner: the sft runner's formats (``runners.chat_data``:
    messages, or prompt and completion, or text), else :func:`detect_columns` for the task."""
    if spec.runner == "sft":
        from runners import chat_data

        return chat_data.detect([str(c) for c in frame.columns], spec.dataset, source).roles
    return detect_columns(frame, spec.dataset, spec.task, source)


def apply_rules(frame: Any, spec: RunSpec, source: str) -> Any:
    """The preflight's policy applied at run time: rows with an empty role column dropped when
    dataset.drop_empty is set, and text columns as str (pandas types a chunk of digits as numbers).
    ``ftui eval`` reads a held-out file with the same."""
    roles = roles_for(frame, spec, source)
    if getattr(spec.dataset, "drop_empty", False):
        frame = drop_empty_rows(frame, roles)
    for role, col in roles.items():
        if role in TEXT_ROLES and frame[col].dtype == object:
            frame[col] = frame[col].map(lambda v: v if isinstance(v, (str, float)) or v is None else str(v))
    return frame


def load_splits(spec: RunSpec) -> tuple[Any, Any]:
    """(train, eval) DataFrames: the eval file, or a seeded split of the train file; caps applied."""
    ds = spec.dataset
    train = apply_rules(load_table(ds.train, ds.hub_config), spec, ds.train)
    if ds.eval:
        evaluation = apply_rules(load_table(ds.eval, ds.hub_config), spec, ds.eval)
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
    """Detect the columns from the head of each data file, then scan every row of it (:func:`scan_file`):
    every data error surfaces before launch."""
    if not spec.dataset.train:
        raise UserError("The spec has no dataset.train: give a CSV/JSONL/parquet path or a datasets hub id.")
    head = load_table(spec.dataset.train, spec.dataset.hub_config, nrows=50)
    if len(head) == 0:
        raise UserError(f"Dataset '{spec.dataset.train}' has no rows.")
    roles = roles_for(head, spec, spec.dataset.train)
    sources = [(spec.dataset.train, roles)]
    if spec.dataset.eval:
        sources.append((spec.dataset.eval, roles_for(load_table(spec.dataset.eval, spec.dataset.hub_config, nrows=50),
                                                     spec, spec.dataset.eval)))
    drop = bool(getattr(spec.dataset, "drop_empty", False))
    for source, file_roles in sources:
        scan = scan_file(source, file_roles, spec.dataset.hub_config)
        scan.raise_problems(drop)
        if drop and scan.empty_rows:
            if scan.empty_rows >= scan.rows:
                raise UserError(f"Dataset '{source}': every one of its {scan.rows:,} rows has an empty text or label, "
                                "so dataset.drop_empty would leave nothing to train on. Fill the columns "
                                f"{', '.join(file_roles.values())}.")
            import sys

            print(f"ftui: warning: dataset '{source}': dropping {scan.empty_rows:,} of {scan.rows:,} rows with an empty "
                  f"text or label (dataset.drop_empty: true)", file=sys.stderr)
    if spec.runner == "sft":  # every row in its format's shape, and the chat template works on the first ones
        from runners import chat_render

        chat_render.preflight(spec, [(source, file_roles) for source, file_roles in sources])
    return roles


def label_list(train: Any, evaluation: Any, column: str) -> list[Any]:
    """Sorted distinct labels over both splits, so ids agree between them."""
    values = set(train[column].tolist()) | set(evaluation[column].tolist())
    return sorted(values, key=lambda v: (str(type(v)), v))


def scan_file(source: str, roles: dict[str, str], hub_config: str | None = None) -> DataScan:
    """One streaming pass over the whole dataset, checking the role columns of every row
    (the scan itself is :mod:`runners.data_scan`)."""
    path = Path(source).expanduser()
    suffix = path.suffix.lower()
    if path.is_file() and suffix in (".csv", ".tsv"):
        scan = DataScan(source, roles, "data row")
        scan_csv(path, scan, "\t" if suffix == ".tsv" else ",")
    elif path.is_file() and (suffix == ".jsonl" or (suffix == ".json" and _looks_jsonl(path))):
        scan = DataScan(source, roles, "line")
        scan_jsonl(path, scan)
    elif path.is_file() and suffix == ".parquet":
        scan = DataScan(source, roles, "row")
        scan_parquet(path, scan)
    else:  # a JSON array or a hub dataset: loaded whole, as the runner does
        frame = load_table(source, hub_config)
        scan = DataScan(source, roles, "row")
        scan_frame(frame, scan)
    return scan


def drop_empty_rows(frame: Any, roles: dict[str, str]) -> Any:
    """The rows whose role columns all hold a value (what dataset.drop_empty keeps)."""
    keep = None
    for col in roles.values():
        column = frame[col]
        ok = column.notna() & ~column.map(lambda v: isinstance(v, str) and not v.strip())
        keep = ok if keep is None else keep & ok
    return frame[keep].reset_index(drop=True) if keep is not None else frame
