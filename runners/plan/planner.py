"""The plan of a run: memory per GPU, strategy advice, ranked levers and cadence, as one JSON object.

``make_plan`` is what `ftui --plan --json` prints and what the dashboard's plan preview renders.
It never needs a GPU and never imports torch; the real TrainingArguments check (which imports
transformers, about a second) runs only when asked (`--validate`, and always before a launch).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runners import peft_rules, strategies
from runners.errors import UserError
from runners.plan import architecture, memory, models, strategy, timing
from runners.plan import cadence as cadence_mod
from runners.plan.memory import GIB, MemoryInput
from runners.spec import RunSpec

DEFAULT_GPU_GIB = 80.0
DEFAULT_SAMPLES = 10_000


@dataclass
class Plan:
    spec: RunSpec
    model: models.ResolvedModel
    inputs: MemoryInput
    estimate: memory.Estimate
    levers: list[strategy.Lever]
    advice: list[str]
    max_batch: int
    cadence: cadence_mod.Cadence | None
    num_train_samples: int
    samples_source: str
    gpu_source: str
    warnings: list[str] = field(default_factory=list)
    loss: dict[str, str] | None = None  # sentence-transformers: the loss chosen from the data, and why
    host_capacity: float | None = None  # the machine's RAM (bytes) that the host side must fit in
    host_source: str = "psutil"
    host_needed: float = 0.0
    excluded_levers: list[strategy.Lever] = field(default_factory=list)  # fit the GPU, not the host RAM
    gpu: timing.GPU | None = None
    gpu_name_source: str = ""
    time_inputs: dict[str, Any] = field(default_factory=dict)
    time: dict[str, Any] | None = None
    time_note: str | None = None
    probe: dict[str, Any] | None = None
    sft: dict[str, Any] | None = None  # the sft runner: rows, packed rows, token lengths (runners/plan/sft_lengths.py)

    @property
    def fits_host(self) -> bool:
        return strategy.host_fits(self.host_needed, self.host_capacity)

    @property
    def fits_device(self) -> bool:
        memory_probe = (self.probe or {}).get("memory") or {}
        return bool(memory_probe["fits"]) if memory_probe.get("applies") else self.estimate.fits

    @property
    def fits(self) -> bool:
        return self.fits_device and self.fits_host

    def compute_time(self, measured_step_s: float | None = None) -> None:
        """The ``time`` object from the estimate, or from a measured step time (a probe)."""
        if self.gpu is None:
            self.time = timing.measured_only(self.inputs, measured_step_s, **self.time_inputs) if measured_step_s else None
            return
        self.time = timing.summary(self.inputs, self.gpu, self.estimate.trainable_params,
                                   measured_step_s=measured_step_s, gpu_source=self.gpu_name_source, **self.time_inputs)

    def to_json(self) -> dict[str, Any]:
        est = self.estimate
        recs = list(self.advice) + [f"{lv.name}: {lv.description} -> {lv.device_used / GIB:.1f} GiB per GPU"
                                    + (" (fits)" if lv.fits else "") for lv in self.levers[:5]]
        memory_probe = (self.probe or {}).get("memory") or {}
        return {
            "model": {"name": self.model.name, "source": self.model.source, "family": self.model.arch.family,
                      "params": est.total_params, "trainable_params": est.trainable_params},
            "runner": self.spec.runner, "task": self.spec.task, "strategy": self.inputs.strategy,
            "num_gpus": self.inputs.num_gpus, "nodes": self.inputs.nodes, "gpus_per_node": self.inputs.num_gpus,
            "world_size": self.inputs.world_size, "device": "cpu" if self.inputs.strategy == "cpu" else "cuda",
            "gpu_memory_bytes": int(self.inputs.capacity_bytes), "gpu_memory_source": self.gpu_source,
            "peak_allocated_bytes": int(est.peak_allocated), "device_used_bytes": int(est.device_used),
            "host_ram_bytes": int(self.host_needed or est.host_ram),  # per node: every node needs as much
            "host_ram_capacity_bytes": int(self.host_capacity) if self.host_capacity else None,
            "host_ram_source": self.host_source, "fits_device": self.fits_device, "fits_host": self.fits_host,
            "per_node": {"gpus": self.inputs.num_gpus, "host_ram_bytes": int(self.host_needed or est.host_ram),
                         "host_ram_capacity_bytes": int(self.host_capacity) if self.host_capacity else None,
                         "fits_host": self.fits_host},
            "components": {k: int(v) for k, v in est.components.items()},
            "phase": est.phase,
            "phases": {name: {"total_bytes": int(sum(parts.values())),
                              "components": {k: int(v) for k, v in parts.items() if v > 0}}
                       for name, parts in est.phases.items()},
            "fits": self.fits,
            "recommendations": recs,
            "advice": self.advice,
            "levers": [lv.to_json() for lv in self.levers],
            "max_per_device_train_batch_size": memory_probe["max_per_device_train_batch_size"]
            if memory_probe.get("applies") else self.max_batch,
            "estimated_max_per_device_train_batch_size": self.max_batch,
            "levers_excluded_for_host_ram": [{"name": lv.name, "host_ram_bytes": int(lv.host_ram)}
                                             for lv in self.excluded_levers],
            "time": self.time, "time_note": self.time_note,
            "probe": self.probe,
            "cadence": self.cadence.to_json() if self.cadence else None,
            "num_train_samples": self.num_train_samples, "num_train_samples_source": self.samples_source,
            "notes": est.notes, "warnings": self.warnings, "loss": self.loss, "sft": self.sft,
            "confidence": memory.confidence(self.inputs, est, self.max_batch),
        }


def count_rows(path: str) -> int | None:
    """Rows of a local CSV/JSONL/parquet file, cheaply; None for hub ids and unknown formats."""
    p = Path(path)
    if not p.is_file():
        return None
    suffix = p.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return int(pq.ParquetFile(p).metadata.num_rows)
    if suffix in (".csv", ".tsv", ".jsonl", ".json"):
        with p.open("rb") as fh:
            lines = sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))
        return max(0, lines - (1 if suffix in (".csv", ".tsv") else 0))
    return None


def detect_gpus() -> tuple[int, float | None]:
    """(count, smallest total GiB) of the GPUs NVML sees; (0, None) without a GPU or NVML."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            count = pynvml.nvmlDeviceGetCount()
            sizes = [pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(i)).total for i in range(count)]
        finally:
            pynvml.nvmlShutdown()
        return count, (min(sizes) / GIB if sizes else None)
    except Exception:  # noqa: BLE001 - no library, no driver, no GPU: all mean "none seen"
        return 0, None


