"""What the sft runner will train on, computed without transformers: a row formatted by the chat template, its
tokens, and which tokens carry loss; and the token lengths of a whole dataset for the planner.

The chat template renders the way transformers renders it (a sandboxed Jinja environment with
``trim_blocks``/``lstrip_blocks``, ``loopcontrols``, ``raise_exception``, ``tojson``, ``{% generation %}``
tracking and the tokenizer's special tokens as variables) and ``tokenizer.json`` tokenizes through the
``tokenizers`` library, so the dashboard's preview and the plan's sequence lengths match what trl's SFTTrainer
builds (a test compares them with trl's own labels). Tokenization follows trl: conversations are rendered then
encoded without special tokens; prompt-completion and text rows are encoded with them and end with the eos token;
loss covers the assistant turns (``assistant_only_loss``) or the completion (``completion_only_loss``) when asked,
else every token. Imports jinja2 and tokenizers only (no torch, no transformers).
"""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from itertools import islice
from pathlib import Path
from typing import Any

from runners import chat_data
from runners.errors import UserError

IGNORE = -100


@dataclass
class Formatted:
    """One training example: the text the model sees, its token pieces and ids, and the loss flag per token."""

    text: str
    pieces: list[str]
    ids: list[int]
    loss: list[bool]
    offsets: list[tuple[int, int]] = field(default_factory=list)  # each token's characters in ``text``
    truncated: int = 0  # tokens cut by max_length
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"text": self.text, "pieces": self.pieces, "ids": self.ids, "loss": self.loss,
                "truncated": self.truncated, "notes": self.notes, "loss_tokens": sum(self.loss)}


@lru_cache(maxsize=16)
def compile_template(template: str) -> Any:
    """The template compiled like transformers compiles chat templates (same environment and helpers)."""
    import jinja2
    from jinja2 import nodes
    from jinja2.ext import Extension
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class GenerationTracker(Extension):
        """``{% generation %}...{% endgeneration %}``: the character spans of the assistant's text."""

        tags = {"generation"}

        def __init__(self, environment: Any) -> None:
            super().__init__(environment)
            environment.extend(render_state=threading.local())  # per thread: the planner and the preview share it

        def parse(self, parser: Any) -> Any:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return nodes.CallBlock(self.call_method("_track"), [], [], body).set_lineno(lineno)

        def _track(self, caller: Any) -> str:
            text = caller()
            state = self.environment.render_state  # type: ignore[attr-defined]
            if getattr(state, "spans", None) is not None:
                start = len("".join(state.blocks))
                state.spans.append((start, start + len(text)))
            return text

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None,
               sort_keys: bool = False) -> str:
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[GenerationTracker, "jinja2.ext.loopcontrols"])
    env.filters["tojson"] = tojson
    env.globals.update(raise_exception=raise_exception, strftime_now=lambda f: datetime.now().strftime(f))
    return env.from_string(template)


def render(template: str, messages: list[dict[str, Any]], specials: dict[str, str],
           add_generation_prompt: bool = False) -> tuple[str, list[tuple[int, int]]]:
    """(the rendered conversation, the character spans of its {% generation %} blocks)."""
    import jinja2

    compiled = compile_template(template)
    state = compiled.environment.render_state
    blocks: list[str] = []
    spans: list[tuple[int, int]] = []
    state.spans, state.blocks = spans, blocks
    try:
        for block in compiled.generate(messages=[{k: v for k, v in m.items() if v is not None} for m in messages],
                                       tools=None, documents=None, add_generation_prompt=add_generation_prompt,
                                       **specials):
            blocks.append(block)
    except jinja2.exceptions.TemplateError as exc:
        raise UserError(f"The chat template fails on this conversation: {exc}. Fix the data (roles, order) or give "
                        "a template that accepts it in dataset.chat_template.") from exc
    finally:
        state.spans, state.blocks = None, None
    return "".join(blocks), spans


def has_generation_markers(template: str) -> bool:
    import re

    return bool(re.search(r"\{%-?\s*generation\s*-?%\}", template))


