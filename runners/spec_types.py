"""Typed validation of the run spec, without importing torch or transformers.

Types are written as small strings (``int``, ``float``, ``bool``, ``str``, ``null``, ``any``,
``list[str]``, ``dict[str, float]``, unions joined by `` | ``), so the ``training`` section's types can
ship as data in ``assets/training_arguments_fields.json`` next to its field list, generated from the
installed ``transformers.TrainingArguments`` by :func:`generate_fields` (``python -m
runners.spec_types`` rewrites the file; a test keeps it in step). The dataclass sections get the same
strings from their own type hints. Rules, chosen so a typo fails at load time and not in torch:
ints are accepted for floats (``learning_rate: 1``), bools never count as numbers, and strings are
never coerced (``fp16: "no"`` is refused, not read as false). Enum-typed TrainingArguments fields
take their values as strings, checked against the choices shipped with the types.
"""
from __future__ import annotations

import dataclasses
import enum
import json
import types
import typing
from typing import Any

from runners import paths
from runners.errors import UserError, did_you_mean
from runners.redaction import shown

FIELDS_FILE = paths.ASSETS / "training_arguments_fields.json"
SENTENCE_EXTRAS = ("batch_sampler", "learning_rate_mapping", "multi_dataset_batch_sampler", "prompts",
                   "router_mapping", "warmup_ratio")
_WORDS = {"int": "a whole number", "float": "a number", "bool": "true or false", "str": "a string",
          "null": "empty (null)", "dict": "a mapping", "list": "a list"}
_PLURALS = {"int": "whole numbers", "float": "numbers", "bool": "true/false values", "str": "strings"}


def _split_top(text: str, sep: str) -> list[str]:
    """Split at ``sep`` outside brackets."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(text):
        ch = text[i]
        depth += ch == "["
        depth -= ch == "]"
        if depth == 0 and text.startswith(sep, i):
            parts.append(text[start:i])
            i += len(sep)
            start = i
            continue
        i += 1
    parts.append(text[start:])
    return [p.strip() for p in parts]


def _head_args(alt: str) -> tuple[str, list[str]]:
    if alt.endswith("]") and "[" in alt:
        head, inner = alt.split("[", 1)
        return head, _split_top(inner[:-1], ",")
    return alt, []


def matches(value: Any, type_str: str) -> bool:
    """Whether a YAML value fits a type string (ints fit floats, bools fit nothing but bool)."""
    for alt in _split_top(type_str, "|"):
        head, args = _head_args(alt)
        if head == "any":
            return True
        if head == "null" and value is None:
            return True
        if head == "bool" and isinstance(value, bool):
            return True
        if head == "int" and isinstance(value, int) and not isinstance(value, bool):
            return True
        if head == "float" and isinstance(value, (int, float)) and not isinstance(value, bool):
            return True
        if head == "str" and isinstance(value, str):
            return True
        if head == "list" and isinstance(value, list) and (not args or all(matches(v, args[0]) for v in value)):
            return True
        if head == "dict" and isinstance(value, dict) and (
                len(args) < 2 or all(matches(v, args[1]) for v in value.values())):
            return True
    return False


def describe(type_str: str) -> str:
    """Words for a type string: ``float | null`` -> ``a number or empty (null)``, ``list[str]`` -> ``a list of strings``."""
    words = []
    for alt in _split_top(type_str, "|"):
        head, args = _head_args(alt)
        if head == "list" and args and args[0] in _PLURALS:
            words.append(f"a list of {_PLURALS[args[0]]}")
        elif head == "dict" and len(args) == 2 and args[1] in _PLURALS:
            words.append(f"a mapping to {_PLURALS[args[1]]}")
        else:
            words.append(_WORDS.get(head, head))
    return " or ".join(dict.fromkeys(words))


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "true/false", int: "a whole number", float: "a number", str: "a string", list: "a list",
            dict: "a mapping"}.get(type(value), type(value).__name__)


def check(key: str, value: Any, type_str: str, source: str, choices: list[str] | None = None) -> None:
    """A UserError naming the key, the value (unless secret) and the expected type, when they differ."""
    if not matches(value, type_str):
        heads = {_head_args(a)[0] for a in _split_top(type_str, "|")}
        if isinstance(value, str) and heads & {"int", "float", "bool"}:
            hint = " Write numbers and true/false without quotes."
        elif not isinstance(value, str) and "str" in heads and not isinstance(value, (list, dict)):
            hint = " Put text in quotes, so YAML does not read it as a number or true/false."
        else:
            hint = ""
        got = shown(key, value)
        got = f"{_kind(value)} ({got})" if got.startswith("not shown") else f"{got} ({_kind(value)})"
        raise UserError(f"{source}: {key} must be {describe(type_str)}, got {got}.{hint}")
    if choices and isinstance(value, str) and value not in choices:
        raise UserError(f"{source}: {key} '{value}' is not one of the values transformers accepts."
                        f"{did_you_mean(value, choices)} Choose one of: {', '.join(choices)}.")


def type_string(hint: Any) -> str:
    """The type string of a Python type hint; enums are ``str``, things YAML cannot write are dropped."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        kept = [a for a in dict.fromkeys(type_string(a) for a in typing.get_args(hint)) if a != "any"]
        return " | ".join(kept) if kept and kept != ["null"] else "any"
    if origin is typing.Literal:
        return " | ".join(dict.fromkeys(type_string(type(a)) for a in typing.get_args(hint)))
    if origin in (list, tuple, set):
        args = typing.get_args(hint)
        inner = type_string(args[0]) if args else "any"
        return f"list[{inner}]" if inner != "any" and "|" not in inner else "list"
    if origin is dict:
        args = typing.get_args(hint)
        inner = type_string(args[1]) if len(args) == 2 else "any"
        return f"dict[str, {inner}]" if inner != "any" and "|" not in inner else "dict"
    if hint is type(None):
        return "null"
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return "str"
    for py, name in ((bool, "bool"), (int, "int"), (float, "float"), (str, "str"), (dict, "dict"), (list, "list")):
        if hint is py:
            return name
    return "any"