def _dtype(spec: RunSpec, model: models.ResolvedModel) -> str:
    dtype = spec.model.torch_dtype
    if dtype == "auto":  # transformers 5 loads the checkpoint's own dtype
        dtype = str(model.arch.config_dtype or "float32").replace("torch.", "")
    return dtype if dtype in architecture.DTYPE_BYTES else "float32"


def memory_input(spec: RunSpec, model: models.ResolvedModel, capacity: float) -> MemoryInput:
    t = spec.training
    lora = spec.model.lora
    texts = 2 if (spec.runner == "sentence_transformers" or spec.task == "embedding") else 1
    mixed = "bf16" if t.get("bf16") else "fp16" if t.get("fp16") else None
    optim = t.get("optim") or ("adamw_torch" if spec.runner == "simpletransformers" else "adamw_torch_fused")
    if optim not in strategies.PLANNED_OPTIMIZERS:
        raise UserError(f"--optim '{optim}' is not one ftui can plan. Choose adamw_torch, adamw_torch_fused, "
                        "adafactor, adamw_bnb_8bit or sgd.")
    # LoRA and k-bit as the runner sets them up (runners/peft_rules.py): the family's default targets when the
    # spec names none, and the k-bit preparation's gradient checkpointing unless the spec turns it off
    requested = peft_rules.requested_targets(lora, model.arch.family) if lora else ["q_proj", "v_proj"]
    targets = (requested,) if isinstance(requested, str) else tuple(requested)
    quantized = peft_rules.quant_bits(spec.model) is not None
    gc = peft_rules.kbit_gradient_checkpointing(t) if quantized else bool(t.get("gradient_checkpointing", False))
    return MemoryInput(
        arch=model.arch, task="embedding" if spec.task == "embedding" else spec.task,
        batch=int(t.get("per_device_train_batch_size", 8)) * texts, seq=spec.dataset.max_seq_length,
        eval_batch=int(t.get("per_device_eval_batch_size", 8)) * texts, dtype=_dtype(spec, model), mixed=mixed,
        optim=optim, gradient_checkpointing=gc, attn=spec.model.attn_implementation, lora_r=lora.r if lora else None,
        lora_targets=targets, lora_dropout=float(lora.dropout) if lora else 0.0,
        lora_modules_to_save=tuple(lora.modules_to_save or ()) if lora else (),
        lora_dora=bool(lora and lora.use_dora), load_in_4bit=spec.model.load_in_4bit,
        load_in_8bit=spec.model.load_in_8bit, strategy=spec.hardware.strategy, num_gpus=spec.hardware.num_processes,
        nodes=spec.hardware.nodes, interconnect_gbps=spec.hardware.interconnect_gbps, capacity_bytes=int(capacity * GIB),
        grad_accum=max(1, int(t.get("gradient_accumulation_steps") or 1)))