class Tokenizer:
    """tokenizer.json through the ``tokenizers`` library, with the special tokens of tokenizer_config.json."""

    def __init__(self, folder: Path) -> None:
        from tokenizers import Tokenizer as RustTokenizer

        path = folder / "tokenizer.json"
        if not path.is_file():
            raise FileNotFoundError(f"no tokenizer.json in {folder}")
        self.folder = folder
        self.rust = RustTokenizer.from_file(str(path))
        self.rust.no_truncation()
        self.rust.no_padding()
        self.specials = chat_data.special_tokens(folder)
        self.eos = self.specials.get("eos_token")

    def encode(self, text: str, special: bool) -> Any:
        return self.rust.encode(text, add_special_tokens=special)


@lru_cache(maxsize=4)
def tokenizer_for(folder: str) -> Tokenizer:
    return Tokenizer(Path(folder))


def _char_to_token(offsets: list[tuple[int, int]], char: int) -> int | None:
    for i, (start, end) in enumerate(offsets):
        if start <= char < end:
            return i
    return None


def _assistant_mask(enc: Any, spans: list[tuple[int, int]]) -> list[int]:
    """transformers' return_assistant_tokens_mask: the tokens from each span's first to its last character."""
    offsets = list(enc.offsets)
    mask = [0] * len(enc.ids)
    for start_char, end_char in spans:
        start = _char_to_token(offsets, start_char)
        end = _char_to_token(offsets, end_char - 1)
        if start is None:
            break
        for i in range(start, end + 1 if end else len(mask)):
            mask[i] = 1
    return mask


def format_example(row: dict[str, Any], tok: Tokenizer, template: str | None, max_length: int | None,
                   completion_only: bool = False, assistant_only: bool = False) -> Formatted:
    """trl's preparation of one normalised row (``runners.chat_data.example``) for training."""
    notes: list[str] = []
    if "messages" in row:
        if template is None:
            raise UserError("A messages dataset needs a chat template: the tokenizer has none and the spec gives none "
                            "(dataset.chat_template).")
        text, spans = render(template, row["messages"], tok.specials)
        enc = tok.encode(text, special=False)
        mask = _assistant_mask(enc, spans) if assistant_only else [1] * len(enc.ids)
        if assistant_only and 1 not in mask:
            notes.append("no assistant tokens: the template has no {% generation %} markers")
    elif "prompt" in row:
        completion = row["completion"]
        if tok.eos and not completion.endswith(tok.eos):
            completion += tok.eos
        prompt_ids = tok.encode(row["prompt"], special=True).ids
        text = row["prompt"] + completion
        enc = tok.encode(text, special=True)
        prefix = 0
        for a, b in zip(prompt_ids, enc.ids):
            if a != b:
                break
            prefix += 1
        mask = [0] * prefix + [1] * (len(enc.ids) - prefix) if completion_only else [1] * len(enc.ids)
    else:
        text = row["text"] + (tok.eos if tok.eos and not row["text"].endswith(tok.eos) else "")
        enc = tok.encode(text, special=True)
        mask = [1] * len(enc.ids)
    ids, pieces, offsets = list(enc.ids), list(enc.tokens), [tuple(o) for o in enc.offsets]
    cut = 0
    if max_length is not None and len(ids) > max_length:
        cut = len(ids) - max_length
        ids, pieces, mask, offsets = ids[:max_length], pieces[:max_length], mask[:max_length], offsets[:max_length]
    return Formatted(text=text, pieces=pieces, ids=ids, loss=[bool(m) for m in mask], offsets=offsets, truncated=cut,
                     notes=notes)


def labels(formatted: Formatted) -> list[int]:
    """The labels trl puts in the dataset: the id where the token carries loss, -100 elsewhere."""
    return [i if flag else IGNORE for i, flag in zip(formatted.ids, formatted.loss)]


def bfd_bins(lengths: list[int], capacity: int, chunk: int = 1000) -> int:
    """How many rows trl's best-fit-decreasing packing makes (sequences cut to ``capacity``; it packs each
    batch of ``chunk`` rows of its dataset.map on its own)."""
    import bisect

    total = 0
    for start in range(0, len(lengths), chunk):
        spaces: list[int] = []  # free space of each open bin, sorted
        for n in sorted((min(x, capacity) for x in lengths[start:start + chunk] if x > 0), reverse=True):
            i = bisect.bisect_left(spaces, n)
            if i < len(spaces):
                space = spaces.pop(i) - n
            else:
                total += 1
                space = capacity - n
            if space > 0:
                bisect.insort(spaces, space)
    return total


