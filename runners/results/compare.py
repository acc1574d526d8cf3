"""Runs side by side: what ``ftui compare`` prints and the dashboard's compare view draws.

Each target resolves as other commands resolve a run (an ftui run id, a unique part of it, ``latest``, or a
path), and a path may be anything ``ftui attach`` reads: an ftui run dir, a Trainer or simpletransformers
output dir, a TensorBoard dir, a wandb dir. Every record of each is folded into a :class:`RunHistory`, so
the curves, the best checkpoint, the duration (the one rule of runners.watch.history) and the memory peaks are
the monitor's. Curves can be laid on three x axes: optimizer steps, samples seen (step x the global batch,
where the run tells it) and tokens seen (the Trainer's ``num_input_tokens_seen``, where it was counted).
A run whose axis cannot be known is left off that chart with the reason, never guessed.
"""
from __future__ import annotations

import bisect
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runners import events as ev
from runners import rundir, runstate
from runners.errors import UserError
from runners.results.run_settings import Settings, read_settings
from runners.watch.history import Bucket, RunHistory, listed_duration
from runners.watch.sources import detect_kind, open_path

AXES = ("step", "samples", "tokens")
CURVE_POINTS = 200  # per curve in --json: bounded however long the runs
MAX_POLLS = 100_000  # a source read to its end, bounded (4 MiB a poll for an ftui run)
TOKENS = "num_input_tokens_seen"
TERMINAL = ("finished", "stopped", "crashed", "killed")
_MISSING = object()


def is_metric(key: str) -> bool:
    """An eval key worth a curve: not the bookkeeping the Trainer logs beside the metrics."""
    return key not in ("epoch", TOKENS) and not key.endswith(("_runtime", "_per_second"))


@dataclass
class ComparedRun:
    label: str
    kind: str
    path: Path
    history: RunHistory
    state: str
    duration_s: float | None
    settings: Settings

    def eval_metrics(self) -> list[str]:
        names = dict.fromkeys(k for e in self.history.evals for k in e["metrics"] if is_metric(k))
        return list(names)

    def last_eval(self) -> dict[str, float]:
        if not self.history.evals:
            return {}
        return {k: v for k, v in self.history.evals[-1]["metrics"].items() if is_metric(k)}

    def last_loss(self) -> float | None:
        """The last logged train loss (the finish record's train_loss is a whole-run mean: not comparable)."""
        loss = self.history.latest.get("loss")
        return loss if isinstance(loss, (int, float)) else None

    def peak_memory(self) -> tuple[int | None, str]:
        """The highest peak over the ranks, and what it measures: GPU memory allocated, else the process RSS."""
        if not self.history.memory_peak:
            return None, ""
        gpu = any("peak_allocated" in r for r in self.history.memory.values())
        return max(self.history.memory_peak.values()), "gpu" if gpu else "rss"

    def tokens_at(self) -> Callable[[float], float | None] | None:
        """Step -> tokens seen, linear between the steps where the count was logged (None past the last)."""
        series = self.history.series.get(TOKENS)
        known = dict(series.points()) if series else {}
        final = self.history.final_metrics.get(TOKENS)
        if isinstance(final, (int, float)) and self.history.step:
            known[self.history.step] = float(final)
        if not known:
            return None
        points = sorted({0: 0.0, **known}.items())
        steps = [s for s, _ in points]

        def at(step: float) -> float | None:
            i = bisect.bisect_left(steps, step)
            if i >= len(points):
                return None
            (s1, v1), (s0, v0) = points[i], points[max(0, i - 1)]
            return v1 if s1 == step or s1 == s0 else v0 + (v1 - v0) * (step - s0) / (s1 - s0)
        return at

    def axis(self, by: str) -> Callable[[float], float | None] | None:
        if by == "step":
            return lambda step: step
        if by == "samples":
            batch = self.settings.global_batch
            return (lambda step: step * batch) if batch else None
        return self.tokens_at()

    def axis_note(self, by: str) -> str:
        """Why this run is not on the ``by`` axis ('' when it is)."""
        if self.axis(by) is not None:
            return ""
        if by == "samples":
            return self.settings.batch_note
        return f"tokens seen unknown: the run did not log {TOKENS}"

    def curve(self, metric: str, by: str, width: int) -> list[Bucket]:
        """The ``metric`` series downsampled to ``width`` buckets, on the ``by`` axis ([] when unknown)."""
        series, to_x = self.history.series.get(metric), self.axis(by)
        if series is None or to_x is None:
            return []
        out = []
        for b in series.downsample(width):
            lo, hi = to_x(b.step_lo), to_x(b.step_hi)
            if lo is not None and hi is not None:
                out.append(Bucket(int(lo), int(hi), b.first, b.last, b.lo, b.hi, b.total, b.count))
        return out

    def x_end(self, by: str) -> float | None:
        """Where the run ends on the ``by`` axis (its last step there)."""
        to_x = self.axis(by)
        return to_x(self.history.step) if to_x is not None and self.history.step else None

    def value_at(self, metric: str, by: str, x: float) -> float | None:
        """The ``metric`` at ``x`` on the ``by`` axis: its last value at or before ``x`` (None before the first)."""
        buckets = self.curve(metric, by, self.history.series_capacity)
        i = bisect.bisect_right([b.step_hi for b in buckets], x) - 1
        return buckets[i].last if i >= 0 else None

    def to_json(self, by: str, metrics: list[str], width: int) -> dict[str, Any]:
        peak, peak_kind = self.peak_memory()
        return {
            "label": self.label, "kind": self.kind, "path": str(self.path), "state": self.state,
            "step": self.history.step, "max_steps": self.history.max_steps, "duration_s": self.duration_s,
            "best": dict(self.history.best) if self.history.best else None, "last_eval": self.last_eval(),
            "last_loss": self.last_loss(), "peak_memory_bytes": peak, "peak_memory_kind": peak_kind or None,
            "global_batch": self.settings.global_batch, "batch_note": self.settings.batch_note,
            "settings": "known" if self.settings.values is not None else "unknown", "settings_note": self.settings.note,
            "axis_note": self.axis_note(by) or None,
            "curves": {m: [[b.step_hi, b.mean] for b in self.curve(m, by, width)] for m in metrics},
        }