def host_memory(host_memory_gib: float | None) -> tuple[float, str]:
    """(bytes, source) of the RAM the host side must fit: the flag, else this machine's total."""
    if host_memory_gib is not None:
        if host_memory_gib <= 0:
            raise UserError(f"--host_memory_gib must be positive, got {host_memory_gib}.")
        return host_memory_gib * GIB, "flag"
    import psutil

    return float(psutil.virtual_memory().total), "this machine"


def _gpu_for_time(strat: str, gpu_name: str | None) -> tuple[timing.GPU | None, str, str | None]:
    """(GPU, where its name came from, why there is no time estimate)."""
    if strat == "cpu":
        return None, "", "CPU training: no step-time estimate (ftui --plan --probe measures one)"
    if gpu_name:
        gpu = timing.find_gpu(gpu_name)
        if gpu is None:
            raise UserError(f"--gpu '{gpu_name}' is not a GPU ftui knows. Choose one of: {', '.join(timing.known_names())} "
                            "(or add it to assets/gpus.json).")
        return gpu, "flag", None
    seen = timing.nvml_gpu_name()
    if seen is None:
        return None, "", "time needs a GPU model: pass --gpu H100 (or another of assets/gpus.json)"
    gpu = timing.find_gpu(seen)
    if gpu is None:
        return None, "", (f"NVML reports '{seen}', which assets/gpus.json does not list: pass --gpu with the closest of "
                          f"{', '.join(timing.known_names())}")
    return gpu, "nvml", None


def eval_samples(spec: RunSpec, samples: int, source: str) -> int:
    if spec.dataset.eval:
        counted = count_rows(spec.dataset.eval)
        n = counted if counted is not None else max(1, int(samples * spec.dataset.eval_fraction))
    else:
        n = max(1, int(samples * spec.dataset.eval_fraction / max(1 - spec.dataset.eval_fraction, 1e-9)))
    return min(n, spec.dataset.max_eval_samples) if spec.dataset.max_eval_samples else n


def check_task(spec: RunSpec, model: models.ResolvedModel) -> None:
    """A task the model's architecture cannot train is the user's error, not a plan: seq2seq needs an
    encoder-decoder (``is_encoder_decoder`` in its config; ``Arch.decoder_layers`` is 0 for the rest)."""
    if spec.task == "seq2seq" and not model.arch.decoder_layers:
        raise UserError(f"Task seq2seq (--task, the spec's task:) needs an encoder-decoder model, but "
                        f"'{model.name}' ({model.arch.family}) is not one (its config does not set is_encoder_decoder). "
                        f"Use --task causal-lm to train {model.name} on text, or choose an encoder-decoder model "
                        "such as google-t5/t5-base (t5, bart, mbart, pegasus, marian) for seq2seq.")


