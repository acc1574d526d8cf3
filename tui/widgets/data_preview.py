"""A peek at a dataset file: the first rows and the columns ftui would use.

Read with the standard library (csv, json) and pyarrow for parquet, imported only when a parquet
file is previewed: pandas never loads in the UI process. Column roles use the same name lists as
runners/data.py, so the preview agrees with what a launch will detect.
"""
from __future__ import annotations

import csv
import json
from itertools import islice
from pathlib import Path
from typing import Any

from textual.content import Content

from runners.chat_data import MESSAGE_NAMES
from runners.data import FILE_TYPES, LABEL_NAMES, PAIR_NAMES, TEXT_NAMES

PREVIEW_ROWS = 4


def read_head(path: Path, rows: int = PREVIEW_ROWS) -> list[dict[str, Any]]:
    """The first ``rows`` records of a CSV/TSV/JSONL/JSON/parquet file (ValueError when unreadable)."""
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        with path.open(newline="", encoding="utf-8", errors="replace") as fh:
            return list(islice(csv.DictReader(fh, delimiter="\t" if suffix == ".tsv" else ","), rows))
    if suffix in (".jsonl", ".json"):
        with path.open(encoding="utf-8", errors="replace") as fh:
            first = fh.readline()
            if first.lstrip().startswith("["):
                data = json.loads(first + fh.read())
                return [r for r in data[:rows] if isinstance(r, dict)]
            lines = [first, *islice(fh, rows - 1)]
        return [json.loads(line) for line in lines if line.strip()]
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        batch = next(pq.ParquetFile(path).iter_batches(batch_size=rows), None)
        return batch.to_pylist() if batch is not None else []
    raise ValueError(f"unsupported file type '{suffix}' (use {', '.join(FILE_TYPES)})")


def detect_roles(columns: list[str]) -> dict[str, str]:
    """role -> column, by the names runners/data.py (and runners/chat_data.py for conversations) looks for."""
    lower = {c.lower(): c for c in columns}
    roles: dict[str, str] = {}
    for role, names in (("messages", MESSAGE_NAMES), ("text", TEXT_NAMES), ("text_pair", PAIR_NAMES),
                        ("label", LABEL_NAMES)):
        hit = next((lower[n] for n in names if n in lower), None)
        if hit:
            roles[role] = hit
    return roles


def cell(value: Any, width: int = 40) -> str:
    """One value of a row, shortened: a conversation as its turns (``user: ... / assistant: ...``)."""
    if isinstance(value, list) and value and all(isinstance(t, dict) and "role" in t for t in value):
        text = " / ".join(f"{t['role']}: {t.get('content', '')}" for t in value).replace("\n", " ")
        return text if len(text) <= 54 else text[:53] + "…"
    return str(value)[:width].replace("\n", " ")


def preview(source: str, rows_total: int | None) -> Content:
    """The preview text of a dataset field's value (a path, or a hub id that is only named)."""
    path = Path(source).expanduser()
    if not source:
        return Content.styled("no dataset: type a path (ctrl+f picks a file) or a hub id", "$text-muted")
    if not path.exists():
        if path.suffix.lower() in FILE_TYPES or source.startswith((".", "/", "~")):
            return Content.styled(f"'{source}' does not exist", "$error")
        return Content.styled(f"hub dataset '{source}': loaded at launch (needs the hub)", "$text-muted")
    if path.is_dir():
        return Content.styled(f"'{source}' is a directory: choose a CSV/JSONL/parquet file", "$error")
    try:
        head = read_head(path)
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        return Content.styled(f"cannot read '{path.name}': {exc}", "$error")
    if not head:
        return Content.styled(f"'{path.name}' has no rows", "$error")
    columns = list(head[0])
    roles = detect_roles(columns)
    role_text = ", ".join(f"{role}={col}" for role, col in roles.items()) or "no known column names: map them in the spec"
    parts: list[Any] = [(f"{rows_total if rows_total is not None else '?'} rows", "bold"), f" · {role_text}\n"]
    lines = [" │ ".join(cell(row.get(c, "")) for c in columns[:4]) for row in head]
    parts.append(("\n".join(lines), "$text-muted"))
    return Content.assemble(*parts)