def enum_choices(hint: Any) -> list[str] | None:
    """The string values of an enum in a hint (``IntervalStrategy | str`` -> no, steps, epoch)."""
    args = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    for arg in args:
        if isinstance(arg, type) and issubclass(arg, enum.Enum):
            return [str(m.value) for m in arg]
    return None


def dataclass_types(cls: type) -> dict[str, str]:
    """Field name -> type string of one of the spec's dataclasses (nested dataclasses become ``dict``)."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        nested = [a for a in (typing.get_args(hint) or (hint,)) if dataclasses.is_dataclass(a)]
        out[f.name] = ("dict | null" if type(None) in typing.get_args(hint) else "dict") if nested else type_string(hint)
    return out


def generate_fields() -> dict[str, Any]:
    """The content of FIELDS_FILE from the installed transformers (and sentence-transformers, if installed)."""
    import transformers
    from transformers import TrainingArguments

    hints = typing.get_type_hints(TrainingArguments)
    names = sorted(f.name for f in dataclasses.fields(TrainingArguments) if f.init)
    out: dict[str, Any] = {"transformers_version": transformers.__version__}
    kinds = {n: type_string(hints[n]) for n in names}
    choices = {n: c for n in names if (c := enum_choices(hints[n]))}
    try:
        import sentence_transformers
        from sentence_transformers import SentenceTransformerTrainingArguments as StArgs

        st_hints = typing.get_type_hints(StArgs)
        out["sentence_transformers_version"] = sentence_transformers.__version__
        kinds.update({n: type_string(st_hints[n]) for n in SENTENCE_EXTRAS})
        choices.update({n: c for n in SENTENCE_EXTRAS if (c := enum_choices(st_hints[n]))})
    except ImportError:
        out["sentence_transformers_version"] = json.loads(FIELDS_FILE.read_text())["sentence_transformers_version"]
    out.update(training_arguments=names, sentence_transformers_extra=list(SENTENCE_EXTRAS),
               types=dict(sorted(kinds.items())), choices=dict(sorted(choices.items())))
    return out


if __name__ == "__main__":
    FIELDS_FILE.write_text(json.dumps(generate_fields(), indent=1) + "\n")