def make_plan(spec: RunSpec, num_train_samples: int | None = None, gpu_memory_gib: float | None = None,
              cuda_context_mib: float | None = None, validate: bool = False, gpu_name: str | None = None,
              gpu_hour_price: float | None = None, host_memory_gib: float | None = None) -> Plan:
    """Everything `ftui --plan` reports for ``spec``; raises UserError on impossible input."""
    model = models.resolve(spec.model.name_or_path)
    check_task(spec, model)
    warnings: list[str] = []
    strat, n = spec.hardware.strategy, spec.hardware.num_processes
    world = n * spec.hardware.nodes
    if strat == "ddp" and world < 2:
        raise UserError(f"Strategy ddp needs at least 2 GPUs, but --num_gpus is {n}. Use --strategy single for one "
                        "GPU, or pass --num_gpus 2 or more.")
    link = spec.hardware.interconnect_gbps
    if link is not None and link <= 0:
        raise UserError(f"hardware.interconnect_gbps (--interconnect_gbps) must be positive, got {link}: it is the "
                        "bandwidth between nodes, per node, in Gb/s (3200 for 8 x 400 Gb/s InfiniBand, 100 for 100 GbE).")
    gpu_source = "flag"
    if strat == "cpu":
        import psutil

        capacity, gpu_source = psutil.virtual_memory().total / GIB, "host RAM"
    elif gpu_memory_gib is not None:
        capacity = gpu_memory_gib
    else:
        count, size = detect_gpus()
        capacity, gpu_source = (size, "nvml") if size else (DEFAULT_GPU_GIB, "default (no GPU seen)")
        if count and n > count:
            warnings.append(f"{n} GPUs asked for, NVML sees {count}")
    if capacity <= 0:
        raise UserError(f"--gpu_memory_gib must be positive, got {capacity}.")
    inp = memory_input(spec, model, capacity)
    sft = sft_data(spec)
    if sft is not None:  # packed rows are max_length long; unpacked batches are padded to their longest row
        inp = MemoryInput(**{**inp.__dict__, "seq": sft.seq})
    if cuda_context_mib is not None:
        inp = MemoryInput(**{**inp.__dict__, "cuda_context_mib": cuda_context_mib})
    est = memory.estimate(inp)
    host_capacity, host_source = host_memory(host_memory_gib)
    workers = int(spec.training.get("dataloader_num_workers", 0) or 0)
    excluded: list[strategy.Lever] = []
    lever_list = strategy.levers(inp, est, host_capacity, workers, excluded)
    if spec.model.init == "random":  # a quantized random base is refused (runners/peft_rules.py): never offer it
        lever_list = [lv for lv in lever_list if not lv.change.get("load_in_4bit")]
    accum = int(spec.training.get("gradient_accumulation_steps", 1))
    for lever in lever_list:
        factor = lever.change.pop("gradient_accumulation_steps_multiplier", None)
        if factor:
            lever.change["gradient_accumulation_steps"] = accum * factor
    samples, source = num_train_samples, "flag"
    if samples is None and sft is not None:  # the rows the trainer steps over
        samples, source = sft.train_rows, "dataset (packed rows)" if sft.packing else "dataset (tokenized rows)"
    if samples is None:
        counted = count_rows(spec.dataset.train) if spec.dataset.train else None
        samples, source = (counted, "dataset") if counted is not None else (DEFAULT_SAMPLES, "assumed")
        if counted is not None and spec.dataset.eval is None:
            samples = max(1, samples - int(samples * spec.dataset.eval_fraction))
    if samples < 1:
        raise UserError(f"--num_train_samples must be at least 1, got {samples}.")
    cad = cadence_mod.suggest(spec, samples, world)  # the global batch spans every node
    if validate:
        error = cadence_mod.validate_with_transformers({**spec.training, **cad.training_arguments},
                                                        runner=spec.runner)
        cad.validated, cad.validation_error = error is None, error
    advice = strategy.advice(inp, est, host_capacity, workers, levers_left=bool(lever_list))
    host_needed = strategy.host_ram_needed(inp, est, workers)
    if not strategy.host_fits(host_needed, host_capacity):
        if not any("host RAM" in line for line in advice):
            advice.insert(0, f"Does not fit host RAM: needs {host_needed / GIB:.1f} GiB, more than "
                             f"{strategy.HOST_USABLE:.0%} of this machine's {host_capacity / GIB:.1f} GiB ({host_source}).")
        excluded_lines: list[strategy.Lever] = []  # every lever inherits the run's own host problem: one line says it
    else:
        excluded_lines = excluded
    for lever in excluded_lines:
        advice.append(f"Not offered: {lever.name} would need {lever.host_ram / GIB:.1f} GiB of host RAM; this machine has "
                      f"{host_capacity / GIB:.1f} GiB ({host_source}).")
    if gpu_hour_price is not None and gpu_hour_price < 0:
        raise UserError(f"--gpu_hour_price must not be negative, got {gpu_hour_price}.")
    gpu, name_source, time_note = _gpu_for_time(strat, gpu_name)
    plan = Plan(spec=spec, model=model, inputs=inp, estimate=est, levers=lever_list, advice=advice,
                max_batch=memory.max_batch_that_fits(inp), cadence=cad, num_train_samples=samples,
                samples_source=source, gpu_source=gpu_source, warnings=warnings, loss=sentence_loss(spec),
                sft=sft.to_json() if sft is not None else None,
                host_capacity=host_capacity, host_source=host_source, host_needed=host_needed,
                excluded_levers=excluded, gpu=gpu, gpu_name_source=name_source, time_note=time_note)
    plan.time_inputs = {"accumulation": accum, "total_steps": cad.total_steps, "evaluations": cad.evaluations,
                        "eval_samples": eval_samples(spec, samples, source), "price": gpu_hour_price,
                        "tf32": bool(spec.training.get("tf32"))}
    plan.compute_time()
    return plan


