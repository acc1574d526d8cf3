"""One probe measurement, in its own process: a few real HF Trainer steps of the run's configuration.

``python -m runners.plan.probe_worker`` reads one JSON config on stdin (written by ``runners/plan/probe.py``),
builds the model from its config with a random init, as real tensors on the device (a GPU when one is
visible, else the CPU), trains ``steps`` optimizer steps on random token ids filling ``seq``, then runs
one ``evaluate()``, and prints one line ``PROBE {json}``. On a GPU it records the peak of
``torch.cuda.max_memory_allocated`` per phase (forward, backward, optimizer step, eval), resetting it
between phases as /work/shared/gpu/trainer_peak.py does; on the CPU memory is not measured by the
allocator, and the process's peak RSS is reported instead, labelled as such. Step time is the median
of the steps after the first.
"""
from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any


def _model(cfg: dict[str, Any], torch: Any, device: str) -> Any:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoModelForSequenceClassification

    raw = {k: v for k, v in cfg["config"].items() if k not in ("_ftui", "architectures")}
    config = AutoConfig.for_model(**raw)
    task = cfg["task"]
    if task == "seq-cls":
        config.num_labels = 2
        config.id2label, config.label2id = {0: "0", 1: "1"}, {"0": 0, "1": 1}
        if getattr(config, "pad_token_id", None) is None:
            config.pad_token_id = 0
    auto = {"seq-cls": AutoModelForSequenceClassification, "causal-lm": AutoModelForCausalLM,
            "seq2seq": AutoModelForSeq2SeqLM}[task]
    kwargs: dict[str, Any] = {"attn_implementation": cfg.get("attn") or "sdpa"}
    if cfg.get("torch_dtype") not in (None, "auto"):
        kwargs["dtype"] = getattr(torch, cfg["torch_dtype"])
    torch.manual_seed(0)
    with torch.device(device):  # real tensors on the device: the memory is the point
        model = auto.from_config(config, **kwargs)
    if cfg.get("lora"):
        from peft import LoraConfig, get_peft_model

        if cfg.get("gc"):
            model.enable_input_require_grads()
        model = get_peft_model(model, LoraConfig(**cfg["lora"]))  # runners.peft_rules.lora_config_kwargs
    return model


def measure(cfg: dict[str, Any]) -> dict[str, Any]:
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    cuda = torch.cuda.is_available() and cfg.get("device", "auto") != "cpu"
    device = "cuda" if cuda else "cpu"
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out: dict[str, Any] = {"device": device, "batch": cfg["batch"], "seq": cfg["seq"], "pid": os.getpid(),
                           "torch": torch.__version__}
    if cuda:
        out["gpu_name"] = torch.cuda.get_device_name(0)
        out["gpu_total_bytes"] = torch.cuda.get_device_properties(0).total_memory
    model = _model(cfg, torch, device)
    out["params"] = sum(p.numel() for p in model.parameters())
    out["trainable"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    vocab, seq, task, bs = int(cfg["config"].get("vocab_size") or 32000), cfg["seq"], cfg["task"], cfg["batch"]
    steps, eval_bs = int(cfg.get("steps", 4)), int(cfg.get("eval_batch", bs))

    class Random(torch.utils.data.Dataset):
        def __init__(self, n: int) -> None:
            self.n = n

        def __len__(self) -> int:
            return self.n

        def __getitem__(self, i: int) -> dict[str, Any]:
            g = torch.Generator().manual_seed(i)
            ids = torch.randint(5, max(vocab - 1, 6), (seq,), generator=g)
            row = {"input_ids": ids, "attention_mask": torch.ones(seq, dtype=torch.long)}
            row["labels"] = torch.tensor(i % 2) if task == "seq-cls" else ids.clone()
            return row

    peaks = {"forward": 0, "backward": 0, "optimizer step": 0, "eval": 0}
    starts: list[float] = []
    ends: list[float] = []

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    def take(phase: str) -> None:
        if cuda:
            torch.cuda.synchronize()
            peaks[phase] = max(peaks[phase], torch.cuda.max_memory_allocated())
            torch.cuda.reset_peak_memory_stats()

    training = {"on": False}

    def forward_done(module: Any, args: Any, output: Any) -> None:
        if training["on"] and module.training:
            take("forward")

    model.register_forward_hook(forward_done)

    class Phases(TrainerCallback):
        def on_step_begin(self, *a: Any, **k: Any) -> None:
            sync()
            starts.append(time.perf_counter())

        def on_pre_optimizer_step(self, *a: Any, **k: Any) -> None:
            take("backward")

        def on_optimizer_step(self, *a: Any, **k: Any) -> None:
            take("optimizer step")

        def on_step_end(self, *a: Any, **k: Any) -> None:
            sync()
            ends.append(time.perf_counter())

    workdir = tempfile.mkdtemp(prefix="ftui-probe-")
    targs: dict[str, Any] = dict(output_dir=workdir, max_steps=steps, per_device_train_batch_size=bs,
                                 per_device_eval_batch_size=eval_bs, logging_strategy="no", report_to="none",
                                 save_strategy="no", eval_strategy="no", dataloader_num_workers=0, disable_tqdm=True,
                                 use_cpu=not cuda)
    if cuda:
        for key in ("bf16", "fp16"):
            if cfg.get(key):
                targs[key] = True
    elif cfg.get("bf16") or cfg.get("fp16"):
        out["note"] = "mixed precision is off on the CPU"
    if cfg.get("gc"):
        targs["gradient_checkpointing"] = True
    if cfg.get("optim"):
        targs["optim"] = cfg["optim"]
    try:
        trainer = Trainer(model=model, args=TrainingArguments(**targs), train_dataset=Random(bs * steps),
                          callbacks=[Phases()])
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        training["on"] = True
        trainer.train()
        training["on"] = False
        take("optimizer step")
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        trainer.evaluate(Random(eval_bs * 2))
        take("eval")
        durations = [e - s for s, e in zip(starts, ends)]
        out["step_times_s"] = durations
        out["step_s"] = statistics.median(durations[1:] if len(durations) > 1 else durations)
        out["status"] = "ok"
    except torch.OutOfMemoryError as exc:
        out.update(status="oom", error=str(exc)[:300])
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if cuda:
        out["peaks"] = peaks
        out["reserved_peak_bytes"] = torch.cuda.max_memory_reserved()
    else:
        out["peaks"] = None  # not applicable: the CPU allocator keeps no such counter
        out["rss_peak_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        out["rss_delta_bytes"] = out["rss_peak_bytes"] - rss0
    return out


def main() -> int:
    cfg = json.loads(sys.stdin.read())
    try:
        out = measure(cfg)
    except Exception as exc:  # noqa: BLE001 - reported to the parent as one line, not a traceback
        out = {"status": "error", "error": f"{type(exc).__name__}: {exc}"[:600]}
    sys.stdout.write("PROBE " + json.dumps(out) + "\n")
    sys.stdout.flush()
    return 0 if out.get("status") == "ok" else 1


if __name__ == "__main__":
    raise SystemExit(main())
