"""Instruction-tuning data (the ``sft`` runner): which of trl's three formats a dataset is in, each row checked
and turned into what trl's SFTTrainer takes, and where the chat template comes from.

The formats: ``messages`` (a list of ``{"role", "content"}`` turns per row, conversational), ``prompt-completion``
(two text columns) and ``text`` (one text column, plain language modelling). ``dataset.format: auto`` picks one
from the column names (``dataset.columns`` maps them explicitly: ``messages``, ``prompt``, ``completion``, ``text``).
The chat template is the spec's own (``dataset.chat_template``: a Jinja string or a template file) or the
tokenizer's (``tokenizer_config.json``, ``chat_template.jinja`` or ``chat_template.json`` of a local or cached
tokenizer). Plain data and files only: nothing here imports pandas, torch or transformers, so the planner and the
dashboard use it too.
"""
from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

from runners.errors import UserError

FORMATS = ("auto", "messages", "prompt-completion", "text")
MESSAGE_NAMES = ("messages", "conversations", "conversation", "chat", "dialogue")
PROMPT_NAMES = ("prompt", "instruction", "question", "query", "input")
COMPLETION_NAMES = ("completion", "response", "answer", "output", "chosen")
TEXT_NAMES = ("text", "content", "document", "sentence")
LISTED = 5  # rows quoted per problem
TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json", "tokenizer_config.json")


@dataclass(frozen=True)
class Layout:
    """The format of a dataset and its columns: role (messages / prompt / completion / text) -> column."""

    format: str
    roles: dict[str, str]

    @classmethod
    def of(cls, roles: dict[str, str]) -> Layout:
        """The layout that :func:`detect` returned these roles for."""
        fmt = "messages" if "messages" in roles else "prompt-completion" if "prompt" in roles else "text"
        return cls(fmt, dict(roles))


def _find(columns: list[str], names: tuple[str, ...]) -> str | None:
    lower = {c.lower(): c for c in columns}
    return next((lower[n] for n in names if n in lower), None)


def detect(columns: list[str], ds: Any, source: str) -> Layout:
    """The layout of a dataset from its column names and the spec (``dataset.format``, ``dataset.columns``,
    ``dataset.text_column``); a UserError naming the columns and the fix when none fits."""
    mapping = dict(ds.columns or {})
    for role, col in mapping.items():
        if col not in columns:
            raise UserError(f"Dataset '{source}' has no column '{col}' (dataset.columns.{role}). "
                            f"Its columns are: {', '.join(columns)}.")
    wanted = getattr(ds, "format", "auto") or "auto"
    found = {
        "messages": mapping.get("messages") or _find(columns, MESSAGE_NAMES),
        "prompt": mapping.get("prompt") or _find(columns, PROMPT_NAMES),
        "completion": mapping.get("completion") or _find(columns, COMPLETION_NAMES),
        "text": mapping.get("text") or ds.text_column or _find(columns, TEXT_NAMES),
    }
    if ds.text_column and ds.text_column not in columns:
        raise UserError(f"Dataset '{source}' has no column '{ds.text_column}' (the spec's dataset.text_column). "
                        f"Its columns are: {', '.join(columns)}.")
    fix = ("Name the columns 'messages' (a list of {role, content} turns), 'prompt' and 'completion', or 'text'; or map "
           "them with dataset.columns (messages: COL, or prompt: COL and completion: COL, or text: COL) and set "
           "dataset.format.")
    order = ("messages", "prompt-completion", "text") if wanted == "auto" else (wanted,)
    for fmt in order:
        needed = ("prompt", "completion") if fmt == "prompt-completion" else (fmt,)
        if all(found[r] for r in needed):
            return Layout(fmt, {r: str(found[r]) for r in needed})
    if wanted != "auto":
        missing = [r for r in (("prompt", "completion") if wanted == "prompt-completion" else (wanted,)) if not found[r]]
        raise UserError(f"Dataset '{source}' is not in the {wanted} format the spec asks for (dataset.format): no "
                        f"{' or '.join(missing)} column among {', '.join(columns)}. {fix}")
    raise UserError(f"Dataset '{source}' is in none of the sft runner's formats (messages, prompt-completion, text): "
                    f"its columns are {', '.join(columns)}. {fix}")


