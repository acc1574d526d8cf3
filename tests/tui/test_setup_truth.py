"""The setup screen tells the truth about the run it plans (issue 13): a new run starts from clean defaults, every
setting that drives the plan is a field, a lever is shown as the form change it makes and can be undone, and a
lever is applied only when the user can see it.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import Collapsible, Input, OptionList, Select, Static
from tui_fakes import ROOT, FrozenTelemetry, h100_nvml, wait_for

from runners import spec as specmod
from tui.app import make_app
from tui.screens.setup import SetupScreen

GIB = 2**30
PLAN_FIELDS = ("name", "per_device_eval_batch_size", "optim", "warmup_steps", "lora_r", "lora_target_modules",
               "quant", "gpus_used", "torch_dtype", "attn_implementation", "precision", "gradient_checkpointing")


def llama_spec(**training: object) -> specmod.RunSpec:
    """The snapshot's 8B causal LM on one 80 GiB GPU (does not fit): batch 32, the demo's data."""
    return specmod.from_dict({
        "task": "causal-lm", "model": {"name_or_path": "meta-llama/Llama-3.1-8B", "torch_dtype": "bfloat16"},
        "dataset": {"train": str(ROOT / "assets" / "demo" / "reviews.csv"), "max_seq_length": 1024},
        "hardware": {"strategy": "single"}, "training": {"per_device_train_batch_size": 32, **training}})


def app_for(tmp_path: Path, spec: specmod.RunSpec | None, gpus: int = 1):  # type: ignore[no-untyped-def]
    return make_app(runs_dir=tmp_path / "runs", setup_spec=spec, start="setup",
                    telemetry=FrozenTelemetry(nvml=h100_nvml(gpus)))


async def planned(pilot, setup: SetupScreen) -> None:  # type: ignore[no-untyped-def]
    await pilot.pause(0.5)
    await wait_for(lambda: setup.plan is not None and not setup.is_planning)(pilot)


async def planned_setup(pilot, app) -> SetupScreen:  # type: ignore[no-untyped-def]
    """The setup screen the app opened on, once its first plan is in."""
    setup = app.screen
    assert isinstance(setup, SetupScreen)
    await planned(pilot, setup)
    return setup


async def test_a_new_run_starts_from_clean_defaults_with_every_plan_setting_in_the_form(tmp_path: Path) -> None:
    """'New run' carried the demo's hidden eval batch 64 into an 8B plan (eval logits 347.5 GiB)."""
    app = app_for(tmp_path, None)
    async with app.run_test(size=(120, 40)) as pilot:
        setup = await planned_setup(pilot, app)
        d = setup.data
        assert d["name"] != "demo" and d["training"].get("per_device_eval_batch_size", 8) == 8
        assert d["cadence"]["metric_for_best_model"] is None and d["dataset"]["label_column"] is None
        assert d["training"].keys() <= {"learning_rate", "num_train_epochs", "per_device_train_batch_size",
                                        "gradient_accumulation_steps", "per_device_eval_batch_size"}  # the fields'
        assert not str(setup.query_one("#spec_extra", Static).render())  # nothing set that no field shows
        for field in PLAN_FIELDS:
            setup.query_one(f"#{field}")
        assert setup.query_one("#per_device_eval_batch_size", Input).value == "8"

        await wait_for(lambda: "#gpus" in setup.shown)(pilot)
        assert setup.query_one("#strategy", Select).value == "single"  # a GPU is seen: a new run plans on it
        setup.query_one("#model", Input).value = "meta-llama/Llama-3.1-8B"
        setup.query_one("#task", Select).value = "causal-lm"
        setup.query_one("#max_seq_length", Input).value = "1024"
        await wait_for(lambda: not setup.is_planning and (setup.plan or {}).get("model", {}).get("family") == "llama"
                       and setup.plan["strategy"] == "single")(pilot)
        assert setup.plan["phases"]["eval"]["total_bytes"] < 60 * GIB


async def test_a_new_run_without_a_gpu_plans_on_the_cpu(tmp_path: Path) -> None:
    app = app_for(tmp_path, None, gpus=0)
    async with app.run_test(size=(80, 24)) as pilot:
        setup = await planned_setup(pilot, app)
        await wait_for(lambda: "#gpus" in setup.shown)(pilot)
        assert setup.query_one("#strategy", Select).value == "cpu" and setup.plan["strategy"] == "cpu"
        shown = str(setup.query_one("#plan", Static).render())
        assert "host RAM" in shown and "host RAM (host RAM)" not in shown  # each thing said once
        setup.query_one("#strategy", Select).value = "zero3_offload"  # the GPUs line names no strategy it is not
        await wait_for(lambda: not setup.is_planning and (setup.plan or {}).get("strategy") == "zero3_offload")(pilot)
        gpus = str(setup.query_one("#gpus", Static).render())
        assert "none on this machine" in gpus and "strategy cpu trains" not in gpus


