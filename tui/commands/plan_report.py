"""The Rich report of `ftui --plan` (no --json): memory bar, components, phases, levers, cadence."""
from __future__ import annotations

from collections.abc import Callable

from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from runners.plan.memory import GIB
from runners.plan.planner import Plan
from tui.format import span


def _gib(value: float) -> str:
    return f"{value / GIB:,.2f} GiB"


def gpus_label(data: dict) -> str:
    """'8', or '2 nodes × 8' for a multi-node run."""
    nodes = int(data.get("nodes") or 1)
    return f"{nodes} nodes × {data['num_gpus']}" if nodes > 1 else str(data["num_gpus"])


def memory_bar(used: float, capacity: float, width: int = 40) -> Text:
    frac = min(used / capacity, 1.0) if capacity else 1.0
    filled = round(frac * width)
    style = "green" if used <= capacity * 0.9 else "yellow" if used <= capacity else "red"
    bar = Text("█" * filled, style=style) + Text("░" * (width - filled), style="dim")
    return bar + Text(f" {used / GIB:.1f} / {capacity / GIB:.0f} GiB ({100 * used / capacity:.0f}%)")


def time_table(data: dict) -> Table | Text:
    """Step time, tokens/s, wall time, GPU-hours and cost, each with its band."""
    t = data.get("time")
    if not t:
        return Text("time: " + (data.get("time_note") or "not estimated"), style="yellow")
    where = f"{t['gpu']} ({t['gpu_source']})" if t.get("gpu") else "measured"
    how = "measured by the probe" if t["source"] == "probe" else "estimate"
    table = Table(title=f"Time on {where}, {t['compute_dtype']} · {how}", expand=True)
    for col in ("", "value", "band"):
        table.add_column(col, justify="left" if not col else "right")

    def row(name: str, item: dict | None, fmt: Callable[[float], str]) -> None:
        if item:
            table.add_row(name, fmt(item["value"]), f"{fmt(item['low'])} – {fmt(item['high'])}")

    row("step time", t["step_s"], span)
    row("tokens/s (all GPUs)", t["tokens_per_s"], lambda v: f"{v:,.0f}")
    row(f"wall time ({t['total_steps']} steps)", t["wall_s"], span)
    row(f"GPU-hours (× {t['num_gpus']})", t.get("gpu_hours"), lambda v: f"{v:,.2f}")
    row(f"cost at {t['gpu_hour_price']}/GPU-hour" if t.get("gpu_hour_price") is not None else "cost", t.get("cost"),
        lambda v: f"{v:,.2f}")
    if t.get("mfu"):
        table.add_row("model FLOPs utilisation", f"{100 * t['mfu']:.0f}%", "")
    comm = t.get("communication")
    if comm:
        table.add_row("communication per GPU and step", f"{comm['intra_node_bytes_per_gpu'] / 1e9:,.1f} GB in node",
                      f"{comm['inter_node_bytes_per_gpu'] / 1e9:,.1f} GB across nodes" if comm["nodes"] > 1 else "")
        table.add_row("collectives per step", span(comm["comm_s"]),
                      f"{span(comm['exposed_s'])} exposed ({100 * comm['exposed_share']:.0f}% of the step)")
    return table


def comm_text(data: dict) -> Text | None:
    """One line on the links the collectives use; in bold when communication dominates the step."""
    comm = (data.get("time") or {}).get("communication")
    if not comm:
        return None
    where = (f"{comm['nodes']} nodes x {comm['gpus_per_node']} GPUs, {comm['inter_node_gbps']:,.0f} Gb/s per node across "
             f"({comm['inter_node_source']})" if comm["nodes"] > 1 else
             f"{comm['gpus_per_node']} GPUs on one node, {comm['intra_node_gbs']:,.0f} GB/s per GPU")
    if comm["dominates"]:
        return Text(f"communication dominates: {100 * comm['exposed_share']:.0f}% of the step waits for the links "
                    f"({where}); more bandwidth (--interconnect_gbps), fewer nodes or larger micro-batches help",
                    style="bold yellow")
    bound = " (communication-bound: the collectives take longer than the compute they overlap)" \
        if comm["bound"] == "communication" else ""
    return Text(f"communication: {where}{bound}", style="dim")


