"""The setup screen with the sft runner: it is offered, the first row is shown formatted by the chat template with
the tokens that carry loss highlighted, the plan's data facts and LoRA's trainable parameters follow the form, and
none of it loads a training library into the dashboard process.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from textual.widgets import Select
from tui_fakes import ROOT, FrozenTelemetry, h100_nvml, wait_for

from runners import spec as specmod
from tui.app import make_app
from tui.screens.setup import SetupScreen
from tui.widgets.sft_preview import LOSS_STYLE, SftPreview, example

DEMO_SFT = ROOT / "assets" / "specs" / "demo_sft.yaml"
FIRST = json.loads((ROOT / "assets" / "demo" / "instructions.jsonl").read_text().splitlines()[0])


def _highlighted(content) -> str:  # type: ignore[no-untyped-def]
    """The characters the preview marks as carrying loss."""
    return "".join(content.plain[s.start:s.end] for s in content.spans if str(s.style) == LOSS_STYLE)


async def test_setup_previews_the_formatted_example_and_follows_the_sft_options(tmp_path: Path) -> None:
    app = make_app(runs_dir=tmp_path / "runs", setup_spec=specmod.load(DEMO_SFT), start="setup",
                   telemetry=FrozenTelemetry(nvml=h100_nvml(0)))
    async with app.run_test(size=(130, 50)) as pilot:
        setup = app.screen
        assert isinstance(setup, SetupScreen)
        runner = setup.query_one("#runner", Select)
        assert runner.value == "sft" and "sft" in [value for _, value in runner._options]
        await wait_for(lambda: setup.plan is not None and not setup.is_planning and "#sft_preview" in setup.shown)(pilot)
        preview = setup.query_one(SftPreview)
        shown = preview.example_content
        user, answer = FIRST["messages"][0]["content"], FIRST["messages"][1]["content"]
        assert f"<|im_start|>user\n{user}<|im_end|>" in shown.plain and "loss on assistant turns" in shown.plain
        assert _highlighted(shown) == f"{answer}<|im_end|>".replace(" ", "")  # the assistant turn, token by token
        assert "LoRA r=16: 32,768 trainable parameters" in preview.plan_content.plain
        assert "360 training rows" in preview.plan_content.plain and "(tokenizer.json)" in preview.plan_content.plain

        steps = setup.plan["cadence"]["total_steps"]
        setup.query_one("#sft_packing", Select).value = True  # packing: fewer, longer rows, fewer steps
        await wait_for(lambda: not setup.is_planning and setup.plan["sft"]["packing"])(pilot)
        assert setup.data["dataset"]["packing"] is True and setup.plan["cadence"]["total_steps"] < steps
        assert f"packed into {setup.plan['sft']['train_rows']} rows of 64 tokens" in preview.plan_content.plain

        setup.query_one("#lora_r").value = "4"  # a quarter of the rank: a quarter of the adapter
        await wait_for(lambda: not setup.is_planning and setup.plan["model"]["trainable_params"] == 32768 // 4)(pilot)
        assert "LoRA r=4: 8,192 trainable parameters" in preview.plan_content.plain

        setup.query_one("#sft_answers_only", Select).value = False  # loss on every token
        await wait_for(lambda: "loss on every token" in preview.example_content.plain)(pilot)
        body = preview.example_content.plain.split("\n", 1)[1]
        assert not setup.data["dataset"]["assistant_only_loss"]
        assert _highlighted(preview.example_content) == "".join(body.split())  # every token carries loss now

        runner.value = "hf_trainer"  # another runner: no sft options, none of its keys left in the spec
        await wait_for(lambda: not setup.query_one("#sft_options").display)(pilot)
        assert setup.data["dataset"]["packing"] is False
        runner.value = "sft"
        await wait_for(lambda: setup.query_one("#sft_options").display and setup.data["task"] == "causal-lm")(pilot)
        assert setup.query_one("#task", Select).value == "causal-lm"


def test_a_model_without_a_chat_template_is_named_in_the_preview(tmp_path: Path) -> None:
    model = tmp_path / "model"
    shutil.copytree(ROOT / "assets" / "demo" / "chat_model", model)
    config = json.loads((model / "tokenizer_config.json").read_text())
    del config["chat_template"]
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    data = specmod.load(DEMO_SFT).to_dict()
    data["model"]["name_or_path"] = str(model)
    assert "no chat template; set dataset.chat_template" in example(specmod.from_dict(data)).plain
    data["dataset"]["chat_template"] = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    shown = example(specmod.from_dict(data))
    assert shown.plain.splitlines()[1] == f"user: {FIRST['messages'][0]['content']}"


def test_the_preview_loads_no_training_library() -> None:
    code = ("import sys; from runners import spec; from tui.widgets.sft_preview import example; "
            f"text = example(spec.load({str(DEMO_SFT)!r})).plain; "
            "heavy = sorted({'torch', 'transformers', 'trl', 'peft', 'datasets', 'pandas'} & set(sys.modules)); "
            "print(heavy, '<|im_start|>' in text)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "[] True", out.stdout + out.stderr
