"""The ftui entry point: dispatch, unknown commands, exit codes."""
from __future__ import annotations

import subprocess
import sys

from tui import cli


def test_help_lists_commands(capsys) -> None:
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("plan", "run", "demo", "attach", "ps"):
        assert f"  {name} " in out


def test_unknown_command_is_a_one_paragraph_error(capsys) -> None:
    assert cli.main(["attch"]) == 2
    err = capsys.readouterr().err
    assert "Unknown command 'attch'" in err and "Did you mean 'attach'" in err
    assert err.count("\n") == 1


def test_module_entry_point_runs() -> None:
    proc = subprocess.run([sys.executable, "-m", "tui", "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "commands:" in proc.stdout