# -- before launch -----------------------------------------------------------------------------------------------
PREFLIGHT_ROWS = 32


def _records(source: str, hub_config: str | None) -> Any:
    path = Path(source).expanduser()
    if path.is_file():
        unit = "line" if path.suffix.lower() in (".jsonl", ".json") else "row"
        return chat_data.iter_records(source), unit
    from runners import data

    frame = data.load_table(source, hub_config)
    return enumerate(frame.to_dict("records"), 1), "row"


def _warn(text: str) -> None:
    import sys

    print(f"ftui: warning: {text}", file=sys.stderr)


def preflight(spec: Any, sources: list[tuple[str, dict[str, str]]]) -> None:
    """Everything the sft runner needs from its data, before launch: every row in its format's shape, a chat
    template for conversations (the spec's or the tokenizer's), the loss options fitting the format, and the first
    rows rendering and keeping tokens that carry loss within max_seq_length."""
    ds = spec.dataset
    for source, roles in sources:
        layout = chat_data.Layout.of(roles)
        rows, unit = _records(source, ds.hub_config)
        if ds.drop_empty:
            rows = ((n, r) for n, r in rows if all(r.get(c) not in (None, "") for c in roles.values()))
        chat_data.check_rows(source, layout, rows, unit)
    layout = chat_data.Layout.of(sources[0][1])
    train = sources[0][0]
    if ds.assistant_only_loss and layout.format != "messages":
        raise UserError(f"dataset.assistant_only_loss needs conversations, but dataset '{train}' is in the "
                        f"{layout.format} format. Use dataset.completion_only_loss for prompt-completion data, or "
                        "remove it.")
    if ds.completion_only_loss and layout.format != "prompt-completion":
        raise UserError(f"dataset.completion_only_loss needs prompt-completion data, but dataset '{train}' is in the "
                        f"{layout.format} format. Use dataset.assistant_only_loss for conversations, or remove it.")
    template, where = chat_data.find_template(spec)
    name = spec.model.tokenizer or spec.model.name_or_path
    if layout.format == "messages" and template is None:
        if where == "unknown":  # the tokenizer is only on the hub: the runner checks it once it is downloaded
            return
        raise UserError(f"The tokenizer of '{name}' has no chat template (looked in {where}), and dataset '{train}' is "
                        "in the messages format, which needs one to turn each conversation into text. Fix: set "
                        "dataset.chat_template to a Jinja chat template (the text, or the path of a .jinja file), use "
                        "a model whose tokenizer has a chat template, or give prompt-completion or text data.")
    if ds.assistant_only_loss and template and not has_generation_markers(template):
        _warn(f"dataset.assistant_only_loss: the chat template of '{name}' has no {{% generation %}} markers; trl "
              "replaces the templates it knows (Qwen, Llama 3, Gemma, Phi, ...) and refuses others at the start of the "
              "run. Mark the assistant turns with {% generation %}...{% endgeneration %} in dataset.chat_template.")
    folder = chat_data.tokenizer_dir(spec)
    try:
        tok = tokenizer_for(str(folder)) if folder is not None else None
    except (FileNotFoundError, OSError, ValueError):
        tok = None
    checked = 0
    for _, row in islice(_records(train, ds.hub_config)[0], PREFLIGHT_ROWS):
        one = chat_data.example(row, layout)
        if tok is None:
            if "messages" in one and template:
                render(template, one["messages"], chat_data.special_tokens(folder))
            continue
        formatted = format_example(one, tok, template, ds.max_seq_length, ds.completion_only_loss,
                                   ds.assistant_only_loss)
        checked += 1
        if any(formatted.loss):
            return
    if checked:
        what = "assistant" if ds.assistant_only_loss else "completion" if ds.completion_only_loss else "training"
        raise UserError(f"None of the first {checked} rows of dataset '{train}' keeps any {what} token within "
                        f"dataset.max_seq_length ({ds.max_seq_length} tokens): trl drops such rows, so nothing would be "
                        "trained. Raise dataset.max_seq_length, or shorten the prompts.")
