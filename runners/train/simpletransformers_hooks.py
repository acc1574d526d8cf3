"""The simpletransformers runner's event stream, hooked in from outside its training loop.

simpletransformers has no callbacks, so nothing in its loop is touched; instead, for the duration of
training (:func:`hooked`):

- the learning-rate scheduler it builds is wrapped: its ``step()`` runs once per optimizer step, which
  gives the exact global step, the place to honour stop/checkpoint requests and ``max_steps``;
- the TensorBoard ``SummaryWriter`` it writes ``lr`` and ``loss`` to at ``logging_steps`` is a subclass
  that also writes ``log`` (and ``memory``) records;
- ``_evaluate_during_training`` is wrapped to write every evaluation as an ``eval`` record as it happens
  (metric names prefixed ``eval_`` like the Trainer's: ``eval_mcc``, ``eval_accuracy``, ``eval_loss``);
- ``save_model`` is wrapped: saves into ``best_model_dir`` become ``checkpoint`` records with ``is_best``.

Evaluations inside training never log to wandb on their own (simpletransformers would open a new wandb
run for each): their metrics reach the training's one wandb run through its own ``wandb.log``.
:class:`StreamHooks` holds the state all the hooks share. Used only by ``runners.train.simpletransformers``.
"""
from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from runners import events as ev
from runners import rundir
from runners.train.common import ControlFiles, RankInfo, memory_record

SCHEDULE_FACTORIES = ("get_constant_schedule", "get_constant_schedule_with_warmup", "get_linear_schedule_with_warmup",
                      "get_cosine_schedule_with_warmup", "get_cosine_with_hard_restarts_schedule_with_warmup",
                      "get_polynomial_decay_schedule_with_warmup")


class StopTraining(Exception):
    """Raised from the scheduler hook to leave simpletransformers' loop at a step boundary."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _numbers(values: dict[str, Any]) -> dict[str, float]:
    """The numeric entries (numpy scalars included) as floats."""
    return {k: float(v) for k, v in values.items()
            if not isinstance(v, bool) and hasattr(v, "__float__") and not isinstance(v, str)}


def eval_metric_name(name: str) -> str:
    """simpletransformers' metric name as an eval record key (``mcc`` -> ``eval_mcc``)."""
    return name if name.startswith("eval_") else f"eval_{name}"


