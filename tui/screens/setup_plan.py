"""The setup screen's plan pane: the live plan, its levers, the launch-command preview and the probe.

Every form change schedules a plan (debounced, computed in a worker thread, only the newest result
shown); the probe runs a few real training steps in subprocesses (``runners.plan.probe_worker``) and
corrects the plan with them, so torch never loads into the UI process.

:class:`PlanPaneMixin` is mixed into :class:`tui.screens.setup.SetupScreen`, which composes the pane's
widgets (``PlanView``, ``#probe``, ``#levers-label``, ``#levers``, ``#command``), routes ``PlanReady`` to
:meth:`PlanPaneMixin.show_plan`, and provides the form the plans are made from (``data``, ``base``,
``spec_path``, ``form_error``, ``read_form``).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual import work
from textual.content import Content
from textual.widgets import OptionList, Select, Static

from runners import spec as specmod
from runners.errors import UserError
from tui.messages import PlanReady
from tui.screens import setup_advanced
from tui.screens import setup_fields as sf
from tui.widgets.plan_view import PlanView, lever_label, probe_content

if TYPE_CHECKING:
    from textual.screen import Screen

    _ScreenBase = Screen[None]
else:  # a plain mixin at run time: it adds no class to the screen's CSS type chain
    _ScreenBase = object

PLAN_DEBOUNCE = 0.3
PROBE_TIMEOUT = 600.0  # seconds for the whole probe (two worker processes)
PROBE_STEPS = 4


class PlanPaneMixin(_ScreenBase):
    """Planning and probing for the setup screen; the state tests wait on (``plan``, ``is_planning``,
    ``probe``) lives here."""

    # provided by the screen: the form the plans are made from
    data: dict[str, Any]
    base: Path
    spec_path: str
    form_error: str | None
    shown: set[str]
    new_run: bool
    clean_state: list[object]

    def form_state(self) -> list[object]:
        """Every field's value (the screen's)."""
        raise NotImplementedError

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.plan: dict[str, Any] | None = None
        self.generation = 0
        self._plan_timer: Any = None
        self.is_planning = False
        self.probing = False
        self.probe: dict[str, Any] | None = None  # the last probe's result
        self.probe_steps = PROBE_STEPS
        self.probe_timeout = PROBE_TIMEOUT
        self.undo: list[tuple[dict[str, Any], str]] = []  # (the spec dict before a lever, what the lever changed)

    def read_form(self) -> None:
        """Widgets -> ``self.data`` (and ``form_error``): the screen's form."""
        raise NotImplementedError

    def fill(self) -> None:
        """``self.data`` -> widgets: the screen's form."""
        raise NotImplementedError

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

    def show_plan(self, message: PlanReady) -> None:
        """A plan (or its error) in the pane, with its levers and the launch command."""
        if message.generation != self.generation:
            return  # an older spec's plan arrived late
        self.is_planning = False
        self.plan = message.plan
        self.query_one(PlanView).show(message.plan, message.error)
        levers = self.query_one("#levers", OptionList)
        levers.clear_options()
        for i, lever in enumerate((message.plan or {}).get("levers") or []):
            levers.add_option(lever_label(i, lever, sf.lever_changes(self.data, lever["change"])))
        if levers.option_count:
            levers.highlighted = 0
        levers.display = bool(levers.option_count)
        self.query_one("#levers-label", Static).update(
            "levers, best first: the form change each makes (enter or ctrl+t applies, ctrl+z undoes)"
            if levers.option_count else "levers: none (no plan to change)" if not message.plan
            else "levers: none needed" if message.plan.get("fits")
            else "levers: none left for this run (the advice above says what to do)")
        command = self.query_one("#command", Static)
        command.update(sf.command_text(self.spec_path, message.command) if message.command else "")

    # -- GPUs ---------------------------------------------------------------------------------------

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
            text = "GPUs: none on this machine: only the cpu strategy trains here (a GPU plan is for another machine)"
        self.app.call_from_thread(self._gpus_seen, text, bool(gpus))

    def _gpus_seen(self, text: str, seen: bool) -> None:
        self.query_one("#gpus", Static).update(text)
        self.shown.add("#gpus")
        strategy = self.query_one("#strategy", Select)
        if seen and self.new_run and strategy.value == "cpu" and self.form_state() == self.clean_state:
            strategy.value = "single"  # a new run on a machine with a GPU plans and trains on one
            self.clean_state = self.form_state()

    # -- levers ------------------------------------------------------------------------------------

    def action_apply_lever(self) -> None:
        """Apply the highlighted lever, but only one the user can see: when the list is out of sight (a small
        terminal), the first press scrolls it into view and focuses it, and the next applies."""
        levers = self.query_one("#levers", OptionList)
        if levers.display and not levers.has_focus and not self.query_one("#plan-pane").can_view_entire(levers):
            self.query_one("#plan-pane").scroll_to_widget(levers, animate=False)
            levers.focus()
            self.notify("Levers shown below the plan: ctrl+t or enter applies the highlighted one.", timeout=4)
            return
        self.apply_lever(levers.highlighted or 0)

    def apply_lever(self, index: int) -> None:
        levers = (self.plan or {}).get("levers") or []
        if not 0 <= index < len(levers):
            self.notify("No lever to apply: the plan has none for this setup.", severity="warning")
            return
        change = levers[index]["change"]
        text = ", ".join(sf.lever_changes(self.data, change)) or levers[index]["name"]
        self.undo.append((self.data, text))
        self.data = sf.apply_lever(self.data, change)
        self.fill()
        setup_advanced.open_for(self, change)
        self.notify(f"applied: {text} (ctrl+z undoes)", timeout=5)

    def action_undo_lever(self) -> None:
        if not self.undo:
            self.notify("No lever to undo.", severity="warning")
            return
        self.data, text = self.undo.pop()
        self.fill()
        self.notify(f"undone: {text}", timeout=5)

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
