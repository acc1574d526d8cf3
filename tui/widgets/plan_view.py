"""The plan preview: memory per GPU as a bar against capacity, split by component, plus verdict,
peak phase, cadence and advice. Renders the same ``Plan.to_json()`` object `ftui --plan --json` prints.
"""
from __future__ import annotations

from typing import Any

from textual.content import Content
from textual.widgets import Static

from tui.format import span
from tui.widgets.panels import Part

GIB = 2**30
COMPONENT_STYLES = ("$primary", "$warning", "$success", "$secondary", "$accent", "$error", "$primary", "$warning")
COMPONENT_CHARS = "█▓▒▚▞░▙▟"


def size(n: float) -> str:
    """Bytes with a unit that keeps two or three significant figures."""
    if n >= GIB:
        return f"{n / GIB:.1f} GiB"
    if n >= 2**20:
        return f"{n / 2**20:.0f} MiB"
    return f"{n / 1024:.0f} KiB"


def human_count(n: int) -> str:
    for unit, size in (("B", 10**9), ("M", 10**6), ("k", 10**3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def memory_parts(plan: dict[str, Any], width: int) -> list[Part]:
    """The stacked bar and its legend."""
    capacity = max(1, int(plan.get("gpu_memory_bytes") or 1))
    comps = {k: v for k, v in (plan.get("components") or {}).items() if v > 0}
    overhead = max(0, int(plan.get("device_used_bytes", 0)) - sum(comps.values()))
    if overhead:
        comps["process overhead" if plan.get("device") == "cpu" else "CUDA context + cache"] = overhead
    used = sum(comps.values())
    scale = max(capacity, used)
    cells: list[tuple[str, str]] = []
    for i, nbytes in enumerate(comps.values()):
        n = int(round(nbytes / scale * width))
        if n == 0 and nbytes / scale > 0.002:
            n = 1
        cells.extend([(COMPONENT_CHARS[i % 8], COMPONENT_STYLES[i % 8])] * min(n, width - len(cells)))
    cells.extend([("·", "$text-muted")] * (width - len(cells)))
    if used > capacity:  # mark where the GPU ends
        cells[min(width - 1, int(capacity / scale * width))] = ("┃", "bold $error")
    parts: list[Part] = []
    for char, style in cells:
        if parts and isinstance(parts[-1], tuple) and parts[-1][1] == style and parts[-1][0][-1] == char:
            parts[-1] = (parts[-1][0] + char, style)
        else:
            parts.append((char, style))
    unit = "host RAM" if plan.get("device") == "cpu" else "per GPU"
    source = str(plan.get("gpu_memory_source") or "")
    where = f" ({source})" if source and source not in unit else ""  # "host RAM (host RAM)" said it twice
    parts.append(f"\n{size(plan.get('device_used_bytes', 0))} of {size(capacity)} {unit}{where}\n")
    for i, (name, nbytes) in enumerate(comps.items()):
        parts.append((COMPONENT_CHARS[i % 8], COMPONENT_STYLES[i % 8]))
        parts.append(f" {name} {size(nbytes)}  ")
    return parts


def plan_content(plan: dict[str, Any], width: int) -> Content:
    """The whole preview as styled text for a pane ``width`` cells wide."""
    fits = plan.get("fits")
    parts: list[Part] = [("FITS" if fits else "DOES NOT FIT", "bold $success" if fits else "bold $error"),
                         f"  peak at {plan.get('phase')}  · {plan.get('strategy')} × {gpus_label(plan)}"]
    if plan.get("levers") and not fits:  # on a small terminal the list is below the fold: say it is there
        parts.append((f"  · {len(plan['levers'])} levers below (ctrl+t)", "bold"))
    parts.append("\n")
    parts.extend(memory_parts(plan, max(10, width - 2)))
    model = plan.get("model") or {}
    parts.append(f"\nmodel {model.get('family')} {human_count(int(model.get('params') or 0))} params "
                 f"({human_count(int(model.get('trainable_params') or 0))} trainable, {model.get('source')})"
                 f" · max batch {plan.get('max_per_device_train_batch_size')}")
    parts.extend(time_parts(plan))
    if plan.get("fits_host") is False:
        parts.append((f"\nhost RAM: needs {size(plan.get('host_ram_bytes') or 0)} of "
                      f"{size(plan.get('host_ram_capacity_bytes') or 0)}", "bold $error"))
    cad = plan.get("cadence") or {}
    if cad:
        res = cad.get("resolved") or {}
        parts.append(f"\ncadence: {cad.get('total_steps')} steps · eval every {res.get('eval_steps', '-')} · "
                     f"save every {res.get('save_steps', '-')} · log every {res.get('logging_steps', '-')}")
    for line in plan.get("advice") or []:
        parts.append((f"\n{line}", "$text-muted"))
    for line in plan.get("warnings") or []:
        parts.append((f"\n⚠ {line}", "$warning"))
    return Content.assemble(*parts)


def time_parts(plan: dict[str, Any]) -> list[Part]:
    """One line: step time, wall time and GPU-hours (with their band), or why there is no estimate."""
    t = plan.get("time")
    if not t:
        return [(f"\ntime: {plan.get('time_note') or 'not estimated'}", "$text-muted")] if plan.get("time_note") else []
    step, wall = t["step_s"], t["wall_s"]
    band = round(100 * (step["high"] / step["value"] - 1))
    line = (f"\ntime: {span(step['value'])}/step ±{band}% · {t['total_steps']} steps ≈ {span(wall['value'])}"
            f" · {t['tokens_per_s']['value']:,.0f} tok/s")
    if t.get("gpu_hours"):
        line += f" · {t['gpu_hours']['value']:.2f} GPU-h"
    if t.get("cost"):
        line += f" · cost {t['cost']['value']:,.2f}"
    line += f" ({t['gpu'] or 'CPU'}, {'probe' if t['source'] == 'probe' else 'estimate'})"
    comm = t.get("communication") or {}
    if comm and (comm.get("nodes", 1) > 1 or comm.get("dominates")):  # one node: the links rarely matter
        text = (f"\ncomm: {comm['inter_node_bytes_per_gpu'] / 1e9:,.0f} GB/GPU across nodes per step · "
                f"{span(comm['comm_s'])} of collectives, {100 * comm['exposed_share']:.0f}% of the step exposed")
        return [line, (text, "bold $warning") if comm.get("dominates") else text]
    return [line]


def gpus_label(plan: dict[str, Any]) -> str:
    """'8', or '2 nodes × 8' for a multi-node run."""
    nodes = int(plan.get("nodes") or 1)
    return f"{nodes} nodes × {plan.get('num_gpus')}" if nodes > 1 else str(plan.get("num_gpus"))


def probe_content(plan: dict[str, Any]) -> Content:
    """The probe's result under the preview: its message, measured peak and largest batch, step time."""
    probe = plan.get("probe") or {}
    ok = probe.get("status") == "ok"
    parts: list[Part] = [("probe: ", "bold $success" if ok else "bold $error"), probe.get("message") or ""]
    mem = probe.get("memory")
    if mem:
        parts.append(f"\nmeasured peak {size(mem['peak_allocated_bytes'])} at {mem['phase']} (estimate "
                     f"{size(mem['estimated_peak_allocated_bytes'])}) · largest batch {mem['max_per_device_train_batch_size']}")
    if ok and probe.get("step_s"):
        parts.append(f"\nstep {probe['step_s']:.3g} s at batch {probe.get('batch')} on {probe.get('device')}")
    parts.extend(time_parts(plan))
    return Content.assemble(*parts)


def lever_label(index: int, lever: dict[str, Any], changes: list[str] | None = None) -> str:
    """One lever: the form change it makes (``changes``, e.g. 'batch / device 16 → 4'; else its name), what it
    saves and what the run would then use."""
    fits = " fits" if lever.get("fits") else ""
    return (f"{index + 1}. {', '.join(changes or [lever['name']])}: -{size(lever.get('saves_bytes', 0))} → "
            f"{size(lever.get('device_used_bytes', 0))}{fits}")


class PlanView(Static):
    """Shows a plan, or the reason there is none. The bar is drawn for the pane's width, so the plan is drawn
    again whenever that width changes (a scrollbar appearing, the terminal resized)."""

    _plan: dict[str, Any] | None = None
    _drawn_width = 0

    def show(self, plan: dict[str, Any] | None, error: str | None) -> None:
        self._plan = plan if not error else None
        if error:
            self.update(Content.assemble(("cannot plan: ", "bold $error"), error))
        elif plan is None:
            self.update(Content.styled("planning...", "$text-muted"))
        else:
            self._draw()

    def _draw(self) -> None:
        if self._plan is not None:
            self._drawn_width = self.size.width or 60
            self.update(plan_content(self._plan, self._drawn_width))

    def on_resize(self) -> None:
        if self._plan is not None and (self.size.width or 60) != self._drawn_width:
            self._draw()