class StreamHooks:
    """Shared state of the hooks: the event writer, the step counter, loss bookkeeping, control files."""

    def __init__(self, run_dir: Path, total_steps: int, steps_per_epoch: int, train_batch: int,
                 max_steps: int | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.rank = RankInfo.from_env()
        self.writer = ev.EventWriter(self.run_dir / ev.EVENTS_FILE, rank=self.rank.rank)
        self.control = ControlFiles(self.run_dir)
        self.total_steps, self.steps_per_epoch = total_steps, max(1, steps_per_epoch)
        self.train_batch, self.max_steps = train_batch, max_steps
        self.step = 0
        self.scheduler: Any = None
        self.model: Any = None  # the FtuiClassificationModel, for checkpoint requests
        self.lr: float | None = None
        self.grad_norm: float | None = None
        self.loss_sum, self.loss_steps = 0.0, 0
        self.last_log = (time.time(), 0)
        self.last_eval_step: int | None = None
        self.last_eval: dict[str, float] = {}

    @property
    def epoch(self) -> float:
        return round(self.step / self.steps_per_epoch, 4)

    def emit(self, type_: str, **payload: Any) -> None:
        self.writer.emit(type_, **payload)

    # -- the scheduler hook: once per optimizer step
    def on_optimizer_step(self) -> None:
        self.step += 1
        if self.control.stop_requested():
            self.control.clear(rundir.STOP_REQUEST)
            self.emit(ev.MESSAGE, level="info", text=f"stop requested: checkpoint at step {self.step}, then stop")
            raise StopTraining("user request")
        if self.control.checkpoint_requested():
            self.control.clear(rundir.CHECKPOINT_REQUEST)
            self.emit(ev.MESSAGE, level="info", text=f"checkpoint requested: saving step {self.step}")
            self.save_checkpoint()
        if self.max_steps and self.step >= self.max_steps:
            raise StopTraining("max_steps")

    def save_checkpoint(self) -> Path:
        path = self.run_dir / "output" / f"checkpoint-{self.step}"
        sched = self.scheduler
        self.model.save_model(str(path), getattr(sched, "optimizer", None), sched, model=self.model.model)
        return path

    # -- the SummaryWriter hook: lr and loss at logging_steps
    def on_scalar(self, tag: str, value: Any, global_step: int | None, logging_steps: int) -> None:
        if tag == "lr":
            self.lr = float(value)
            return
        if tag != "loss":
            return
        step = int(global_step if global_step is not None else self.step)
        loss = float(value)
        self.loss_sum += loss * logging_steps
        self.loss_steps += logging_steps
        now = time.time()
        t0, s0 = self.last_log
        record: dict[str, Any] = {"step": step, "epoch": round(step / self.steps_per_epoch, 4), "loss": loss,
                                  "learning_rate": self.lr}
        if self.grad_norm is not None:
            record["grad_norm"] = self.grad_norm
        if now > t0 and step > s0:
            record["samples_per_second"] = (step - s0) * self.train_batch / (now - t0)
        self.last_log = (now, step)
        self.emit(ev.MEMORY, **memory_record(self.rank.rank, step))
        self.emit(ev.LOG, **record)

    def on_eval(self, results: dict[str, Any]) -> None:
        metrics = {eval_metric_name(k): v for k, v in _numbers(results).items()}
        self.last_eval_step, self.last_eval = self.step, metrics
        self.emit(ev.EVAL, step=self.step, epoch=self.epoch, metrics=metrics)

    def on_save(self, path: str, is_best: bool, metric: str | None, value: float | None) -> None:
        self.emit(ev.CHECKPOINT, step=self.step, path=path, metric=metric, value=value, is_best=is_best)

    def train_loss(self) -> float | None:
        return self.loss_sum / self.loss_steps if self.loss_steps else None


def make_model_class(hooks: StreamHooks) -> Any:
    from simpletransformers.classification import ClassificationModel

    class FtuiClassificationModel(ClassificationModel):
        """ClassificationModel whose evaluations and saves reach the event stream as they happen."""

        _in_training_eval = False
        _last_results: dict[str, Any] | None = None

        def _evaluate_during_training(self, eval_data: Any, *args: Any, **kwargs: Any) -> Any:
            if hooks.last_eval_step == hooks.step and self._last_results is not None:
                return dict(self._last_results)  # the epoch-end evaluation on a step just evaluated
            self._in_training_eval = True
            try:
                results = super()._evaluate_during_training(eval_data, *args, **kwargs)
            finally:
                self._in_training_eval = False
            self._last_results = dict(results)
            hooks.on_eval(results)
            return results

        def eval_model(self, *args: Any, **kwargs: Any) -> Any:
            if self._in_training_eval:
                kwargs["wandb_log"] = False  # else a new wandb run per evaluation
            return super().eval_model(*args, **kwargs)

        def save_model(self, output_dir: str | None = None, optimizer: Any = None, scheduler: Any = None,
                       model: Any = None, results: dict[str, Any] | None = None) -> None:
            super().save_model(output_dir, optimizer, scheduler, model=model, results=results)
            if not output_dir or model is None or self.args.no_save:
                return  # the final save into output_dir, or an epoch dir that got only eval_results.txt
            metric = self.args.early_stopping_metric
            if os.path.abspath(output_dir) == os.path.abspath(self.args.best_model_dir):
                value = (results or {}).get(metric)
                hooks.on_save(output_dir, True, eval_metric_name(metric), None if value is None else float(value))
            else:
                hooks.on_save(output_dir, False, eval_metric_name(metric), hooks.last_eval.get(eval_metric_name(metric)))

    return FtuiClassificationModel


@contextlib.contextmanager
def hooked(hooks: StreamHooks, logging_steps: int) -> Iterator[None]:
    """Patch simpletransformers' SummaryWriter and scheduler factories (and torch's gradient clipping,
    for grad_norm) for the duration of training; restore them afterwards."""
    import torch
    from simpletransformers.classification import classification_model as cm

    base_writer = cm.SummaryWriter

    class StreamingSummaryWriter(base_writer):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            hooks.last_log = (time.time(), hooks.step)  # created as the training loop starts

        def add_scalar(self, tag: str, scalar_value: Any, global_step: int | None = None, *args: Any, **kwargs: Any):
            result = super().add_scalar(tag, scalar_value, global_step, *args, **kwargs)
            hooks.on_scalar(tag, scalar_value, global_step, logging_steps)
            return result

    def wrap_factory(factory: Any) -> Any:
        def make(*args: Any, **kwargs: Any) -> Any:
            scheduler = factory(*args, **kwargs)
            # a subclass, not an instance attribute: scheduler.state_dict() pickles the instance's __dict__
            scheduler.__class__ = _stepping_class(type(scheduler))
            hooks.scheduler = scheduler
            return scheduler
        return make

    clip = torch.nn.utils.clip_grad_norm_

    def clip_and_record(*args: Any, **kwargs: Any) -> Any:
        norm = clip(*args, **kwargs)
        with contextlib.suppress(Exception):
            hooks.grad_norm = float(norm)
        return norm

    global _ACTIVE
    _ACTIVE = hooks
    saved = {name: getattr(cm, name) for name in SCHEDULE_FACTORIES}
    cm.SummaryWriter = StreamingSummaryWriter
    for name, factory in saved.items():
        setattr(cm, name, wrap_factory(factory))
    torch.nn.utils.clip_grad_norm_ = clip_and_record
    try:
        yield
    finally:
        cm.SummaryWriter = base_writer
        for name, factory in saved.items():
            setattr(cm, name, factory)
        torch.nn.utils.clip_grad_norm_ = clip
        _ACTIVE = None


_ACTIVE: StreamHooks | None = None
_STEPPING: dict[type[Any], type[Any]] = {}


def _stepping_class(base: type[Any]) -> type[Any]:
    """``base`` (a torch LR scheduler class) whose step() also calls the active hooks' on_optimizer_step."""
    if base not in _STEPPING:
        def step(self: Any, *args: Any, **kwargs: Any) -> Any:
            out = base.step(self, *args, **kwargs)
            if _ACTIVE is not None:
                _ACTIVE.on_optimizer_step()
            return out
        _STEPPING[base] = type(f"Ftui{base.__name__}", (base,), {"step": step})
    return _STEPPING[base]
