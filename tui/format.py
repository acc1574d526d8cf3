"""How durations read everywhere ftui shows one (dashboard, `ftui runs`, `ftui --plan`); no Textual, no Rich."""
from __future__ import annotations

import math


def clock(seconds: float | None) -> str:
    """A run's elapsed time, ETA or duration, whole seconds cut (never rounded up): 1h02m, 3m05s, 12s; '-' unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


def span(seconds: float) -> str:
    """An estimate's length (step time, wall time): 1.5 h, 12.5 min, 0.42 s."""
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.3g} s"