def probe_text(probe: dict) -> Group:
    lines = [Text.assemble(("probe ", "bold"), probe.get("message") or probe.get("status", ""))]
    mem = probe.get("memory")
    if mem:
        lines.append(Text(f"  measured peak {_gib(mem['peak_allocated_bytes'])} at the {mem['phase']} phase "
                          f"(estimate {_gib(mem['estimated_peak_allocated_bytes'])}); largest batch from the measured "
                          f"slope: {mem['max_per_device_train_batch_size']}"))
        for name, ph in mem["phases"].items():
            lines.append(Text(f"  {name}: {_gib(ph['intercept_bytes'])} + {ph['slope_bytes_per_sample'] / 2**20:,.1f} MiB/sample",
                              style="dim"))
    if probe.get("step_s"):
        lines.append(Text(f"  step time {probe['step_s']:.3f} s at batch {probe.get('batch')} on {probe.get('device')}"))
    return Group(*lines)


def lever_flags(change: dict) -> str:
    """A lever's change as the `ftui --plan` flags that make it."""
    return " ".join(f"--{k}" if v is True else f"--{k} {' '.join(map(str, v)) if isinstance(v, list) else v}"
                    for k, v in change.items())


def print_levers(plan: Plan, console: Console) -> None:
    """Each lever on a line, its flags on the next: never wrapped or cut (soft wrap), so they can be copied
    whole at any terminal width."""
    console.print(Text("Memory levers, by saving on this run (the flags that make each one):", style="bold"))
    for i, lever in enumerate(plan.levers[:8], 1):
        console.print(Text.assemble(f"{i}. {lever.name}: saves {_gib(lever.saves)} → ",
                                    (_gib(lever.device_used) + (" fits" if lever.fits else " does not fit"),
                                     "green" if lever.fits else "red")))
        console.print(Text("   " + lever_flags(lever.change)), soft_wrap=True)


def render(plan: Plan, console: Console | None = None) -> None:
    console = console or Console()
    data = plan.to_json()
    est = plan.estimate
    verdict = Text("fits", style="bold green") if data["fits"] else Text(
        "does not fit" + (" (host RAM)" if not data["fits_host"] else ""), style="bold red")
    head = Text.assemble(
        (f"{data['model']['name']}", "bold"), f"  {data['model']['params'] / 1e6:,.1f}M params",
        f" ({data['model']['trainable_params'] / 1e6:,.2f}M trainable)  ",
        f"{data['task']} · {data['runner']} · {data['strategy']} × {gpus_label(data)}  ", verdict)
    where = "host RAM" if plan.inputs.strategy == "cpu" else "per GPU"
    summary = Table.grid(padding=(0, 2))
    summary.add_row(f"device used ({where})", memory_bar(est.device_used, est.capacity))
    conf = data.get("confidence") or {}
    band = conf.get("peak_allocated_bytes")
    summary.add_row("peak allocated", f"{_gib(est.peak_allocated)} at the {est.phase} phase" +
                    (f" (measured-error band {band['low'] / GIB:.1f}-{band['high'] / GIB:.1f} GiB, {conf['route']})"
                     if band else ""))
    host_cap = data.get("host_ram_capacity_bytes")
    host_text = _gib(data["host_ram_bytes"]) + (f" of {_gib(host_cap)} ({data['host_ram_source']})" if host_cap else "")
    summary.add_row("host RAM" + (" per node" if int(data.get("nodes") or 1) > 1 else ""),
                    Text(host_text, style="" if data["fits_host"] else "bold red"))
    summary.add_row("largest batch that fits", str(data["max_per_device_train_batch_size"]))

    comps = Table(title=f"Components at the peak ({est.phase})", expand=True)
    comps.add_column("component")
    comps.add_column("memory", justify="right")
    for name, value in sorted(est.components.items(), key=lambda kv: -kv[1]):
        comps.add_row(name, _gib(value))

    phases = Table(title="Phases", expand=True)
    phases.add_column("phase")
    phases.add_column("tensors", justify="right")
    for name, tensors in est.phases.items():
        mark = " ← peak" if name == est.phase else ""
        phases.add_row(name + mark, _gib(sum(tensors.values())))

    parts: list[RenderableType] = [head, summary, Group(*[Text("• " + a) for a in plan.advice])]
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
        print_levers(plan, console)
    if cad:
        console.print(parts[3])
    console.print(time_table(data))
    line = comm_text(data)
    if line is not None:
        console.print(line)
    if plan.probe:
        console.print(probe_text(plan.probe))
    if plan.loss:
        console.print(Text.assemble(("loss ", "bold"), plan.loss["name"], f": {plan.loss['reason']}"))
    for warning in plan.warnings + est.notes:
        console.print(Text("! " + warning, style="yellow"))
