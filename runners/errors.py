"""The one exception type a user can cause, and how the CLI turns it into exit code 2."""
from __future__ import annotations

import difflib
from collections.abc import Iterable

USER_ERROR_EXIT = 2


class UserError(Exception):
    """Bad input from the user: the message names the input, says what is wrong and how to fix it.

    The CLI prints it as one paragraph (no traceback) and exits with code 2.
    """


def closest(name: str, choices: Iterable[str]) -> str | None:
    """The closest valid spelling of ``name`` among ``choices``, for "did you mean" hints."""
    matches = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return matches[0] if matches else None


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """A ' Did you mean X?' suffix, or an empty string when nothing is close."""
    hit = closest(name, choices)
    return f" Did you mean '{hit}'?" if hit else ""
