"""The ftui entry point: dispatch, unknown commands, exit codes."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

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


RECORDED = Path(__file__).resolve().parent / "tui" / "data" / "runs" / "20261122-133534-demo-1116"
LONG_ID = "20261122-140000-a-really-long-experiment-name-for-sweeps-1a2b"  # a 40-character name: the longest slug


def test_runs_never_cuts_an_id_at_80_columns(tmp_path: Path) -> None:
    """Issue 13: `ftui runs` cut run ids, which every other command takes."""
    runs = tmp_path / "runs"
    for name in (RECORDED.name, LONG_ID):
        shutil.copytree(RECORDED, runs / name)
    env = {**os.environ, "COLUMNS": "80", "LINES": "24"}

    def ftui_runs(*flags: str) -> str:
        done = subprocess.run([sys.executable, "-m", "tui", "runs", "--runs-dir", str(runs), *flags],
                              capture_output=True, text=True, timeout=60, env=env, stdin=subprocess.DEVNULL)
        assert done.returncode == 0, done.stderr
        return done.stdout

    for flags in ((), ("--wide",)):
        out = ftui_runs(*flags)
        for run_id in (RECORDED.name, LONG_ID):
            assert any(run_id in line for line in out.splitlines()), (flags, out)  # whole, on one line
        assert "…" not in out
    assert "runner" not in ftui_runs() and "hf_trainer" in ftui_runs("--wide")
    rows = json.loads(ftui_runs("--json"))
    assert {r["id"] for r in rows} == {RECORDED.name, LONG_ID}
    row = next(r for r in rows if r["id"] == RECORDED.name)
    assert {"id", "state", "runner", "step", "max_steps", "best", "duration_s", "started", "path"} <= set(row)
    assert row["state"] == "finished" and row["step"] == row["max_steps"] == 272 and row["runner"] == "hf_trainer"
    assert row["best"]["metric"] == "eval_accuracy" and row["duration_s"] > 0 and row["started"].startswith("2026-11-22")
    assert row["path"] == str(runs / RECORDED.name)
