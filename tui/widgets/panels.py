"""Text panels of the monitor: progress, GPUs and host, checkpoints, log tail.

Each panel is a ``Static`` whose content is rebuilt from plain data (the run history, a telemetry
sample, a status dict) in one call: cheap, deterministic (no clock read here: the caller passes
``now``), so snapshot tests see the same frame every time.
"""
from __future__ import annotations

from typing import Any

from textual.content import Content
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from runners import slurm
from runners.watch.history import RunHistory
from tui.format import clock

GIB = 2**30
STATE_STYLES = {"running": "bold $success", "finished": "bold $primary", "stopped": "bold $warning",
                "crashed": "bold $error", "killed": "bold $error", "pending": "$text-muted", "unknown": "$text-muted"}


ENDED_STATES = ("finished", "stopped", "crashed", "killed")


def run_state(history: RunHistory, status: dict[str, Any]) -> str:
    """The state to show: the source's status, unless the records already tell the run ended."""
    state = str(status.get("state") or history.state)
    if history.state in ("finished", "stopped", "crashed") and state in ("running", "unknown"):
        return history.state
    return state


def run_elapsed(history: RunHistory, status: dict[str, Any], now: float) -> float | None:
    """The monitor's one duration of a run (elapsed, step time, ETA agree): runners.watch.history.run_duration,
    to ``now`` while the run is live, to its last record once it has ended."""
    return history.duration(None if run_state(history, status) in ENDED_STATES else now)


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "N/A"
    if n >= GIB:
        return f"{n / GIB:.1f}G"
    return f"{n / 2**20:.0f}M"


def fmt_rate(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value / 1000:.1f}k" if value >= 10_000 else f"{value:.1f}"


def bar(fraction: float, width: int) -> str:
    """A horizontal bar of ``width`` cells with eighth-cell resolution."""
    fraction = min(1.0, max(0.0, fraction))
    eighths = int(round(fraction * width * 8))
    full, part = divmod(eighths, 8)
    partial = " ▏▎▍▌▋▊▉"[part] if part and full < width else ""
    return ("█" * full + partial).ljust(width, "·")[:width]


Part = str | tuple[str, str]


def state_part(state: str) -> Part:
    return (state, STATE_STYLES.get(state, ""))


def actual_step_s(history: RunHistory) -> float | None:
    """Seconds per optimizer step so far (evaluations and saves included, as the run's wall time)."""
    duration = history.duration()  # start record to last record: the measure elapsed shows
    return duration / history.step if duration and history.step > 0 else None


def plan_vs_actual(history: RunHistory, planned: dict[str, Any], eta: float | None) -> Part:
    """One line: the step time measured so far against the plan's, and the ETA against the plan's."""
    plan_step = float(planned["step_s"])
    actual = actual_step_s(history)
    line = f"\nstep {actual:.3g}s" if actual else "\nstep -"
    line += f" vs plan {plan_step:.3g}s"
    off = actual is not None and not (planned.get("step_s_band") and None not in planned["step_s_band"]
                                      and planned["step_s_band"][0] <= actual <= planned["step_s_band"][1])
    if actual:
        line += f" ({100 * (actual / plan_step - 1):+.0f}%)"
    total = history.max_steps or planned.get("total_steps")
    if total:
        plan_left = max(0, total - history.step) * plan_step
        line += f"  ETA {clock(eta) if eta is not None else '-'} vs plan {clock(plan_left)}"
    if planned.get("wall_s"):
        line += f"  planned run {clock(planned['wall_s'])}"
    return (line, "$warning" if off else "$text-muted")


class ProgressPanel(Static):
    """State, step/epoch with a bar, throughput and ETA: two lines (three with an error)."""

    def show(self, history: RunHistory, status: dict[str, Any], now: float,
             planned: dict[str, Any] | None = None) -> None:
        """``planned``: the run's plan.json (written at launch), for step time and ETA against the plan."""
        state = run_state(history, status)
        step, total = history.step, history.max_steps
        epochs = history.meta.get("num_epochs")
        head = f"  step {step}/{total or '?'}"
        if history.epoch is not None:
            head += f"  epoch {history.epoch:.2f}" + (f"/{epochs:g}" if isinstance(epochs, (int, float)) else "")
        fraction = step / total if total else 0.0
        waiting = slurm.describe({**status, "state": state})  # why a queued Slurm job waits
        queue = f" ({waiting})" if waiting else ""
        room = (self.size.width or 80) - len(state) - len(queue) - len(head) - 8
        parts: list[Part] = [state_part(state), (queue, "$text-muted"), head, "  "]
        if room >= 6:
            parts.append((bar(fraction, min(room, 40)), "$accent"))
        if total:
            parts.append(f" {fraction:4.0%}")
        elapsed = run_elapsed(history, status, now)
        eta = history.eta_seconds() if state in ("running", "pending") else None
        rates = (f"\n{fmt_rate(history.latest.get('samples_per_second'))} samples/s  "
                 f"{fmt_rate(history.latest.get('tokens_per_second'))} tok/s  "
                 f"elapsed {clock(elapsed)}  ETA {clock(eta) if eta is not None else '-'}")
        loss = history.latest.get("loss")
        if loss is not None:
            rates += f"  loss {loss:.4g}"
        lr = history.latest.get("learning_rate")
        if lr is not None:
            rates += f"  lr {lr:.2e}"
        parts.append(rates)
        if planned and planned.get("step_s"):
            parts.append(plan_vs_actual(history, planned, eta))
        error = history.error or status.get("error")
        if error and state in ("crashed", "killed"):
            parts.append((f"\n{error}", "$error"))
        self.update(Content.assemble(*parts))


