"""The training-process side of the event stream and of the control files.

``EventCallback`` is a ``TrainerCallback``: rank 0 writes start/log/eval/checkpoint/finish records,
every rank writes its own memory record at each log. Stop and checkpoint requests are files in the
run dir (``control/stop``, ``control/checkpoint``) so any viewer can ask; rank 0 reads them and
broadcasts the decision, so every rank stops at the same step, after the same checkpoint. That broadcast
spans the whole world, every node of a multi-node run too; there each rank also says on its stdout at
which step it stops, and the start record holds the world's layout (which rank runs on which node and host).
Runs in the training process only: importing torch here is fine.
"""
from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

from runners import events as ev
from runners import rundir
from runners.train.common import ControlFiles, RankInfo, agree, memory_record


def _numbers(logs: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in logs.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def world_layout(me: RankInfo) -> list[dict[str, Any]]:
    """Every rank's node, local rank and host, gathered from all of them (rank order)."""
    import socket

    import torch.distributed as dist

    mine = {"rank": me.rank, "node": me.node, "local_rank": me.local_rank, "host": socket.gethostname()}
    if not (dist.is_available() and dist.is_initialized()):
        return [mine]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, mine)
    return [g for g in gathered if isinstance(g, dict)]


def make_event_callback(run_dir: Path, spec_hash: str, runner: str, task: str, num_train_samples: int | None = None):
    """Build the callback class lazily so importing this module does not import transformers."""
    from transformers import TrainerCallback

    class EventCallback(TrainerCallback):
        def __init__(self) -> None:
            self.rank = RankInfo.from_env()
            self.writer = ev.EventWriter(Path(run_dir) / ev.EVENTS_FILE, rank=self.rank.rank)
            self.control_files = ControlFiles(run_dir)
            self.stop_reason: str | None = None
            self._last = (time.time(), 0, 0)  # time, step, tokens at the previous log
            self._last_eval: dict[str, float] = {}
            self._saved: dict[str, int] = {}  # checkpoint path -> step, as recorded (rank 0)

        def emit(self, type_: str, **payload: Any) -> None:
            if self.rank.is_main:
                self.writer.emit(type_, **payload)

        def on_train_begin(self, args, state, control, **kwargs):
            import torch

            from runners.train.adapters import parameter_counts

            devices = [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else ["cpu"]
            self._last = (time.time(), state.global_step, getattr(state, "num_input_tokens_seen", 0) or 0)
            model = kwargs.get("model")
            trainable, total = parameter_counts(model) if model is not None else (None, None)
            layout = world_layout(self.rank) if self.rank.nodes > 1 else None  # a collective: every rank calls it
            self.emit(ev.START, world_size=args.world_size, ranks=list(range(args.world_size)), devices=devices,
                      **({"nodes": self.rank.nodes, "layout": layout} if layout else {}),
                      trainable_params=trainable, total_params=total,
                      total_steps=state.max_steps, num_epochs=args.num_train_epochs, num_train_samples=num_train_samples,
                      spec_hash=spec_hash, runner=runner, task=task, pid=os.getpid(), pgid=os.getpgid(0),
                      resumed_step=state.global_step,
                      train_batch_size=args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size)

        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = logs or {}
            step = state.global_step
            self.writer.emit(ev.MEMORY, **memory_record(self.rank.rank, step, self.rank))
            if not self.rank.is_main:
                return
            numbers = _numbers(logs)
            if any(k.startswith("eval_") for k in numbers) or "train_loss" in numbers or "total_flos" in numbers:
                return  # evaluations arrive through on_evaluate; the final summary through finish()
            now = time.time()
            t0, s0, tok0 = self._last
            tokens = getattr(state, "num_input_tokens_seen", 0) or 0
            record = {"step": step, "epoch": state.epoch, **numbers}
            if now > t0 and step > s0:
                record["samples_per_second"] = (step - s0) * args.train_batch_size * args.gradient_accumulation_steps \
                    * args.world_size / (now - t0)
                if tokens > tok0:
                    record["tokens_per_second"] = (tokens - tok0) / (now - t0)
            for key in ("num_input_tokens_seen", "train_runtime", "train_tokens_per_second"):
                record.pop(key, None)  # cumulative counters, not per-log metrics
            self._last = (now, step, tokens)
            self.writer.emit(ev.LOG, **record)

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            metrics = _numbers(metrics or {})
            self._last_eval = metrics
            self.emit(ev.EVAL, step=state.global_step, epoch=state.epoch, metrics=metrics)
            if self._is_new_best(args, state, metrics) and args.save_strategy != "no":
                control.should_save = True  # keep the best checkpoint even between scheduled saves
            return control

        def _is_new_best(self, args, state, metrics: dict[str, float]) -> bool:
            metric = args.metric_for_best_model
            if not metric or not args.load_best_model_at_end:
                return False
            value = metrics.get(metric if metric.startswith("eval_") else f"eval_{metric}")
            if value is None or not math.isfinite(value):
                return False
            if state.best_metric is None:
                return True
            return value > state.best_metric if args.greater_is_better else value < state.best_metric

        def on_save(self, args, state, control, **kwargs):
            path = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
            metric = args.metric_for_best_model
            key = metric if (metric or "").startswith("eval_") else f"eval_{metric}" if metric else None
            is_best = bool(metric) and getattr(state, "best_global_step", None) == state.global_step
            value = state.best_metric if is_best else self._last_eval.get(key or "")
            if self.rank.is_main:
                self._report_removed()  # first, so the newest checkpoint record stays the last one
                self._saved[path] = state.global_step
            self.emit(ev.CHECKPOINT, step=state.global_step, path=path, metric=key, value=value, is_best=is_best)

        def _report_removed(self) -> None:
            """A ``checkpoint`` record with ``removed: true`` for each saved checkpoint gone from disk
            (rotated away by save_total_limit, at a save or at the end of training)."""
            for path, step in list(self._saved.items()):
                if not os.path.isdir(path):
                    del self._saved[path]
                    self.writer.emit(ev.CHECKPOINT, step=step, path=path, metric=None, value=None, is_best=False,
                                     removed=True, reason="rotated away (save_total_limit)")

        def on_step_end(self, args, state, control, **kwargs):
            flags = [0, 0]
            if self.rank.is_main:
                flags = [int(self.control_files.stop_requested()), int(self.control_files.checkpoint_requested())]
            stop, checkpoint = agree(flags)
            if stop:
                control.should_save = True
                control.should_training_stop = True
                self.stop_reason = "user request"
                if self.rank.nodes > 1:
                    print(f"ftui: stop requested: checkpoint at step {state.global_step}, then stop (node "
                          f"{self.rank.node}, rank {self.rank.rank})", flush=True)
                if self.rank.is_main:
                    self.control_files.clear(rundir.STOP_REQUEST)
                    self.writer.emit(ev.MESSAGE, level="info",
                                     text=f"stop requested: checkpoint at step {state.global_step}, then stop")
            elif checkpoint:
                control.should_save = True
                if self.rank.is_main:
                    self.control_files.clear(rundir.CHECKPOINT_REQUEST)
                    self.writer.emit(ev.MESSAGE, level="info", text=f"checkpoint requested: saving step {state.global_step}")
            return control

        def on_train_end(self, args, state, control, **kwargs):
            if self.rank.is_main:
                self._report_removed()  # save_total_limit 1 deletes the last non-best one at the end
            if self.stop_reason:
                self.emit(ev.STOP, step=state.global_step, reason=self.stop_reason)

        def finish(self, metrics: dict[str, Any], step: int) -> None:
            clean = {k: v for k, v in _numbers(metrics).items() if math.isfinite(v)}
            self.emit(ev.FINISH, step=step, metrics=clean, stopped=bool(self.stop_reason))

    return EventCallback()
