"""The setup form's advanced section: every other setting the plan reads (eval batch, optimizer, warmup, weights
dtype, attention, LoRA and QLoRA, the GPUs to use, the best-model metric), collapsed until opened or until a lever
changes one of them; and a line naming what else the spec sets that no field shows, so nothing drives a plan unseen.

The screen composes it with :func:`section` and calls :func:`fill` and :func:`read` beside its own fields; the
mapping onto the spec dict is :mod:`tui.screens.setup_fields`' (plain data, no widgets).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Collapsible, Input, Select, Static

from runners import spec as specmod
from runners.errors import UserError
from tui.screens import setup_fields as sf

TITLE = "advanced: eval batch, optim, warmup, LoRA/QLoRA, GPUs"
SHOWN_TRAINING = ({f.key for f in sf.TEXT_FIELDS + sf.ADVANCED_FIELDS if f.section == "training"}
                  | {"optim", "bf16", "fp16", "gradient_checkpointing"})
SHOWN_DATASET = ("text_column", "text_pair_column", "label_column")


def section(row: Callable[[str, Any], Horizontal]) -> Collapsible:
    """The collapsed section (``row(label, widget)`` makes one labelled form row)."""
    rows: list[Horizontal | Static] = [row(f.label, Input(id=f.id, compact=True)) for f in sf.ADVANCED_FIELDS]
    rows += [
        row("optimizer", Select(sf.optim_choices({"training": {}}), allow_blank=False, id="optim", compact=True)),
        row("weights dtype", Select([(d, d) for d in specmod.DTYPES], allow_blank=False, id="torch_dtype",
                                    compact=True)),
        row("attention", Select([(a, a) for a in specmod.ATTN_IMPLEMENTATIONS], allow_blank=False,
                                id="attn_implementation", compact=True)),
        row("LoRA r", Input(placeholder="empty: full fine-tuning", id="lora_r", compact=True)),
        row("LoRA targets", Input(placeholder="empty: the family's default", id="lora_target_modules", compact=True)),
        row("base weights", Select(list(sf.QUANT), allow_blank=False, id="quant", compact=True)),
        row("GPUs", Input(placeholder="empty: every GPU; or indices, e.g. 0,1", id="gpus_used", compact=True)),
        Static(id="spec_extra", classes="spec-extra"),
    ]
    return Collapsible(*rows, title=TITLE, collapsed=True, id="advanced")


def fill(screen: Screen[Any], data: dict[str, Any]) -> None:
    for f in sf.ADVANCED_FIELDS:
        screen.query_one(f"#{f.id}", Input).value = sf.field_text(data, f)
    optim = screen.query_one("#optim", Select)
    optim.set_options(sf.optim_choices(data))
    optim.value = sf.optim(data)
    screen.query_one("#torch_dtype", Select).value = data["model"]["torch_dtype"]
    screen.query_one("#attn_implementation", Select).value = data["model"]["attn_implementation"]
    r, targets = sf.lora_values(data)
    screen.query_one("#lora_r", Input).value = r
    screen.query_one("#lora_target_modules", Input).value = targets
    screen.query_one("#quant", Select).value = sf.quant(data)
    screen.query_one("#gpus_used", Input).value = sf.gpus_text(data)
    screen.query_one("#spec_extra", Static).update(extra_text(data))


def read(screen: Screen[Any], data: dict[str, Any]) -> str | None:
    """The section's widgets into ``data``; the first field that does not parse, as its message."""
    error: str | None = None
    for f in sf.ADVANCED_FIELDS:
        try:
            sf.set_field(data, f, screen.query_one(f"#{f.id}", Input).value)
        except UserError as exc:
            error = error or str(exc)
    for key, setter in (("optim", sf.set_optim), ("quant", sf.set_quant)):
        value = screen.query_one(f"#{key}", Select).value
        if isinstance(value, str):
            setter(data, value)
    for key in ("torch_dtype", "attn_implementation"):
        value = screen.query_one(f"#{key}", Select).value
        if isinstance(value, str):
            data["model"][key] = value
    def text(selector: str) -> str:
        return screen.query_one(selector, Input).value

    for apply in (lambda: sf.set_lora(data, text("#lora_r"), text("#lora_target_modules")),
                  lambda: sf.set_gpus(data, text("#gpus_used"))):
        try:
            apply()
        except UserError as exc:
            error = error or str(exc)
    return error


def extra_text(data: dict[str, Any]) -> str:
    """What the spec sets that no field shows (edited in its YAML), or nothing."""
    extra = [f"{k}={v}" for k, v in data["training"].items() if k not in SHOWN_TRAINING]
    extra += [f"{k}={data['dataset'][k]}" for k in SHOWN_DATASET if data["dataset"].get(k)]
    return f"also set by the spec: {', '.join(extra)}" if extra else ""


def open_for(screen: Screen[Any], change: dict[str, Any]) -> None:
    """Open the section when a lever changed one of its fields, so the change is in sight."""
    if sf.ADVANCED_LEVER_KEYS & change.keys():
        screen.query_one("#advanced", Collapsible).collapsed = False