def node_lines(memory: dict[int, dict[str, Any]], estimate_bytes: int | None) -> list[list[Part]]:
    """One line per node of a multi-node run, from its ranks' memory records (they carry ``node`` and ``host``):
    host, ranks, the highest GPU peak against the plan (or the ranks' resident memory on CPU). Empty otherwise."""
    by_node: dict[int, list[tuple[int, dict[str, Any]]]] = {}
    for rank, mem in sorted(memory.items()):
        if isinstance(mem.get("node"), int):
            by_node.setdefault(mem["node"], []).append((rank, mem))
    lines: list[list[Part]] = []
    for node, mems in sorted(by_node.items()):
        ranks = [r for r, _ in mems]
        span = f"{ranks[0]}-{ranks[-1]}" if ranks == list(range(ranks[0], ranks[-1] + 1)) and len(ranks) > 1 \
            else ",".join(map(str, ranks))
        peak = max((int(m.get("peak_allocated") or 0) for _, m in mems), default=0)
        line: list[Part] = [f"node {node} {str(mems[0][1].get('host') or '?')[:20]} rank{'s' if len(ranks) > 1 else ''} "
                            f"{span} " + (f"peak {fmt_bytes(peak)}" if peak else
                                          f"rss {fmt_bytes(sum(int(m.get('rss') or 0) for _, m in mems))}")]
        if peak and estimate_bytes:
            line.append((f" / plan {fmt_bytes(estimate_bytes)}", "$error" if peak > estimate_bytes * 1.1 else "$text-muted"))
        lines.append(line)
    return lines


class ResourcePanel(Static):
    """Per-GPU memory against the plan's estimate, utilisation, temperature, power; CPU and RAM."""

    def show(self, sample: dict[str, Any] | None, history: RunHistory, estimate: dict[str, int] | None,
             compact: bool, strategy: str | None = None) -> None:
        """``estimate``: the plan's ``peak`` (allocated, against the ranks' peaks) and ``device`` (used,
        against what NVML reports) bytes, when the run has a plan; ``strategy``: the run's own spec's."""
        if sample is None:
            self.update(Content.styled("telemetry: sampling...", "$text-muted"))
            return
        parts: list[Part] = []
        gpus = sample.get("gpus") or []
        if not gpus:
            parts.append(("no GPU", "bold"))
            reason = sample.get("gpu_error")
            if reason and not compact:
                parts.append((f" ({reason})", "$text-muted"))
            if strategy and strategy != "cpu":  # this run's strategy, never a default's
                parts.append((f" · run strategy {strategy} needs GPUs", "$warning"))
            parts.append("\n")
        for gpu in gpus:
            parts.extend(self._gpu_line(gpu, (estimate or {}).get("device"), compact))
            parts.append("\n")
        parts.append(f"CPU {sample.get('cpu_percent', 0):5.1f}%  RAM {fmt_bytes(sample.get('ram_used'))}/"
                     f"{fmt_bytes(sample.get('ram_total'))}")
        nodes = node_lines(history.memory, (estimate or {}).get("peak"))
        if nodes:  # a multi-node run: the GPUs, CPU and RAM above are this machine's; its ranks report per node
            parts.append(f"  {len(nodes)} nodes, {len(history.memory)} ranks" if compact else " (this machine)")
            for line in [] if compact else nodes:
                parts.append("\n")
                parts.extend(line)
            self.update(Content.assemble(*parts))
            return
        for rank, mem in sorted(history.memory.items()):
            if compact and rank > 0:
                parts.append(f" +{len(history.memory) - 1} ranks")
                break
            peak, estimate_bytes = mem.get("peak_allocated"), (estimate or {}).get("peak")
            parts.append(("  " if compact else "\n") + f"rank {rank} "
                         + (f"peak {fmt_bytes(peak)}" if peak else f"rss {fmt_bytes(mem.get('rss'))}"))
            if peak and estimate_bytes:
                parts.append((f" / plan {fmt_bytes(estimate_bytes)}",
                              "$error" if peak > estimate_bytes * 1.1 else "$text-muted"))
        self.update(Content.assemble(*parts))

    def _gpu_line(self, gpu: dict[str, Any], estimate_bytes: int | None, compact: bool) -> list[Part]:
        """One line per GPU when compact; name and sensors, then memory against the plan, otherwise."""
        used, total = gpu.get("memory_used"), gpu.get("memory_total")

        def opt(value: Any, unit: str) -> str:
            return f"{value:.0f}{unit}" if isinstance(value, (int, float)) else "N/A"

        sensors = (f"{opt(gpu.get('utilization'), '%')} {opt(gpu.get('temperature'), '°C')} "
                   f"{opt(gpu.get('power_watts'), 'W')}")
        parts: list[Part] = [f"GPU{gpu.get('index', '?')} "]
        if not compact:
            parts.append(f"{str(gpu.get('name') or '')[:24]}  {sensors}\n  ")
        if used is not None and total:
            over = estimate_bytes is not None and used > estimate_bytes * 1.1
            parts.append((bar(used / total, 8 if compact else 14), "$error" if over else "$accent"))
            parts.append(f" {fmt_bytes(used)}/{fmt_bytes(total)}")
            if estimate_bytes and not compact:
                parts.append((f" plan {fmt_bytes(estimate_bytes)}", "$error" if over else "$text-muted"))
        else:
            parts.append("mem N/A")
        if compact:
            parts.append(f"  {sensors}")
        return parts