async def test_a_loaded_specs_settings_are_all_visible(tmp_path: Path) -> None:
    app = app_for(tmp_path, specmod.load(ROOT / "assets" / "specs" / "demo.yaml"))
    async with app.run_test(size=(120, 40)) as pilot:
        setup = await planned_setup(pilot, app)
        assert setup.query_one("#name", Input).value == "demo"
        assert setup.query_one("#per_device_eval_batch_size", Input).value == "64"
        assert setup.query_one("#warmup_steps", Input).value == "10"
        assert setup.query_one("#metric_for_best_model", Input).value == "eval_accuracy"
        extra = str(setup.query_one("#spec_extra", Static).render())
        assert "weight_decay=0.01" in extra and "label_column=label" in extra
        assert setup.data["training"]["warmup_steps"] == 10  # read back unchanged (steps, not a ratio)


async def test_a_lever_is_the_form_change_it_makes_and_ctrl_z_undoes_it(tmp_path: Path) -> None:
    app = app_for(tmp_path, llama_spec(per_device_eval_batch_size=64))
    async with app.run_test(size=(120, 40)) as pilot:
        setup = await planned_setup(pilot, app)
        levers = setup.query_one("#levers", OptionList)
        labels = [str(levers.get_option_at_index(i).prompt) for i in range(levers.option_count)]
        assert any("batch / device 32 → 8, grad accum 1 → 4" in label for label in labels), labels
        assert any("eval batch/device 64 → 32" in label for label in labels), labels  # the eval batch is a lever
        before = {f: setup.query_one(f"#{f}").value for f in PLAN_FIELDS}

        qlora = next(i for i, lv in enumerate(setup.plan["levers"]) if lv["change"].get("load_in_4bit"))
        levers.highlighted = qlora
        await pilot.press("ctrl+t")
        await planned(pilot, setup)
        assert setup.query_one("#quant", Select).value == "4bit" and setup.query_one("#lora_r", Input).value == "16"
        assert setup.query_one("#advanced", Collapsible).collapsed is False  # the changed fields are in sight
        assert setup.data["model"]["load_in_4bit"] is True and setup.data["model"]["lora"]["r"] == 16

        await pilot.press("ctrl+z")
        await planned(pilot, setup)
        assert {f: setup.query_one(f"#{f}").value for f in PLAN_FIELDS} == before
        assert setup.data["model"]["load_in_4bit"] is False and setup.data["model"]["lora"] is None


async def test_no_lever_left_says_what_to_do_instead(tmp_path: Path) -> None:
    spec = specmod.from_dict({
        "task": "causal-lm", "model": {"name_or_path": "meta-llama/Llama-3.1-70B", "load_in_4bit": True, "lora": {"r": 16}},
        "dataset": {"train": str(ROOT / "assets" / "demo" / "reviews.csv")},
        "hardware": {"strategy": "zero3_offload", "gpu_memory_gib": 4},
        "training": {"per_device_train_batch_size": 1, "per_device_eval_batch_size": 1, "bf16": True,
                     "gradient_checkpointing": True}})
    app = app_for(tmp_path, spec)
    async with app.run_test(size=(120, 40)) as pilot:
        setup = await planned_setup(pilot, app)
        assert setup.plan["fits"] is False and setup.plan["levers"] == []
        shown = str(setup.query_one("#plan").render()) + str(setup.query_one("#levers-label", Static).render())
        assert "levers below" not in shown and "smaller model" in shown and "none left" in shown


async def test_ctrl_t_at_80x24_shows_the_levers_before_applying_one(tmp_path: Path) -> None:
    """At 80x24 the lever list was below the fold and ctrl+t applied the invisible first lever."""
    app = app_for(tmp_path, llama_spec())
    async with app.run_test(size=(80, 24)) as pilot:
        setup = await planned_setup(pilot, app)
        pane, levers = setup.query_one("#plan-pane"), setup.query_one("#levers", OptionList)
        assert not pane.can_view_entire(levers)
        await pilot.press("ctrl+t")
        await pilot.pause(0.3)
        assert setup.data["training"]["per_device_train_batch_size"] == 32  # nothing applied unseen
        assert levers.has_focus and pane.can_view_partial(levers)
        await pilot.press("ctrl+t")
        await planned(pilot, setup)
        assert setup.data["training"]["per_device_train_batch_size"] == 8
        assert setup.query_one("#per_device_train_batch_size", Input).value == "8"