# -- rows --------------------------------------------------------------------------------------------------------
def _plain(value: Any) -> Any:
    """Lists and dicts as plain Python (pandas hands parquet lists over as numpy arrays; CSV as JSON text)."""
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        value = value.tolist()
    if isinstance(value, str) and value.lstrip().startswith("["):
        try:
            value = json.loads(value)
        except ValueError:
            return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def message_problem(value: Any) -> str | None:
    """Why a ``messages`` value cannot be trained on (None when it can)."""
    value = _plain(value)
    if not isinstance(value, list) or not value:
        return f"not a list of turns (got {type(value).__name__ if value is not None else 'nothing'})"
    for i, turn in enumerate(value):
        if not isinstance(turn, dict) or not isinstance(turn.get("role"), str) or not turn["role"].strip():
            return f"turn {i + 1} has no 'role' (each turn is {{\"role\": ..., \"content\": ...}})"
        if not isinstance(turn.get("content"), str):
            return f"turn {i + 1} ({turn['role']}) has no text 'content'"
    if not any(t["role"] == "assistant" for t in value):
        return "no assistant turn: nothing to learn from"
    return None


def example(row: dict[str, Any], layout: Layout) -> dict[str, Any]:
    """One row as trl takes it: {"messages": [...]}, {"prompt": ..., "completion": ...} or {"text": ...}."""
    if layout.format == "messages":
        turns = _plain(row[layout.roles["messages"]])
        return {"messages": [{"role": t["role"], "content": t["content"]} for t in turns]}
    if layout.format == "prompt-completion":
        return {"prompt": str(row[layout.roles["prompt"]]), "completion": str(row[layout.roles["completion"]])}
    return {"text": str(row[layout.roles["text"]])}


def row_problem(row: dict[str, Any], layout: Layout) -> str | None:
    if layout.format == "messages":
        return message_problem(row.get(layout.roles["messages"]))
    for role, col in layout.roles.items():
        value = row.get(col)
        if not isinstance(value, str):
            return f"'{col}' (the {role}) is {type(value).__name__ if value is not None else 'missing'}, not text"
    return None


