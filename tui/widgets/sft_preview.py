"""The sft runner's part of the setup screen: the first row of the data formatted as trl will train on it (the
chat template applied, the tokens that carry loss highlighted), and the plan's facts about the data and LoRA.

Computed in the UI process without transformers: ``runners.chat_render`` renders the template with jinja2 and
tokenizes with the ``tokenizers`` library (a test checks it against trl's own labels). The screen calls
:func:`example` in a worker thread and shows the result with :meth:`SftPreview.show_example`; each plan updates
:meth:`SftPreview.show_plan`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from textual.content import Content
from textual.widgets import Static

from runners import chat_data, chat_render
from runners import spec as specmod
from runners.errors import UserError

MAX_CHARS = 1200
LOSS_STYLE = "bold $success"
CONTEXT_STYLE = "$text-muted"


def example(spec: specmod.RunSpec) -> Content:
    """The first training row as the model sees it, or why it cannot be shown."""
    ds = spec.dataset
    path = Path(ds.train).expanduser()
    if not ds.train or not path.is_file():
        return Content.styled("formatted example: needs a local dataset file", CONTEXT_STYLE)
    try:
        first = next(chat_data.iter_records(ds.train, 1), None)
        if first is None:
            return Content.styled(f"'{path.name}' has no rows", "$error")
        layout = chat_data.detect([str(c) for c in first[1]], ds, ds.train)
        problem = chat_data.row_problem(first[1], layout)
        if problem:
            return Content.styled(f"first row: {problem}", "$error")
        row = chat_data.example(first[1], layout)
        template, where = chat_data.find_template(spec)
        if layout.format == "messages" and template is None:
            return Content.assemble((f"{layout.format} format: ", "bold"), (
                "the tokenizer has no chat template; set dataset.chat_template" if where != "unknown" else
                "the tokenizer is not on this machine: the template is checked at launch", "$error"))
        folder = chat_data.tokenizer_dir(spec)
        tok = chat_render.tokenizer_for(str(folder)) if folder is not None else None
    except (UserError, ValueError, OSError, ImportError) as exc:
        return Content.styled(f"formatted example: {exc}", "$error")
    head = f"{layout.format} format" + (f" · chat template from {Path(where).name if where != 'dataset.chat_template' else where}"
                                        if layout.format == "messages" else "")
    if tok is None:
        return Content.assemble((head, "bold"), (" · no tokenizer.json here: tokens are shown at launch\n", CONTEXT_STYLE),
                                (_plain_text(row, template, folder)[:MAX_CHARS], CONTEXT_STYLE))
    try:
        formatted = chat_render.format_example(row, tok, template, ds.max_seq_length, ds.completion_only_loss,
                                               ds.assistant_only_loss)
    except UserError as exc:
        return Content.styled(str(exc), "$error")
    return marked(formatted, head, _loss_on(ds))


def _loss_on(ds: Any) -> str:
    return "assistant turns" if ds.assistant_only_loss else "completion" if ds.completion_only_loss else "every token"


def _plain_text(row: dict[str, Any], template: str | None, folder: Path | None) -> str:
    if "messages" in row and template:
        return chat_render.render(template, row["messages"], chat_data.special_tokens(folder))[0]
    return row.get("text") or row.get("prompt", "") + row.get("completion", "")


def marked(formatted: chat_render.Formatted, head: str, loss_on: str) -> Content:
    """The formatted text with the characters of the tokens that carry loss highlighted."""
    text = formatted.text
    parts: list[Any] = [(head, "bold"), (f" · loss on {loss_on}: {sum(formatted.loss)} of {len(formatted.ids)} tokens "
                                         "(highlighted)", CONTEXT_STYLE)]
    if formatted.truncated:
        parts.append((f" · {formatted.truncated} tokens past max seq length are cut", "$warning"))
    parts.append("\n")
    at = 0
    for (start, end), loss in zip(formatted.offsets, formatted.loss):
        if start >= MAX_CHARS:
            break
        if start > at:
            parts.append((text[at:start], CONTEXT_STYLE))
        if end > start:
            parts.append((text[start:end], LOSS_STYLE if loss else CONTEXT_STYLE))
        at = max(at, end)
    if at < len(text):
        parts.append((text[at:MAX_CHARS], "$error strike" if formatted.truncated else CONTEXT_STYLE))
    return Content.assemble(*parts)


def plan_facts(plan: dict[str, Any] | None, lora_r: int | None = None) -> Content:
    """What the plan knows of the data (rows, packing, lengths) and of the trainable parameters."""
    if not plan or not plan.get("sft"):
        return Content("")
    facts, model = plan["sft"], plan.get("model") or {}
    rows = f"{facts['rows']:,} training rows"
    if facts["packing"]:
        rows += f" packed into {facts['train_rows']:,} rows of {facts['seq']} tokens"
    elif facts["dropped"]:
        rows += f" ({facts['dropped']:,} dropped: no loss token within max seq length)"
    lengths = f"longest {facts['longest']} tokens, mean {facts['mean']:.0f} ({facts['lengths_source']})"
    trainable, params = model.get("trainable_params"), model.get("params")
    if trainable is not None and params and trainable < params:
        weights = f"LoRA{f' r={lora_r}' if lora_r else ''}: {trainable:,} trainable parameters " \
                  f"({trainable / params:.1%} of the model's {params:,})"
    elif params:
        weights = f"full fine-tuning: all {params:,} parameters train"
    else:
        weights = ""
    return Content.assemble(("plan: ", "bold"), f"{rows}; {lengths}\n", (weights, "bold $accent"))


class SftPreview(Static):
    """The formatted example and the plan's data facts, shown only for the sft runner."""

    DEFAULT_CSS = "SftPreview { height: auto; max-height: 16; padding: 0 0 0 2; }"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.example_content: Content = Content("")
        self.plan_content: Content = Content("")

    def show_example(self, content: Content) -> None:
        self.example_content = content
        self._refresh()

    def show_plan(self, plan: dict[str, Any] | None, lora_r: int | None = None) -> None:
        self.plan_content = plan_facts(plan, lora_r)
        self._refresh()

    def _refresh(self) -> None:
        parts = [p for p in (self.example_content, self.plan_content) if p.plain]
        self.update(Content("\n").join(parts) if parts else "")