def apply_probe(plan: Plan, result: dict[str, Any]) -> Plan:
    """Correct ``plan`` with a probe's measurements: the measured peak and largest batch (GPU only, one
    unsharded process), and the measured step time in place of the estimate."""
    plan.probe = result
    if result.get("status") != "ok":
        return plan
    on_gpu = result.get("device") == "cuda"
    if on_gpu and plan.gpu is None and result.get("gpu_name"):
        plan.gpu, plan.gpu_name_source = timing.find_gpu(result["gpu_name"]), "probe"
    if on_gpu or plan.inputs.strategy == "cpu":  # a CPU step time says nothing about a GPU run
        accum = plan.time_inputs.get("accumulation", 1)
        plan.compute_time(measured_step_s=result["step_s"] * accum)
        if plan.time is not None:
            plan.time_note = None
    return plan


def sft_data(spec: RunSpec) -> Any:
    """The sft runner's data as its trainer sees it (runners/plan/sft_lengths.py); None for other runners."""
    if spec.runner != "sft":
        return None
    from runners.plan import sft_lengths

    return sft_lengths.for_spec(spec)


def sentence_loss(spec: RunSpec) -> dict[str, str] | None:
    """The sentence-transformers loss the runner will choose from the data's columns (the same function)."""
    if spec.runner != "sentence_transformers":
        return None
    from runners.plan import st_losses

    override = spec.runner_args.get("loss")
    if count_rows(spec.dataset.train) is None:  # no local file to look at: only an override can be told
        return {"name": override, "reason": "set in runner_args.loss"} if override else None
    from runners import data

    head = data.load_table(spec.dataset.train, nrows=200)
    roles = data.detect_columns(head, spec.dataset, "embedding", spec.dataset.train)
    label = st_losses.normalise_roles(roles).get("label")
    name, reason = st_losses.choose_loss(roles, override, head[label].tolist() if label else None)
    return {"name": name, "reason": reason}


PLAN_FILE = "plan.json"


def write_run_plan(spec: RunSpec, run_dir: Path) -> dict[str, Any] | None:
    """``plan.json`` in a new run dir: the planned step time, wall time and peak memory the monitor shows
    against the run's own figures. Best effort: a run the planner cannot estimate has no plan.json."""
    try:
        data = make_plan(spec).to_json()
    except Exception:  # noqa: BLE001 - planning must never stop a launch (preflight already checked the spec)
        return None
    t = data.get("time") or {}
    record = {"created_at": time.time(), "gpu": t.get("gpu"), "time_source": t.get("source"),
              "step_s": (t.get("step_s") or {}).get("value"), "step_s_band": [(t.get("step_s") or {}).get("low"),
                                                                             (t.get("step_s") or {}).get("high")],
              "wall_s": (t.get("wall_s") or {}).get("value"), "tokens_per_s": (t.get("tokens_per_s") or {}).get("value"),
              "total_steps": (data.get("cadence") or {}).get("total_steps"), "time_note": data.get("time_note"),
              "peak_allocated_bytes": data["peak_allocated_bytes"], "device_used_bytes": data["device_used_bytes"],
              "host_ram_bytes": data["host_ram_bytes"], "fits": data["fits"], "strategy": data["strategy"]}
    (run_dir / PLAN_FILE).write_text(json.dumps(record, indent=1) + "\n")
    return record
