"""Setup: pick model, data, task, runner, hardware and the main training arguments, with the plan
preview updating live beside the form.

The form edits a spec dict; every change schedules a plan (debounced, computed in a worker thread,
only the newest result shown; that pane's planning and probing live in :mod:`tui.screens.setup_plan`).
Levers from the plan apply with one key press. Launching writes the spec to a temporary file and runs
`ftui run SPEC --detach` as a subprocess, so the checks that import transformers never load into the
UI process.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.screen import Screen
from textual.suggester import SuggestFromList
from textual.widgets import Input, Label, OptionList, Select, Static

from runners import spec as specmod
from runners.errors import UserError
from tui.messages import PlanReady
from tui.screens import setup_advanced
from tui.screens import setup_fields as sf
from tui.screens.setup_model import ModelInput, ModelMatches
from tui.screens.setup_plan import PlanPaneMixin
from tui.widgets.data_preview import preview
from tui.widgets.footer import Footer
from tui.widgets.plan_view import PlanView
from tui.widgets.sft_preview import SftPreview


class SetupScreen(PlanPaneMixin, Screen[None]):
    """A new run: the form on the left (top when narrow), the live plan on the right
    (its planning and probing: :class:`tui.screens.setup_plan.PlanPaneMixin`)."""

    HELP_TITLE = "Setup and plan"
    BINDINGS = [
        Binding("ctrl+r", "launch", "Launch", priority=True),
        Binding("ctrl+t", "apply_lever", "Apply lever", priority=True,
                tooltip="apply the highlighted lever (shows the lever list first when it is out of sight)"),
        Binding("ctrl+z", "undo_lever", "Undo lever", priority=True, show=False,  # the lever list and notices say it
                tooltip="the form as it was before the last lever"),
        Binding("ctrl+f", "pick_file", "Pick data", priority=True),
        Binding("ctrl+o", "open_spec", "Open spec", priority=True),
        Binding("ctrl+s", "save_spec", "Save spec", priority=True),
        Binding("ctrl+p", "probe", "Probe", priority=True,
                tooltip="run a few real training steps in a subprocess and correct the plan with them"),
        Binding("escape", "back", "Runs"),
    ]

    def __init__(self, spec: specmod.RunSpec, spec_path: str = "", base: Path | None = None,
                 new_run: bool = False) -> None:
        super().__init__()
        self.new_run = new_run  # the defaults of a new run (the strategy follows the GPUs seen), not a spec file
        self.base = base or Path.cwd()
        self.data: dict[str, Any] = spec.to_dict()
        self.initial_model, self.initial_init = spec.model.name_or_path, spec.model.init
        self.spec_path = spec_path
        self.form_error: str | None = None
        self._filling = False
        self._launching = False
        self.shown: set[str] = set()  # panes filled by workers (tests wait for them)
        self.clean_state: list[object] = []  # the fields as last filled from a spec file (escape asks when changed)

    # -- layout ---------------------------------------------------------------------------------

    def _row(self, label: str, widget: Any) -> Horizontal:
        return Horizontal(Label(label, classes="field-label"), widget, classes="field")

    def compose(self) -> ComposeResult:
        choices = sf.model_choices(self.base)
        yield Static("ftui · new run: setup and plan", classes="screen-title")
        with Horizontal(id="setup-body"):
            with VerticalScroll(id="form"):
                yield self._row("spec file", Input(self.spec_path, placeholder="path/to/spec.yaml (ctrl+o open, ctrl+s save)",
                                                   id="spec_path", compact=True))
                yield self._row(sf.NAME_FIELD.label, Input(id="name", compact=True))
                yield self._row("model", ModelInput(placeholder="hub id, local dir or bundled name (any part: down "
                                                    "picks a match)", id="model", compact=True, suggester=SuggestFromList(
                                                        [v for _, v in choices], case_sensitive=False)))
                yield ModelMatches(choices, id="model_matches")
                yield self._row("  known", Select(choices, prompt="pick a model", id="model_pick", compact=True))
                yield self._row("dataset", Input(placeholder="CSV/JSONL/parquet path (ctrl+f) or hub id", id="dataset",
                                                 compact=True))
                yield Static(id="data_preview")
                yield self._row("task", Select([(t, t) for t in specmod.TASKS], allow_blank=False, id="task", compact=True))
                yield self._row("runner", Select([(r, r) for r in specmod.RUNNERS], allow_blank=False, id="runner",
                                                 compact=True))
                yield self._row("strategy", Select([(s, s) for s in specmod.STRATEGIES], allow_blank=False, id="strategy",
                                                   compact=True))
                yield Static(id="gpus")
                for f in sf.TEXT_FIELDS:
                    yield self._row(f.label, Input(id=f.id, compact=True))
                yield self._row("precision", Select([(p, p) for p in sf.PRECISIONS], allow_blank=False, id="precision",
                                                    compact=True))
                yield self._row("grad checkpointing", Select([("off", False), ("on", True)], allow_blank=False,
                                                             id="gradient_checkpointing", compact=True))
                yield setup_advanced.section(self._row)
                sft = Vertical(*self._sft_rows(), SftPreview(id="sft_preview"), id="sft_options")
                sft.styles.height = "auto"  # last in the form: shown for the sft runner only
                yield sft
            with VerticalScroll(id="plan-pane"):
                yield PlanView(id="plan")
                yield Static(id="probe")
                yield Static("levers", id="levers-label", classes="pane-label")
                yield OptionList(id="levers")
                yield Static(id="command")
        yield Footer()

    def _sft_rows(self) -> list[Static | Horizontal]:
        """The sft runner's options (shown only for it): loss on the answers only, packing (LoRA: advanced)."""
        return [Static("sft: instruction tuning (trl)", classes="pane-label"),
                self._row("  loss on", Select([("every token", False), ("answers only", True)],
                                              allow_blank=False, id="sft_answers_only", compact=True)),
                self._row("  packing", Select([("off", False), ("on", True)], allow_blank=False, id="sft_packing",
                                              compact=True))]

    def on_mount(self) -> None:
        self.fill()
        self.clean_state = self.form_state()
        self.query_one("#model", Input).focus()
        self._gpus()

    def on_unmount(self) -> None:
        from runners.plan import probe

        probe.stop_all()  # a probe still running must not outlive the screen

    def on_resize(self) -> None:
        self.set_class(self.size.width < 100, "-narrow")

    # -- form <-> spec dict ------------------------------------------------------------------------

    def fill(self) -> None:
        """Show ``self.data`` in the widgets (without treating it as user edits)."""
        d = self.data
        self._filling = True
        try:
            self.query_one("#name", Input).value = sf.field_text(d, sf.NAME_FIELD)
            self.query_one("#model", Input).value = sf.display_path(d["model"]["name_or_path"], self.base)
            self.query_one("#dataset", Input).value = sf.display_path(d["dataset"]["train"], self.base)
            self.query_one("#task", Select).value = d["task"]
            self.query_one("#runner", Select).value = d["runner"]
            self.query_one("#strategy", Select).value = d["hardware"]["strategy"]
            for f in sf.TEXT_FIELDS:
                self.query_one(f"#{f.id}", Input).value = sf.field_text(d, f)
            self.query_one("#precision", Select).value = sf.precision(d)
            self.query_one("#gradient_checkpointing", Select).value = bool(d["training"].get("gradient_checkpointing"))
            answers_only, packing = sf.sft_values(d)
            self.query_one("#sft_answers_only", Select).value = answers_only
            self.query_one("#sft_packing", Select).value = packing
            setup_advanced.fill(self, d)
        finally:
            self._filling = False
        self._preview()
        self._sft_preview()
        self.schedule_plan()

    def _same_path(self, a: str, b: str) -> bool:
        """Whether two model fields name the same thing (the form shows paths relative to its base)."""
        def norm(v: str) -> str:
            p = self.base / v
            return str(p.resolve()) if v and p.exists() else v
        return norm(a) == norm(b)

    def read_form(self) -> None:
        """Widgets -> ``self.data``; a field that does not parse is kept as the form's error."""
        d = self.data
        self.form_error = None
        model = self.query_one("#model", Input).value.strip()
        if model != d["model"]["name_or_path"]:
            # a random init belongs to the model it was set for: a newly chosen model trains from its weights
            # (the preflight says how to set model.init: random for a config without weights)
            d["model"]["init"] = self.initial_init if self._same_path(model, self.initial_model) else "pretrained"
        d["model"]["name_or_path"] = model
        d["dataset"]["train"] = self.query_one("#dataset", Input).value.strip()
        for key, target in (("task", ("task",)), ("runner", ("runner",)), ("strategy", ("hardware", "strategy"))):
            value = self.query_one(f"#{key}", Select).value
            if isinstance(value, str):
                (d if len(target) == 1 else d[target[0]])[target[-1]] = value
        try:
            for f in (sf.NAME_FIELD, *sf.TEXT_FIELDS):
                sf.set_field(d, f, self.query_one(f"#{f.id}", Input).value)
        except UserError as exc:
            self.form_error = str(exc)
        advanced_error = setup_advanced.read(self, d)  # read even when a field above did not parse
        self.form_error = self.form_error or advanced_error
        sf.set_precision(d, str(self.query_one("#precision", Select).value))
        if self.query_one("#gradient_checkpointing", Select).value is True:
            d["training"]["gradient_checkpointing"] = True
        else:
            d["training"].pop("gradient_checkpointing", None)
        try:
            sf.set_sft(d, self.query_one("#sft_answers_only", Select).value is True,
                       self.query_one("#sft_packing", Select).value is True, self.base)
        except UserError as exc:
            self.form_error = self.form_error or str(exc)
        task = self.query_one("#task", Select)
        if task.value != d["task"]:  # the sft runner trains causal-lm: the task follows it
            task.value = d["task"]

    @on(Input.Changed)
    @on(Select.Changed)
    def _changed(self, event: Input.Changed | Select.Changed) -> None:
        if self._filling or event.control.id == "spec_path":
            return
        if event.control.id == "model_pick":
            if isinstance(event.value, str):
                self.query_one("#model", Input).value = event.value
            return
        if event.control.id == "model":
            self.query_one(ModelMatches).show_for(self.query_one("#model", Input).value)
        self.read_form()
        if event.control.id == "dataset":
            self._preview()
        self._sft_preview()
        if self.probe is not None and not self.probing:
            self.probe = None
            self.query_one("#probe", Static).update("")
        self.schedule_plan()

    # -- plan pane (planning and probing: PlanPaneMixin) ---------------------------------------------

    @on(PlanReady)
    def _plan_ready(self, message: PlanReady) -> None:
        self.show_plan(message)
        if message.generation == self.generation:
            lora = self.data["model"].get("lora") or {}
            self.query_one(SftPreview).show_plan(message.plan if self.data["runner"] == "sft" else None, lora.get("r"))

    # -- data preview ------------------------------------------------------------------------

    def _preview(self) -> None:
        self._read_preview(self.query_one("#dataset", Input).value.strip())

    @work(thread=True, exclusive=True, group="preview")
    def _read_preview(self, source: str) -> None:
        from runners.plan.planner import count_rows

        path = Path(source).expanduser()
        rows = count_rows(str(self.base / path if not path.is_absolute() else path)) if source else None
        content = preview(str(self.base / path) if source and not path.is_absolute() and (self.base / path).exists()
                          else source, rows)
        self.app.call_from_thread(self._show, "#data_preview", content)

    def _sft_preview(self) -> None:
        """The formatted example of the sft runner (in a worker: it reads the data and the tokenizer)."""
        runner = self.data["runner"] == "sft"
        self.query_one("#sft_options").display = runner
        if runner and not self.form_error:
            self._read_sft_preview(sf.absolute_paths(self.data, self.base))

    @work(thread=True, exclusive=True, group="sft_preview")
    def _read_sft_preview(self, data: dict[str, Any]) -> None:
        from tui.widgets.sft_preview import example

        try:
            content: Any = example(sf.to_spec(data))
        except UserError as exc:
            content = Content.styled(str(exc), "$error")
        self.app.call_from_thread(self._show_sft, content)

    def _show_sft(self, content: Any) -> None:
        self.query_one(SftPreview).show_example(content)
        self.shown.add("#sft_preview")

    def _show(self, selector: str, content: Any) -> None:
        self.query_one(selector, Static).update(content)
        self.shown.add(selector)

    # -- actions --------------------------------------------------------------------------------------

    @on(OptionList.OptionSelected, "#model_matches")
    def _model_matched(self, event: OptionList.OptionSelected) -> None:
        self.query_one("#model", Input).value = str(event.option.id)
        self.query_one(ModelMatches).display = False
        self.query_one("#model", Input).focus()

    def on_descendant_focus(self) -> None:
        if self.focused is not None and self.focused.id not in ("model", "model_matches"):
            self.query_one(ModelMatches).display = False  # the matches belong to the model field being typed in

    @on(OptionList.OptionSelected, "#levers")
    def _lever_selected(self, event: OptionList.OptionSelected) -> None:
        self.apply_lever(event.option_index)

    def action_pick_file(self) -> None:
        from tui.screens.file_pick import FilePickScreen

        def picked(path: Path | None) -> None:
            if path is not None:
                self.query_one("#dataset", Input).value = sf.display_path(str(path), self.base)

        self.app.push_screen(FilePickScreen(self.base), picked)

    def _spec_path(self) -> Path | None:
        text = self.query_one("#spec_path", Input).value.strip()
        if not text:
            self.notify("Type the spec file's path in the 'spec file' field first.", severity="warning")
            return None
        return (self.base / text).resolve() if not Path(text).is_absolute() else Path(text)

    def action_open_spec(self) -> None:
        path = self._spec_path()
        if path is None:
            return
        try:
            spec = specmod.load(path)
        except UserError as exc:
            self.notify(str(exc), severity="error", timeout=10)
            return
        self.data, self.spec_path = spec.to_dict(), str(self.query_one("#spec_path", Input).value.strip())
        self.undo.clear()  # the levers applied to the spec before belong to it
        self.fill()
        self.clean_state = self.form_state()
        self.notify(f"opened {path}")

    def action_save_spec(self) -> None:
        path = self._spec_path()
        if path is None:
            return
        self.read_form()
        try:
            if self.form_error:
                raise UserError(self.form_error)
            spec = sf.to_spec(sf.absolute_paths(self.data, self.base))
            if not path.parent.is_dir():
                raise UserError(f"Cannot save the spec to '{path}': the folder {path.parent} does not exist. "
                                "Create it or choose another path.")
            specmod.save(spec, path)
        except UserError as exc:
            self.notify(str(exc), severity="error", timeout=10)
            return
        self.spec_path = str(path)
        self.clean_state = self.form_state()
        self.notify(f"saved {path}")

    def action_launch(self) -> None:
        if self._launching:
            self.notify("Already launching...", severity="warning")
            return
        self.read_form()
        try:
            if self.form_error:
                raise UserError(self.form_error)
            spec = sf.to_spec(sf.absolute_paths(self.data, self.base))
        except UserError as exc:
            self.notify(str(exc), severity="error", timeout=10)
            return
        self._launching = True
        self.notify("launching: checking model, data and training arguments...")
        self.app.launch_spec(spec, on_done=self._launched)  # type: ignore[attr-defined]

    def _launched(self, ok: bool) -> None:
        self._launching = False

    def form_state(self) -> list[object]:
        """Every field's value: the form is changed when this differs from what it was when filled from a spec."""
        fields: list[Input | Select[Any]] = [*self.query("#form Input").results(Input),
                                             *self.query("#form Select").results(Select)]
        return [w.value for w in fields if w.id != "spec_path"]

    def action_back(self) -> None:
        from tui.screens.dialogs import ConfirmScreen

        def answered(discard: bool | None) -> None:
            if discard:
                self.app.action_show_runs()  # type: ignore[attr-defined]

        if self.form_state() == self.clean_state:
            answered(True)
            return
        self.app.push_screen(ConfirmScreen("Discard the changes to this setup? (ctrl+s saves them to the spec file "
                                           "first)"), answered)