@dataclass
class Comparison:
    runs: list[ComparedRun]

    def metrics(self) -> list[str]:
        """What can be charted: the train loss, then eval_loss, the metrics runs chose best by, the rest."""
        evals = dict.fromkeys(m for r in self.runs for m in r.eval_metrics())
        chosen = [r.history.best["metric"] for r in self.runs if r.history.best and r.history.best.get("metric") in evals]
        first = [m for m in ("eval_loss", *chosen) if m in evals]
        train = ["loss"] if any("loss" in r.history.series for r in self.runs) else []
        return train + list(dict.fromkeys(first + list(evals)))

    def aligned(self, metric: str, by: str, fractions: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)
                ) -> tuple[list[int], dict[str, list[float | None]]]:
        """``metric`` of every run on the ``by`` axis at the same x: fractions of the range all of them cover."""
        ends = {r.label: end for r in self.runs if (end := r.x_end(by))}
        if not ends:
            return [], {}
        common = min(ends.values())
        xs = [int(common * f) for f in fractions]
        return xs, {r.label: [r.value_at(metric, by, x) for x in xs] for r in self.runs if r.label in ends}

    def spec_diff(self) -> dict[str, dict[str, Any]]:
        """Keys whose values differ, and each run's value (a run without the key has no entry).

        A key is judged among the runs that could hold it: every run with a whole spec (an ftui run: a key it
        lacks is missing, which differs from any value) and the foreign runs that recorded the key."""
        known = [r for r in self.runs if r.settings.values is not None]
        keys = sorted({k for r in known for k in r.settings.values or {}})
        diff: dict[str, dict[str, Any]] = {}
        for key in keys:
            judges = [r for r in known if r.settings.complete or key in (r.settings.values or {})]
            values = [(r.settings.values or {}).get(key, _MISSING) for r in judges]
            if len(judges) > 1 and any(v is not values[0] and v != values[0] for v in values[1:]):
                diff[key] = {r.label: (r.settings.values or {})[key] for r in judges if key in (r.settings.values or {})}
        return diff

    def diff_cell(self, run: ComparedRun, key: str) -> str:
        """How a spec-diff cell reads: the value, '-' for a missing key, 'not recorded', or 'unknown'."""
        values = run.settings.values
        if values is None:
            return "unknown"
        if key in values:
            value = values[key]
            return "null" if value is None else str(value)
        return "-" if run.settings.complete else "not recorded"

    def notes(self, by: str) -> list[str]:
        out = [f"{r.label}: {r.axis_note(by)}" for r in self.runs if r.axis_note(by)]
        out += [f"{r.label}: settings unknown ({r.settings.note})" for r in self.runs if r.settings.values is None]
        return out

    def to_json(self, by: str = "step", width: int = CURVE_POINTS) -> dict[str, Any]:
        metrics = self.metrics()
        xs, aligned = self.aligned(metrics[0], by) if metrics else ([], {})
        return ev._clean({"by": by, "metrics": metrics, "runs": [r.to_json(by, metrics, width) for r in self.runs],
                          "aligned": {"metric": metrics[0] if metrics else None, "x": xs, "values": aligned},
                          "spec_diff": self.spec_diff(), "notes": self.notes(by)})


