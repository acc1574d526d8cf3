"""The Rich report of `ftui --plan` (no --json): memory bar, components, phases, levers, cadence."""
from __future__ import annotations

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from runners.memory import GIB
from runners.plan import Plan


def _gib(value: float) -> str:
    return f"{value / GIB:,.2f} GiB"


def memory_bar(used: float, capacity: float, width: int = 40) -> Text:
    frac = min(used / capacity, 1.0) if capacity else 1.0
    filled = round(frac * width)
    style = "green" if used <= capacity * 0.9 else "yellow" if used <= capacity else "red"
    bar = Text("█" * filled, style=style) + Text("░" * (width - filled), style="dim")
    return bar + Text(f" {used / GIB:.1f} / {capacity / GIB:.0f} GiB ({100 * used / capacity:.0f}%)")


def render(plan: Plan, console: Console | None = None) -> None:
    console = console or Console()
    data = plan.to_json()
    est = plan.estimate
    verdict = Text("fits", style="bold green") if est.fits else Text("does not fit", style="bold red")
    head = Text.assemble(
        (f"{data['model']['name']}", "bold"), f"  {data['model']['params'] / 1e6:,.1f}M params",
        f" ({data['model']['trainable_params'] / 1e6:,.2f}M trainable)  ",
        f"{data['task']} · {data['runner']} · {data['strategy']} × {data['num_gpus']}  ", verdict)
    where = "host RAM" if plan.inputs.strategy == "cpu" else "per GPU"
    summary = Table.grid(padding=(0, 2))
    summary.add_row(f"device used ({where})", memory_bar(est.device_used, est.capacity))
    summary.add_row("peak allocated", f"{_gib(est.peak_allocated)} at the {est.phase} phase")
    summary.add_row("host RAM", _gib(est.host_ram))
    summary.add_row("largest batch that fits", str(data["max_per_device_train_batch_size"]))

    comps = Table(title=f"Components at the peak ({est.phase})", expand=True)
    comps.add_column("component")
    comps.add_column("memory", justify="right")
    for name, value in sorted(est.components.items(), key=lambda kv: -kv[1]):
        comps.add_row(name, _gib(value))

    phases = Table(title="Phases", expand=True)
    phases.add_column("phase")
    phases.add_column("tensors", justify="right")
    for name, parts in est.phases.items():
        mark = " ← peak" if name == est.phase else ""
        phases.add_row(name + mark, _gib(sum(parts.values())))

    levers = Table(title="Memory levers, by saving on this run", expand=True)
    for col in ("lever", "change", "saves", "result"):
        levers.add_column(col, justify="right" if col in ("saves", "result") else "left")
    for lever in plan.levers[:8]:
        change = " ".join(f"--{k}" if v is True else f"--{k} {' '.join(map(str, v)) if isinstance(v, list) else v}"
                          for k, v in lever.change.items())
        levers.add_row(lever.name, change, _gib(lever.saves),
                       Text(_gib(lever.device_used), style="green" if lever.fits else "red"))

    parts: list = [head, summary, Group(*[Text("• " + a) for a in plan.advice])]
    cad = plan.cadence
    if cad:
        c = Table(title=f"Cadence: {cad.total_steps} optimizer steps ({cad.steps_per_epoch}/epoch, "
                        f"{plan.num_train_samples} samples, {plan.samples_source})", expand=True)
        c.add_column("argument")
        c.add_column("value")
        for key, value in cad.training_arguments.items():
            c.add_row(key, str(value))
        c.add_row("evaluations / saves", f"{cad.evaluations} / {cad.saves}")
        if cad.validated is not None:
            c.add_row("TrainingArguments", "accepted" if cad.validated else f"refused: {cad.validation_error}")
        if cad.simpletransformers:
            for key in ("evaluate_during_training_steps", "logging_steps", "evaluations"):
                c.add_row(f"simpletransformers {key}", str(cad.simpletransformers[key]))
        parts.append(c)
    console.print(Panel(Group(*parts[:3]), title="ftui plan", border_style="cyan"))
    console.print(comps, phases)
    if plan.levers:
        console.print(levers)
    if cad:
        console.print(parts[3])
    if plan.loss:
        console.print(Text.assemble(("loss ", "bold"), plan.loss["name"], f": {plan.loss['reason']}"))
    for warning in plan.warnings + est.notes:
        console.print(Text("! " + warning, style="yellow"))
