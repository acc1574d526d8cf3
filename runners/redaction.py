"""Which values are secrets, and how they stay off disk and off screen without changing any setting.

The training process reads the redacted ``spec.yaml`` back, so redaction must never touch a value
that is not a secret: a loose rule ("any key containing *token*", "any 40-hex string") rewrote
``model.tokenizer``, ``include_num_input_tokens_seen`` and HF cache paths
(``.../snapshots/<commit hash>/``) and broke runs. The rule is therefore precise:

1. A key is secret when its normalised name (lower case, ``-`` as ``_``, last ``.`` component) is,
   or *ends in*, one of :data:`SECRET_SUFFIXES` (``token``, ``api_key``, ``secret``, ``password`` ...).
   "Ends in", not "contains": ``tokenizer``, ``include_num_input_tokens_seen`` and ``max_new_tokens``
   are settings.
2. Tokenizer special-token keys (``pad_token``, ``eos_token`` ...: :data:`SPECIAL_TOKEN_ROLES`) are not
   secrets, nor is any ``*_token`` value shaped like a special-token literal (``<pad>``, ``[SEP]``).
3. Only a scalar under a secret key is a secret: ``use_auth_token: true`` is a switch.
4. Values anywhere are redacted by pattern only for unambiguous secret shapes (:data:`SECRET_VALUE`):
   Hugging Face tokens (``hf_...``, ``api_org_...``), the password of ``scheme://user:pass@host``
   URLs and ``Bearer`` credentials. Never a bare 40-hex string: that is a git commit in every HF
   cache snapshot path (wandb keys are caught by their key names, e.g. ``WANDB_API_KEY``).

Secrets the run needs still reach it, without touching disk: :func:`split` records every redacted
slot, the launcher hands them to the supervisor in the :data:`SECRETS_ENV` environment variable
(inherited by launch.sh and the ranks, never written into launch.sh), and the training entry point
puts them back with :func:`restore`. A run started without it (``bash launch.sh`` by hand, a resume)
loses only the secret keys, which then fall back to the environment (``HF_TOKEN``, a login).
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from typing import Any

REDACTED = "***REDACTED***"
SECRETS_ENV = "FTUI_SPEC_SECRETS"
SECRET_SUFFIXES = ("token", "api_key", "apikey", "secret", "password", "passwd", "secret_key", "access_key",
                   "private_key")
SPECIAL_TOKEN_ROLES = frozenset({
    "pad", "eos", "bos", "unk", "sep", "cls", "mask", "start", "end", "decoder_start", "image", "audio", "video",
    "boi", "eoi", "boa", "eoa", "additional_special", "special", "padding", "eot", "fim_prefix", "fim_middle",
    "fim_suffix", "fim_pad", "think", "tool_call",
})
CREDENTIAL_TOKENS = frozenset({"hub_token", "hf_token", "auth_token", "access_token", "api_token", "bearer_token",
                               "refresh_token", "session_token", "use_auth_token", "push_to_hub_token"})
SPECIAL_TOKEN_VALUE = re.compile(r"^(<[^<>\s]*>|\[[^\[\]\s]*\]|<\|[^|]*\|>)$")
SECRET_VALUE = re.compile(
    r"\b(?:hf|api_org)_[A-Za-z0-9]{20,}\b"  # Hugging Face user and organisation tokens
    r"|(?<=://)[^/\s:@]+:[^/\s@]+(?=@)"  # user:password in a URL
    r"|(?<=Bearer )[A-Za-z0-9._~+/=-]{8,}",  # an HTTP bearer credential
)
_ASSIGNMENT = re.compile(r"^([A-Za-z_][A-Za-z0-9_.-]*)=(.*)$", re.DOTALL)


def normalise(name: str) -> str:
    """``--Hub-Token`` -> ``hub_token``; ``training.hub_token`` -> ``hub_token``."""
    return name.strip().lstrip("-").lower().replace("-", "_").rsplit(".", 1)[-1]


def is_secret_key(name: object) -> bool:
    """Whether a key (spec key, flag or environment variable name) holds a secret, by the rule above."""
    if not isinstance(name, str):
        return False
    key = normalise(name)
    if not key.endswith(SECRET_SUFFIXES):
        return False
    if key.endswith("_token") and key[: -len("_token")] in SPECIAL_TOKEN_ROLES:
        return False
    return True


def _secret_leaf(key: object, value: Any) -> bool:
    """A scalar under a secret key is a secret, except switches, empties and (under a ``*_token`` key
    that is not a known credential name) special-token literals such as ``<|im_end|>``."""
    if not is_secret_key(key) or isinstance(value, bool) or value is None or value == REDACTED:
        return False
    if isinstance(value, str):
        literal_ok = normalise(str(key)).endswith("_token") and normalise(str(key)) not in CREDENTIAL_TOKENS
        return bool(value) and not (literal_ok and SPECIAL_TOKEN_VALUE.match(value))
    return isinstance(value, (int, float))


def redact_text(text: str) -> str:
    """``text`` with every unambiguous secret shape replaced by REDACTED (everything else as written)."""
    return SECRET_VALUE.sub(REDACTED, text)


def _walk(value: Any, key: object, path: list[Any], slots: list[tuple[list[Any], Any]] | None) -> Any:
    """Redact ``value`` found under dict key ``key`` (list items inherit their list's key)."""
    if isinstance(value, Mapping):
        return {k: _walk(v, k, [*path, k], slots) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_walk(v, key, [*path, i], slots) for i, v in enumerate(value)]
    new = REDACTED if _secret_leaf(key, value) else redact_text(value) if isinstance(value, str) else value
    if slots is not None and new != value:
        slots.append((path, value))
    return new


def redact(data: Any) -> Any:
    """A copy of ``data`` (dicts, lists, scalars) with secret values replaced, by the rule above."""
    return _walk(data, None, [], None)


def split(data: Any) -> tuple[Any, list[tuple[list[Any], Any]]]:
    """(redacted copy, slots): each slot is (path of keys/indices, the original value) of one redacted leaf."""
    slots: list[tuple[list[Any], Any]] = []
    return _walk(data, None, [], slots), slots


def restore(data: Any, slots: list[tuple[list[Any], Any]]) -> Any:
    """Put the original values back into a redacted copy (in place; returns it).

    A slot is filled only where the data still holds exactly the redacted form of that original, so
    secrets meant for another spec never land anywhere. Secret keys still holding REDACTED afterwards
    (no secret was handed over: a resume, ``bash launch.sh`` by hand) are removed, so the library
    falls back to its own source (``HF_TOKEN``, a saved login) instead of using the placeholder.
    """
    for path, original in slots:
        if not path:
            continue
        parent = data
        try:
            for step in path[:-1]:
                parent = parent[step]
            current = parent[path[-1]]
        except (KeyError, IndexError, TypeError):
            continue
        key = next((p for p in reversed(path) if isinstance(p, str)), None)
        if current == _walk(original, key, [], None):
            parent[path[-1]] = original
    _drop_placeholders(data)
    return data


def _drop_placeholders(data: Any) -> None:
    if isinstance(data, dict):
        for key in [k for k, v in data.items() if v == REDACTED and is_secret_key(k)]:
            del data[key]
        for value in data.values():
            _drop_placeholders(value)
    elif isinstance(data, list):
        for value in data:
            _drop_placeholders(value)


def without_secrets(data: Any) -> Any:
    """A redacted copy with secret keys left out altogether (secrets do not make two setups differ)."""
    redacted = redact(data)
    _drop_placeholders(redacted)
    return redacted


def secrets_env(data: Any, run_dir: str) -> dict[str, str]:
    """The environment entry that carries ``data``'s secret slots to the run at ``run_dir`` (empty if none)."""
    _, slots = split(data)
    if not slots:
        return {}
    return {SECRETS_ENV: json.dumps({"run_dir": os.path.realpath(run_dir), "slots": slots})}


def slots_from_env(environ: Mapping[str, str], run_dir: str) -> list[tuple[list[Any], Any]]:
    """The slots handed over for ``run_dir`` (none when they were meant for another run or are unreadable)."""
    try:
        payload = json.loads(environ.get(SECRETS_ENV) or "{}")
    except json.JSONDecodeError:
        return []
    if not isinstance(payload, dict) or payload.get("run_dir") != os.path.realpath(run_dir):
        return []
    return [(list(path), value) for path, value in payload.get("slots") or []]


def redact_argv(argv: list[str]) -> list[str]:
    """A command line for display: values of secret flags (``--hub_token X``, ``--api-key=X``), secret
    ``NAME=value`` assignments (``env HF_TOKEN=...``) and secret shapes anywhere become REDACTED."""
    out: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next and not arg.startswith("--"):
            out.append(REDACTED)
            hide_next = False
            continue
        hide_next = False
        body = arg.lstrip("-")
        match = _ASSIGNMENT.match(body)
        if match and is_secret_key(match.group(1)) and match.group(2):
            out.append(arg[: len(arg) - len(body)] + f"{match.group(1)}={REDACTED}")
        elif arg.startswith("-") and "=" not in arg and is_secret_key(body):
            out.append(arg)
            hide_next = True
        else:
            out.append(redact_text(arg))
    return out


def shown(key: str, value: Any) -> str:
    """How an error message may show ``value`` of ``key``: its repr, or a note when it is a secret."""
    if is_secret_key(key) and value not in (None, "") and not isinstance(value, bool):
        return "not shown: the key holds a secret"
    return repr(redact(value))  # nested secrets ({api_key: ...}) and secret shapes are hidden too
