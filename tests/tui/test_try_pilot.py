"""The monitor's Try tab on a real sft demo run: a prompt typed in the tab is answered token by token, by a
model in its own process, and the answer is the one `ftui try` gives for the same prompt (greedy decoding)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from tui_fakes import FrozenTelemetry, wait_for

from runners.watch.sources import open_source
from tests.conftest import ftui
from tests.trained import copy_run, demo_run
from tui.app import make_app
from tui.screens.monitor import MonitorScreen
from tui.widgets.try_panel import TryPanel

PROMPT = "hello"


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_run(demo_run(tmp_path_factory, "demo_sft"), tmp_path_factory.mktemp("try") / "runs")


async def test_a_prompt_typed_in_the_try_tab_streams_the_models_answer(sft_run: Path) -> None:
    cli = ftui("try", str(sft_run), PROMPT, "--json", "--max-new-tokens", "12")
    assert cli.returncode == 0, cli.stderr
    expected = json.loads(cli.stdout.splitlines()[-1])
    assert expected["text"].strip() and expected["prompt"] == "chat template"

    app = make_app(runs_dir=sft_run.parent, source=open_source(str(sft_run)), telemetry=FrozenTelemetry())
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(lambda: isinstance(pilot.app.screen, MonitorScreen))(pilot)
        await pilot.press("i")
        panel = pilot.app.screen.query_one(TryPanel)
        assert pilot.app.focused is not None and pilot.app.focused.id == "try-input"
        settings = panel.query_one("#try-settings")
        settings.value = "max_new_tokens=12"  # type: ignore[attr-defined]
        await pilot.press(*PROMPT, "enter")
        await wait_for(lambda: "a" in panel.results, timeout=180)(pilot)
        result = panel.results["a"]
        assert result["text"] == expected["text"]
        assert panel.pieces["a"] >= 2, "the answer arrived in one piece, not streamed"
        assert panel.answers["a"].strip() == expected["text"].strip()
        shown = str(panel.query_one("#try-answer-a").render())
        assert expected["text"].split()[0] in shown and "tokens" in shown
        assert "checkpoint-" in str(panel.query_one("#try-status").render())
        # the model process is a child of this one, started on first use; closing the monitor ends it
        session = panel.session
        assert session is not None and session.proc.poll() is None
        await pilot.press("escape", "escape")  # leave the prompt, then the monitor
        await wait_for(lambda: session.proc.poll() is not None, timeout=30)(pilot)
