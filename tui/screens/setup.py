"""Setup: pick model, data, task, runner, hardware and the main training arguments, with the plan
preview updating live beside the form.

The form edits a spec dict; every change schedules a plan (debounced, computed in a worker thread,
only the newest result shown). Levers from the plan apply with one key press. Launching writes the
spec to a temporary file and runs `ftui run SPEC --detach` as a subprocess, so the checks that
import transformers never load into the UI process.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.content import Content
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.suggester import SuggestFromList
from textual.widgets import Footer, Input, Label, OptionList, Select, Static

from runners import spec as specmod
from runners.errors import UserError
from tui.messages import PlanReady
from tui.screens import setup_fields as sf
from tui.widgets.data_preview import preview
from tui.widgets.plan_view import PlanView, lever_label, probe_content

PLAN_DEBOUNCE = 0.3
PROBE_TIMEOUT = 600.0  # seconds for the whole probe (two worker processes)
PROBE_STEPS = 4


class SetupScreen(Screen[None]):
    """A new run: the form on the left (top when narrow), the live plan on the right."""

    HELP_TITLE = "Setup and plan"
    BINDINGS = [
        Binding("ctrl+r", "launch", "Launch", priority=True),
        Binding("ctrl+t", "apply_lever", "Apply lever", priority=True),
        Binding("ctrl+f", "pick_file", "Pick data", priority=True),
        Binding("ctrl+o", "open_spec", "Open spec", priority=True),
        Binding("ctrl+s", "save_spec", "Save spec", priority=True),
        Binding("ctrl+p", "probe", "Probe", priority=True,
                tooltip="run a few real training steps in a subprocess and correct the plan with them"),
        Binding("escape", "back", "Runs"),
    ]

    def __init__(self, spec: specmod.RunSpec, spec_path: str = "", base: Path | None = None) -> None:
        super().__init__()
        self.base = base or Path.cwd()
        self.data: dict[str, Any] = spec.to_dict()
        self.initial_model, self.initial_init = spec.model.name_or_path, spec.model.init
        self.spec_path = spec_path
        self.plan: dict[str, Any] | None = None
        self.form_error: str | None = None
        self.generation = 0
        self._filling = False
        self._plan_timer: Any = None
        self._launching = False
        self.is_planning = False
        self.probing = False
        self.probe: dict[str, Any] | None = None  # the last probe's result
        self.probe_steps = PROBE_STEPS
        self.probe_timeout = PROBE_TIMEOUT
        self.shown: set[str] = set()  # panes filled by workers (tests wait for them)

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
                yield self._row("model", Input(placeholder="hub id, local dir or bundled name", id="model", compact=True,
                                               suggester=SuggestFromList([v for _, v in choices], case_sensitive=False)))
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
            with VerticalScroll(id="plan-pane"):
                yield PlanView(id="plan")
                yield Static(id="probe")
                yield Static("levers", id="levers-label", classes="pane-label")
                yield OptionList(id="levers")
                yield Static(id="command")
        yield Footer()

    def on_mount(self) -> None:
        self.fill()
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
            self.query_one("#model", Input).value = sf.display_path(d["model"]["name_or_path"], self.base)
            self.query_one("#dataset", Input).value = sf.display_path(d["dataset"]["train"], self.base)
            self.query_one("#task", Select).value = d["task"]
            self.query_one("#runner", Select).value = d["runner"]
            self.query_one("#strategy", Select).value = d["hardware"]["strategy"]
            for f in sf.TEXT_FIELDS:
                self.query_one(f"#{f.id}", Input).value = sf.field_text(d, f)
            self.query_one("#precision", Select).value = sf.precision(d)
            self.query_one("#gradient_checkpointing", Select).value = bool(d["training"].get("gradient_checkpointing"))
        finally:
            self._filling = False
        self._preview()
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
            for f in sf.TEXT_FIELDS:
                sf.set_field(d, f, self.query_one(f"#{f.id}", Input).value)
        except UserError as exc:
            self.form_error = str(exc)
        sf.set_precision(d, str(self.query_one("#precision", Select).value))
        if self.query_one("#gradient_checkpointing", Select).value is True:
            d["training"]["gradient_checkpointing"] = True
        else:
            d["training"].pop("gradient_checkpointing", None)

    @on(Input.Changed)
    @on(Select.Changed)
    def _changed(self, event: Input.Changed | Select.Changed) -> None:
        if self._filling or event.control.id == "spec_path":
            return
        if event.control.id == "model_pick":
            if isinstance(event.value, str):
                self.query_one("#model", Input).value = event.value
            return
        self.read_form()
        if event.control.id == "dataset":
            self._preview()
        if self.probe is not None and not self.probing:
            self.probe = None
            self.query_one("#probe", Static).update("")
        self.schedule_plan()

    # -- plan ---------------------------------------------------------------------------------------

    def schedule_plan(self) -> None:
        self.is_planning = True
        if self._plan_timer is not None:
            self._plan_timer.stop()
        self._plan_timer = self.set_timer(PLAN_DEBOUNCE, self._request_plan)

    def _request_plan(self) -> None:
        self.generation += 1
        if self.form_error:
            self.post_message(PlanReady(self.generation, None, self.form_error, None))
            return
        self._plan(self.generation, sf.absolute_paths(self.data, self.base))

    def _plan_kwargs(self, spec: specmod.RunSpec) -> tuple[dict[str, Any], bool]:
        """make_plan's machine arguments from the telemetry: GPU memory and model, host RAM."""
        from runners.plan import timing

        sample = self.app.telemetry().sample()  # type: ignore[attr-defined]
        gpus = [g for g in (sample.get("gpus") or []) if g.get("memory_total")]
        gib = spec.hardware.gpu_memory_gib or (min(g["memory_total"] for g in gpus) / 2**30 if gpus else None)
        name = str(gpus[0].get("name") or "") if gpus else ""
        ram = sample.get("ram_total")
        kwargs = {"gpu_memory_gib": gib if spec.hardware.strategy != "cpu" else None,
                  "gpu_name": name if name and timing.find_gpu(name) else None,
                  "host_memory_gib": ram / 2**30 if ram else None}
        return kwargs, bool(gpus) and not spec.hardware.gpu_memory_gib and spec.hardware.strategy != "cpu"

    @work(thread=True, group="plan")
    def _plan(self, generation: int, data: dict[str, Any]) -> None:
        from runners.plan.planner import make_plan

        try:
            spec = sf.to_spec(data)
            kwargs, nvml = self._plan_kwargs(spec)
            plan = make_plan(spec, **kwargs).to_json()
            if nvml:
                plan["gpu_memory_source"] = "NVML"
            command = sf.launch_command(spec)
        except UserError as exc:
            self.post_message(PlanReady(generation, None, str(exc), None))
            return
        except Exception as exc:  # noqa: BLE001 - a planner bug must not take the form down
            self.post_message(PlanReady(generation, None, f"{type(exc).__name__}: {exc}", None))
            return
        self.post_message(PlanReady(generation, plan, None, command))

    @on(PlanReady)
    def _plan_ready(self, message: PlanReady) -> None:
        if message.generation != self.generation:
            return  # an older spec's plan arrived late
        self.is_planning = False
        self.plan = message.plan
        self.query_one(PlanView).show(message.plan, message.error)
        levers = self.query_one("#levers", OptionList)
        levers.clear_options()
        for i, lever in enumerate((message.plan or {}).get("levers") or []):
            levers.add_option(lever_label(i, lever))
        if levers.option_count:
            levers.highlighted = 0
        levers.display = bool(levers.option_count)
        self.query_one("#levers-label", Static).update(
            "levers, best first (enter or ctrl+t applies)" if levers.option_count else
            "levers: none needed" if (message.plan or {}).get("fits") else "levers: none")
        command = self.query_one("#command", Static)
        command.update(sf.command_text(self.spec_path, message.command) if message.command else "")

    # -- probe ----------------------------------------------------------------------------------------

    def action_probe(self) -> None:
        if self.probing:
            self.notify("The probe is already running.", severity="warning")
            return
        self.read_form()
        if self.form_error:
            self.notify(self.form_error, severity="error", timeout=10)
            return
        self.probing = True
        self.probe = None
        self.query_one("#probe", Static).update(Content.styled(
            f"probe: running a few real training steps at two batch sizes (timeout {self.probe_timeout:g}s)...",
            "$text-muted"))
        self._probe(sf.absolute_paths(self.data, self.base))

    @work(thread=True, group="probe")
    def _probe(self, data: dict[str, Any]) -> None:
        """The probe runs in subprocesses (runners.plan.probe_worker): torch never loads into the UI process."""
        from runners.plan import probe
        from runners.plan.planner import apply_probe, make_plan

        try:
            spec = sf.to_spec(data)
            kwargs, _ = self._plan_kwargs(spec)
            plan = make_plan(spec, **kwargs)
            apply_probe(plan, probe.run(plan, timeout=self.probe_timeout, steps=self.probe_steps))
            result, error = plan.to_json(), None
        except UserError as exc:
            result, error = None, str(exc)
        except Exception as exc:  # noqa: BLE001 - a probe bug must not take the form down
            result, error = None, f"{type(exc).__name__}: {exc}"
        self.app.call_from_thread(self._probed, result, error)

    def _probed(self, plan: dict[str, Any] | None, error: str | None) -> None:
        self.probing = False
        if plan is None:
            self.query_one("#probe", Static).update(Content.assemble(("probe failed: ", "bold $error"), error or ""))
            return
        self.probe = plan["probe"]
        self.query_one("#probe", Static).update(probe_content(plan))
        self.shown.add("#probe")

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

    def _show(self, selector: str, content: Any) -> None:
        self.query_one(selector, Static).update(content)
        self.shown.add(selector)

    @work(thread=True, group="gpus")
    def _gpus(self) -> None:
        sample = self.app.telemetry().sample()  # type: ignore[attr-defined]
        gpus = sample.get("gpus") or []
        if gpus:
            text = "GPUs: " + "  ".join(
                f"{g['index']}:{str(g.get('name') or '')[:14]} "
                f"{((g.get('memory_total') or 0) - (g.get('memory_used') or 0)) / 2**30:.0f}/"
                f"{(g.get('memory_total') or 0) / 2**30:.0f} GiB free" for g in gpus)
        else:
            text = "GPUs: none seen (no GPU): strategy cpu trains on the CPU"
        self.app.call_from_thread(self._show, "#gpus", text)

    # -- actions --------------------------------------------------------------------------------------

    @on(OptionList.OptionSelected, "#levers")
    def _lever_selected(self, event: OptionList.OptionSelected) -> None:
        self._apply(event.option_index)

    def action_apply_lever(self) -> None:
        self._apply(self.query_one("#levers", OptionList).highlighted or 0)

    def _apply(self, index: int) -> None:
        levers = (self.plan or {}).get("levers") or []
        if not 0 <= index < len(levers):
            self.notify("No lever to apply: the plan has none for this setup.", severity="warning")
            return
        lever = levers[index]
        self.data = sf.apply_lever(self.data, lever["change"])
        self.fill()
        self.notify(f"applied: {lever['name']}", timeout=3)

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
        self.fill()
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

    def action_back(self) -> None:
        self.app.action_show_runs()  # type: ignore[attr-defined]