async def test_model_entry_matches_any_part_of_the_id_one_line_each(tmp_path: Path) -> None:
    """'Llama-3' found nothing: completion matched only the start of the full hub id."""
    app = app_for(tmp_path, None)
    async with app.run_test(size=(80, 24)) as pilot:
        setup = await planned_setup(pilot, app)
        model = setup.query_one("#model", Input)
        model.value = ""
        model.focus()
        await pilot.press(*"llama-3")
        await pilot.pause(0.2)
        matches = setup.query_one("#model_matches", OptionList)
        ids = [str(matches.get_option_at_index(i).id) for i in range(matches.option_count)]
        assert matches.display and "meta-llama/Llama-3.1-8B" in ids and all("llama-3" in i.lower() for i in ids)
        assert matches.virtual_size.height == matches.option_count  # one line each
        await pilot.press("down")
        assert matches.has_focus
        await pilot.press("enter")
        await pilot.pause(0.2)
        assert model.value == ids[0] and not matches.display and model.has_focus


@pytest.mark.parametrize("size", [(120, 40), (80, 24)], ids=lambda s: f"{s[0]}x{s[1]}")
async def test_the_known_models_list_is_one_line_each(tmp_path: Path, size: tuple[int, int]) -> None:
    from textual.widgets._select import SelectOverlay

    app = app_for(tmp_path, None)
    async with app.run_test(size=size) as pilot:
        setup = await planned_setup(pilot, app)
        pick = setup.query_one("#model_pick", Select)
        pick.focus()
        await pilot.press("enter")
        await pilot.pause(0.3)
        overlay = pick.query_one(SelectOverlay)
        assert overlay.option_count > 10 and overlay.virtual_size.height == overlay.option_count


async def test_the_focused_field_stands_out(tmp_path: Path) -> None:
    """The focused field differed from the others by one shade (background 234 vs 235)."""
    app = app_for(tmp_path, None)
    async with app.run_test(size=(120, 40)) as pilot:
        setup = await planned_setup(pilot, app)
        setup.query_one("#num_train_epochs", Input).focus()
        await pilot.pause(0.2)
        focused, other = setup.query_one("#num_train_epochs").parent, setup.query_one("#learning_rate").parent
        assert focused is not None and other is not None
        assert focused.styles.background.a > 0.2 and other.styles.background.a == 0
        assert focused.query_one(".field-label").styles.text_style.bold


async def test_the_file_picker_goes_up_to_the_parent_folder(tmp_path: Path) -> None:
    from textual.widgets import DirectoryTree

    from tui.screens.file_pick import FilePickScreen

    (tmp_path / "below").mkdir()
    (tmp_path / "beside.csv").write_text("text,label\na,1\n")
    app = app_for(tmp_path, None)
    async with app.run_test(size=(80, 24)) as pilot:
        await planned(pilot, app.screen)  # type: ignore[arg-type]
        picked: list[Path | None] = []
        app.push_screen(FilePickScreen(tmp_path / "below"), picked.append)
        await pilot.pause(0.3)
        tree = app.screen.query_one(DirectoryTree)
        await pilot.press("backspace")
        await pilot.pause(0.3)
        assert Path(tree.path) == tmp_path and str(tmp_path) in str(app.screen.query_one("#pick-title").render())


async def test_escape_asks_before_discarding_edits(tmp_path: Path) -> None:
    from tui.screens.dialogs import ConfirmScreen
    from tui.screens.runs import RunsScreen

    app = app_for(tmp_path, None)
    async with app.run_test(size=(80, 24)) as pilot:
        setup = await planned_setup(pilot, app)
        setup.query_one("#num_train_epochs", Input).value = "7"
        await pilot.pause(0.2)
        await pilot.press("escape")
        await pilot.pause(0.2)
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")  # keep editing: the edit is still there
        await pilot.pause(0.2)
        assert app.screen is setup and setup.query_one("#num_train_epochs", Input).value == "7"
        setup.query_one("#num_train_epochs", Input).blur()
        await pilot.press("escape")
        await pilot.pause(0.2)
        await pilot.press("y")
        await wait_for(lambda: isinstance(app.screen, RunsScreen))(pilot)


async def test_escape_on_an_unchanged_form_goes_straight_back(tmp_path: Path) -> None:
    from tui.screens.runs import RunsScreen

    app = app_for(tmp_path, None)
    async with app.run_test(size=(80, 24)) as pilot:
        await planned(pilot, app.screen)  # type: ignore[arg-type]
        await pilot.press("escape")
        await wait_for(lambda: isinstance(app.screen, RunsScreen))(pilot)
