"""The sft runner's data as its trainer will see it, for the plan: rows, packed rows, and real token lengths.

trl tokenizes each row (conversations through the chat template), cuts it to ``max_length``, drops rows left
without a token that carries loss (unpacked only), and with ``packing`` fills blocks of ``max_length`` tokens by
best-fit decreasing. The planner needs that count for the cadence (steps are counted over the rows the trainer
steps over) and the lengths for memory: packed rows are ``max_length`` long, unpacked batches are padded to
their longest row, so the peak comes from the longest one. Lengths are real when the tokenizer has a
``tokenizer.json`` (``runners.chat_render``: jinja2 and the ``tokenizers`` library, no transformers), else
estimated from characters; the train rows are the runner's (its seeded split, its caps). Results are cached per
file and settings: the dashboard plans on every form change.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from runners import chat_data, chat_render
from runners.errors import UserError
from runners.spec import RunSpec

MAX_ROWS = 50_000  # rows tokenized for the plan; a larger file is sampled from its first rows and scaled
CHARS_PER_TOKEN = 4.0  # the estimate without a tokenizer.json


@dataclass
class SftData:
    format: str
    rows: int  # training rows (after the eval split and caps)
    train_rows: int  # the rows the trainer steps over: packed rows when packing, else rows minus dropped ones
    dropped: int  # unpacked rows left without a token that carries loss within max_length (trl drops them)
    longest: int  # the longest training row in tokens, cut to max_length
    mean: float  # mean row length in tokens, cut to max_length
    seq: int  # the sequence length memory is planned for
    packing: bool
    lengths_source: str  # "tokenizer.json" or an estimate
    template_source: str | None  # where the chat template comes from (messages data)
    loss_on: str  # "all tokens", "assistant turns", "completions"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _split(n: int, spec: RunSpec) -> list[int]:
    """Indices of the training rows, in the runner's order (data.load_splits: a seeded shuffle, eval rows first)."""
    ds = spec.dataset
    if ds.eval:
        order = list(range(n))
    else:
        import numpy as np  # pandas' sample(frac=1, random_state=seed) is RandomState(seed).permutation

        order = [int(i) for i in np.random.RandomState(ds.seed).permutation(n)]
        order = order[max(1, int(n * ds.eval_fraction)):]
    return order[: ds.max_train_samples] if ds.max_train_samples else order


def _fingerprint(spec: RunSpec) -> str:
    path = Path(spec.dataset.train)
    stat = path.stat()
    folder = chat_data.tokenizer_dir(spec)
    tok_stat = (folder / "tokenizer.json").stat().st_mtime if folder and (folder / "tokenizer.json").is_file() else None
    ds = spec.dataset
    parts = (str(path.resolve()), stat.st_size, stat.st_mtime, str(folder), tok_stat, ds.format, str(ds.columns),
             ds.text_column, ds.chat_template, ds.max_seq_length, ds.packing, ds.completion_only_loss,
             ds.assistant_only_loss, ds.eval, ds.eval_fraction, ds.seed, ds.max_train_samples)
    return hashlib.sha1(repr(parts).encode()).hexdigest()


_cache: dict[str, SftData] = {}


def for_spec(spec: RunSpec) -> SftData | None:
    """The data facts of an sft run whose training file is local; None otherwise (a hub dataset: not read here)."""
    if spec.runner != "sft" or not spec.dataset.train or not Path(spec.dataset.train).is_file():
        return None
    key = _fingerprint(spec)
    if key not in _cache:
        _cache[key] = _measure(spec)
    return _cache[key]


@lru_cache(maxsize=8)
def _tokenizer(folder: str) -> chat_render.Tokenizer | None:
    try:
        return chat_render.tokenizer_for(folder)
    except (FileNotFoundError, OSError, ValueError, ImportError):
        return None


def _measure(spec: RunSpec) -> SftData:
    ds = spec.dataset
    records = [r for _, r in chat_data.iter_records(ds.train, MAX_ROWS + 1)]
    if not records:
        raise UserError(f"Dataset '{ds.train}' has no rows.")
    scale = 1.0
    if len(records) > MAX_ROWS:
        from runners.plan.planner import count_rows

        records = records[:MAX_ROWS]
        scale = (count_rows(ds.train) or MAX_ROWS) / MAX_ROWS
    layout = chat_data.detect([str(c) for c in records[0]], ds, ds.train)
    if ds.drop_empty:  # the runner drops them before its split
        records = [r for r in records if all(r.get(c) not in (None, "") for c in layout.roles.values())]
    template, where = chat_data.find_template(spec)
    folder = chat_data.tokenizer_dir(spec)
    tok = _tokenizer(str(folder)) if folder is not None else None
    cap = ds.max_seq_length
    lengths: list[int] = []
    dropped = 0
    for index in _split(len(records), spec):
        row = records[index]
        if chat_data.row_problem(row, layout):
            continue  # the preflight refuses such rows; the plan counts the others
        one = chat_data.example(row, layout)
        if tok is not None and (template is not None or layout.format != "messages"):
            formatted = chat_render.format_example(one, tok, template, None, ds.completion_only_loss,
                                                   ds.assistant_only_loss)
            n, loss = len(formatted.ids), formatted.loss
        else:
            text = _text(one, template, folder)
            n, loss = max(1, math.ceil(len(text) / CHARS_PER_TOKEN)), [True]
        if not ds.packing and not any(loss[:cap]):
            dropped += 1
            continue
        lengths.append(min(n, cap))
    if not lengths:
        raise UserError(f"No row of dataset '{ds.train}' keeps a token that carries loss within dataset.max_seq_length "
                        f"({cap} tokens): nothing would be trained. Raise dataset.max_seq_length.")
    rows = round((len(lengths) + dropped) * scale)
    train_rows = round((chat_render.bfd_bins(lengths, cap) if ds.packing else len(lengths)) * scale)
    source = "tokenizer.json" if tok is not None else f"estimated ({CHARS_PER_TOKEN:g} characters per token)"
    if scale > 1:
        source += f", from the first {MAX_ROWS:,} rows"
    loss_on = "assistant turns" if ds.assistant_only_loss else "completions" if ds.completion_only_loss else "all tokens"
    return SftData(format=layout.format, rows=rows, train_rows=max(1, train_rows), dropped=round(dropped * scale),
                   longest=max(lengths), mean=sum(lengths) / len(lengths), seq=cap if ds.packing else max(lengths),
                   packing=ds.packing, lengths_source=source,
                   template_source=where if layout.format == "messages" and template else None, loss_on=loss_on)


def _text(one: dict[str, Any], template: str | None, folder: Path | None) -> str:
    if "messages" in one:
        if template is None:
            return " ".join(m["content"] for m in one["messages"])
        return chat_render.render(template, one["messages"], chat_data.special_tokens(folder))[0]
    return one.get("text") or one["prompt"] + one["completion"]
