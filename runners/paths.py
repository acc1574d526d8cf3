"""Where the checkout and its bundled assets are, for modules at any depth of the package."""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the checkout: assets/, runners/, tui/
ASSETS = ROOT / "assets"