def resolve(target: str, runs_dir: Path) -> tuple[Path, str]:
    """(path, kind) of one target, or a UserError naming it and what would do."""
    path = Path(target).expanduser()
    if path.exists():
        kind = detect_kind(path.resolve())
        if kind is None:
            raise UserError(f"'{target}' is not a run ftui can read: give an ftui run dir (status.json), a Trainer or "
                            "simpletransformers output dir (trainer_state.json, checkpoint-*/), a TensorBoard log dir "
                            "(events.out.tfevents.*) or a wandb run dir (run-*.wandb).")
        path = path.resolve()
        return (path.parent if kind == "ftui" and path.is_file() else path), kind
    found = rundir.find_run(runs_dir, target)
    if found is not None:
        return found.resolve(), "ftui"
    runs = rundir.list_runs(runs_dir)
    hits = [p.name for p in runs if target in p.name]
    if len(hits) > 1:
        raise UserError(f"'{target}' matches {len(hits)} runs in {runs_dir} ({', '.join(hits[:4])}"
                        f"{', ...' if len(hits) > 4 else ''}): give more of the run id.")
    known = ", ".join(p.name for p in runs[:5]) or "none"
    raise UserError(f"No run matches '{target}' in {runs_dir} (recent runs: {known}). Give a run id, a unique part of "
                    "it, 'latest', or a path to a run dir, a Trainer output dir, a TensorBoard or a wandb dir; "
                    "--runs-dir chooses the runs dir.")


def load_run(path: Path, kind: str, now: float) -> ComparedRun:
    """Every record of one run folded into its history, with its state, duration and settings."""
    source = open_path(path, kind)
    history = RunHistory(source=kind)
    for _ in range(MAX_POLLS):
        records = source.poll()
        if not records and not getattr(source, "has_unread", False):
            break
        history.apply(records)
    if kind == "ftui":  # read-only: the reconciled state, never written back from here
        status = runstate.effective_status(path, write_back=False) or {}
        state = str(status.get("state") or history.state)
    else:
        status = source.status()
        state = history.state if history.state in TERMINAL else str(status.get("state") or history.state)
    duration = listed_duration(history.started_at, history.last_event_at, {**status, "state": state}, now)
    settings_dir = Path(getattr(source, "run_dir", path)) if kind == "wandb" else path
    return ComparedRun(source.label, kind, path, history, state, duration,
                       read_settings(kind, settings_dir, history.meta))


def _unique_labels(runs: list[ComparedRun]) -> None:
    """Two output dirs are often both called 'output': such labels take their parent's name too."""
    for run in runs:
        if sum(r.label == run.label for r in runs) > 1:
            run.label = f"{run.path.parent.name}/{run.path.name}"


def compare(targets: list[str], runs_dir: Path, now: float | None = None) -> Comparison:
    """The comparison of two or more runs (UserError for fewer, an unknown one, or one given twice)."""
    if len(targets) < 2:
        given = f" (got only '{targets[0]}')" if targets else ""
        raise UserError(f"Comparing needs at least two runs{given}: give two or more run ids, unique parts of them, "
                        "'latest' or paths (see 'ftui runs').")
    resolved = [resolve(t, runs_dir) for t in targets]
    seen: dict[Path, str] = {}
    for target, (path, _) in zip(targets, resolved):
        if path in seen:
            raise UserError(f"'{seen[path]}' and '{target}' are the same run ({path}): give two different runs.")
        seen[path] = target
    clock = time.time() if now is None else now
    runs = [load_run(path, kind, clock) for path, kind in resolved]
    _unique_labels(runs)
    return Comparison(runs)