def iter_records(source: str, limit: int | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """(row number, record) of a local CSV/TSV/JSONL/JSON/parquet file, read with the standard library (and
    pyarrow for parquet); an unreadable line is skipped (the whole-file scan reports it)."""
    path = Path(source).expanduser()
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        with path.open(newline="", encoding="utf-8", errors="replace") as fh:
            reader = csv.DictReader(fh, delimiter="\t" if suffix == ".tsv" else ",")
            yield from islice(enumerate(reader, 1), limit)
        return
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        number = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
            for record in batch.to_pylist():
                number += 1
                if limit is not None and number > limit:
                    return
                yield number, record
        return
    with path.open(encoding="utf-8", errors="replace") as fh:
        first = fh.readline()
        if first.lstrip().startswith("["):
            data = json.loads(first + fh.read())
            yield from islice(((i, r) for i, r in enumerate(data, 1) if isinstance(r, dict)), limit)
            return
        count = 0
        for number, line in enumerate([first, *fh] if first else [], 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                count += 1
                if limit is not None and count > limit:
                    return
                yield number, record


def check_rows(source: str, layout: Layout, rows: Iterator[tuple[int, dict[str, Any]]], unit: str = "line") -> None:
    """Every row in the layout's shape, or one UserError naming the file, the column, the problem and the rows."""
    bad: list[tuple[int, str]] = []
    count = total = 0
    for number, row in rows:
        total += 1
        problem = row_problem(row, layout)
        if problem:
            count += 1
            if len(bad) < LISTED:
                bad.append((number, problem))
    if bad:
        where = "; ".join(f"{unit} {n}: {p}" for n, p in bad) + ("; ..." if count > len(bad) else "")
        shape = ("a list of {\"role\": \"user\"|\"assistant\"|\"system\", \"content\": \"...\"} turns with at least "
                 "one assistant turn" if layout.format == "messages" else "text in every row")
        raise UserError(f"Dataset '{source}' ({layout.format} format, column{'s' if len(layout.roles) > 1 else ''} "
                        f"{', '.join(layout.roles.values())}) has {count:,} of {total:,} rows the sft runner cannot "
                        f"train on ({where}). Each row needs {shape}. Fix those rows, or set dataset.format and "
                        "dataset.columns to the right columns.")


# -- chat template ---------------------------------------------------------------------------------------------
def tokenizer_dir(spec: Any) -> Path | None:
    """The local folder of the run's tokenizer files: model.tokenizer or the model dir, or its Hugging Face cache
    snapshot; None when it is only on the hub (not downloaded)."""
    name = spec.model.tokenizer or spec.model.name_or_path
    if not name:
        return None
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    if "/" not in name:
        return None
    home = Path(os.environ.get("HF_HUB_CACHE") or Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
                / "hub")
    snaps = sorted((home / ("models--" + name.replace("/", "--"))).glob("snapshots/*/tokenizer_config.json"),
                   key=lambda p: p.stat().st_mtime, reverse=True)
    return snaps[0].parent if snaps else None


def _template_value(value: Any) -> str | None:
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, list):  # named variants: the default one
        named = {v.get("name"): v.get("template") for v in value if isinstance(v, dict)}
        return named.get("default") or next(iter(named.values()), None)
    if isinstance(value, dict):
        return value.get("default") or value.get("chat_template")
    return None


def model_template(folder: Path) -> tuple[str | None, str]:
    """(the tokenizer folder's own chat template or None, where it was found / looked)."""
    for name in TEMPLATE_FILES:
        path = folder / name
        if not path.is_file():
            continue
        if name.endswith(".jinja"):
            return path.read_text(), str(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        template = _template_value(data.get("chat_template") if isinstance(data, dict) else None)
        if template:
            return template, str(path)
    return None, f"{', '.join(TEMPLATE_FILES)} in {folder}"


def spec_template(value: str | None) -> str | None:
    """dataset.chat_template: a Jinja template, or the path of a file that holds one."""
    if not value:
        return None
    if "{{" in value or "{%" in value:
        return value
    path = Path(value).expanduser()
    if not path.is_file():
        raise UserError(f"dataset.chat_template '{value}' is neither a Jinja template (no {{{{ }}}} or {{% %}} in it) nor "
                        "an existing template file. Give the template text, or the path of a .jinja file (relative "
                        "paths are relative to the spec file).")
    return path.read_text()


def find_template(spec: Any) -> tuple[str | None, str]:
    """(the chat template the run uses, where it comes from): the spec's, else the tokenizer's; None when there is
    none (the second value then says where ftui looked, or 'unknown' when the tokenizer is not on this machine)."""
    own = spec_template(getattr(spec.dataset, "chat_template", None))
    if own:
        return own, "dataset.chat_template"
    folder = tokenizer_dir(spec)
    if folder is None:
        return None, "unknown"
    return model_template(folder)


def special_tokens(folder: Path | None) -> dict[str, str]:
    """bos/eos/pad/unk token strings from a tokenizer_config.json (what a chat template may refer to)."""
    if folder is None or not (folder / "tokenizer_config.json").is_file():
        return {}
    try:
        data = json.loads((folder / "tokenizer_config.json").read_text())
    except (OSError, ValueError):
        return {}
    out = {}
    for key in ("bos_token", "eos_token", "pad_token", "unk_token", "sep_token", "cls_token", "mask_token"):
        value = data.get(key)
        value = value.get("content") if isinstance(value, dict) else value
        if isinstance(value, str):
            out[key] = value
    return out