class CheckpointList(OptionList):
    """The checkpoints on disk, newest last, the best one marked; then one line naming those that are gone
    (rotated away by save_total_limit, or deleted). Each option's id is the checkpoint's recorded path."""

    DEFAULT_CSS = "CheckpointList, CheckpointList:focus { height: 1fr; border: none; padding: 0; }"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._shown: tuple[Any, ...] | None = None

    def show(self, history: RunHistory, on_disk: dict[str, Any] | None = None) -> None:
        """``on_disk``: recorded path -> its folder now, or None when it is gone (None: not checked)."""
        gone = [c for c in history.checkpoints if c.get("removed")
                or (on_disk is not None and on_disk.get(str(c.get("path"))) is None)]
        gone_ids = {id(c) for c in gone}
        here = [c for c in history.checkpoints[-50:] if id(c) not in gone_ids]
        best_path = (history.best or {}).get("checkpoint")
        key = (tuple((c.get("path"), c.get("value")) for c in here), tuple(c.get("path") for c in gone), best_path)
        if key == self._shown:
            return
        self._shown = key
        highlighted = self.highlighted
        self.clear_options()
        if not history.checkpoints:
            self.add_option(Option(Content.styled("no checkpoint yet", "$text-muted"), disabled=True))
            return
        for c in here:
            best = c.get("path") == best_path
            value = c.get("value")
            metric = f"  {c.get('metric')}={value:.4g}" if isinstance(value, (int, float)) else ""
            name = str(c.get("path") or "").rstrip("/").rsplit("/", 1)[-1]
            self.add_option(Option(Content.styled(f"{'★' if best else ' '} step {c.get('step')}  {name}{metric}",
                                                  "bold $success" if best else ""), id=str(c.get("path"))))
        if not here:
            self.add_option(Option(Content.styled("no checkpoint left on disk", "$text-muted"), disabled=True))
        if gone:
            steps = ", ".join(f"{c.get('step')}{' ★best' if c.get('path') == best_path else ''}" for c in gone[-12:])
            self.add_option(Option(Content.styled(f"deleted from disk ({len(gone)}): "
                                                  f"step {steps}{' ...' if len(gone) > 12 else ''}",
                                                  "$text-muted"), disabled=True))
        if here:
            self.add_option(Option(Content.styled("y copy path · r resume from it · x export", "$text-muted"),
                                   disabled=True))
            self.highlighted = min(highlighted, len(here) - 1) if highlighted is not None else len(here) - 1

    def selected_path(self) -> str | None:
        """The recorded path of the highlighted checkpoint, or None."""
        index = self.highlighted
        return self.get_option_at_index(index).id if index is not None else None


class LogTail(Static):
    """The last lines of the run's stdout.log (read in the poll worker)."""

    def show(self, lines: list[str] | None) -> None:
        if lines is None:
            self.update(Content.styled("no log for this source", "$text-muted"))
            return
        self.update(Content("\n".join(lines) if lines else "(empty log)"))
