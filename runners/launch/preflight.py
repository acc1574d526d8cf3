"""Checks that catch, before a run dir exists, what would otherwise crash a run in its first minute.

:func:`check_all` is the entry point; it calls these in order of cost:

- :func:`check_hardware`: plans that cannot work (8 processes with strategy ``single``, more processes than GPUs);
- :func:`check_quantization`: a 4/8-bit base where bitsandbytes cannot run (no CUDA, strategy cpu, no package);
- :func:`check_runs_dir`: the runs dir can take a new run (not read-only, not full);
- :func:`check_model`: the weights can be obtained (a local dir, the Hugging Face cache, or a reachable hub),
  or the spec says ``model.init: random`` and the config can be read;
- :func:`check_lora`: ``model.lora`` on a runner that trains adapters, with target names the model has;
- :func:`check_sequence`: ``dataset.max_seq_length`` against the model's positions;
- the whole dataset (:func:`runners.data.preflight`);
- :func:`check_tokenizer`: the runner's tokenizer loads and turns the first rows into ids the model can embed.

Every refusal is a :class:`UserError` (exit 2) naming the input and the fix; warnings go to stderr as
``ftui: warning: ...``. Nothing here imports torch; only :func:`check_tokenizer` imports transformers.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from runners.errors import UserError
from runners.launch import commands
from runners.spec import RunSpec

# local weight files transformers loads (sharded checkpoints come with an index)
WEIGHT_GLOBS = ("*.safetensors.index.json", "pytorch_model.bin.index.json", "*.safetensors", "pytorch_model*.bin")
HUB_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
HUB_TIMEOUT_S = 5.0
# position handling per family: learned tables crash past their size; rotary models run (and extrapolate)
LEARNED_POSITIONS = {"bert", "roberta", "xlm-roberta", "camembert", "distilbert", "gpt2", "electra", "albert", "bart",
                     "mbart", "opt", "gpt_neo", "mpnet", "xlm", "ernie", "data2vec-text", "megatron-bert"}
POSITION_PADDING = {"roberta": 2, "xlm-roberta": 2, "camembert": 2, "data2vec-text": 2, "mpnet": 2}  # padding offset
RELATIVE_POSITIONS = {"t5", "mt5", "umt5", "longt5", "deberta", "deberta-v2", "transfo-xl"}
ROTARY = {"llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "gemma", "gemma2", "gemma3",
          "gemma3_text", "phi", "phi3", "gpt_neox", "gptj", "falcon", "olmo", "olmo2", "stablelm", "starcoder2", "cohere"}
MAX_SEQ_ABSURD = 1 << 20  # one sequence of over a million tokens: ftui has no context parallelism
PROBE_BYTES = 64 << 10
LOW_SPACE = 100 << 20


def warn(text: str) -> None:
    print(f"ftui: warning: {text}", file=sys.stderr)


def _offline() -> bool:
    return any(os.environ.get(k, "").lower() in ("1", "true", "yes", "on") for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _visible_gpus() -> int:
    """GPUs this process could use (0 without NVML): read through NVML, never torch."""
    if os.environ.get("CUDA_VISIBLE_DEVICES") is not None and not os.environ["CUDA_VISIBLE_DEVICES"].strip():
        return 0
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            count = int(pynvml.nvmlDeviceGetCount())
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001 - no driver, no library: no GPU
        return 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return min(count, len([v for v in visible.split(",") if v.strip()])) if visible else count


# -- hardware ---------------------------------------------------------------------------------------------------
def check_hardware(spec: RunSpec) -> None:
    hw = spec.hardware
    if hw.strategy == "single" and hw.num_processes > 1:
        raise UserError(f"hardware.strategy single trains on one GPU in one process, but hardware.num_processes is "
                        f"{hw.num_processes}. Set num_processes to 1, or choose a multi-GPU strategy (ddp, zero2, "
                        "zero3, fsdp) for several GPUs.")
    if hw.gpus is not None and hw.strategy != "cpu":
        chosen = list(hw.gpus)
        if any(g < 0 for g in chosen) or len(set(chosen)) != len(chosen):
            raise UserError(f"hardware.gpus is {chosen}: GPU indices must be distinct and not negative (e.g. [0, 1]).")
        if len(chosen) < hw.num_processes:
            raise UserError(f"hardware.gpus names {len(chosen)} GPU(s) ({chosen}) but hardware.num_processes is "
                            f"{hw.num_processes}, one process per GPU. Name {hw.num_processes} GPUs, or lower "
                            "num_processes.")
    gpus = _visible_gpus()
    if hw.strategy == "cpu" and gpus:
        warn(f"{gpus} GPU(s) are visible but hardware.strategy is cpu: the run trains on the CPU and leaves them idle "
             "(choose single, ddp, zero2, ... to use them).")
    elif hw.strategy != "cpu" and gpus and hw.num_processes > gpus:
        raise UserError(f"hardware.num_processes is {hw.num_processes} but this machine shows {gpus} GPU(s) "
                        f"(strategy {hw.strategy} runs one process per GPU). Set num_processes to at most {gpus}, or "
                        "make more GPUs visible (CUDA_VISIBLE_DEVICES).")


# -- LoRA and quantization --------------------------------------------------------------------------------------
LORA_RUNNERS = ("hf_trainer", "sft")


def check_quantization(spec: RunSpec) -> None:
    """A 4/8-bit base needs bitsandbytes on a CUDA GPU: refused before anything is created where it cannot run
    (strategy, platform, the package, NVML's GPUs, a CUDA build of torch), without importing torch."""
    from runners import peft_rules

    if peft_rules.quant_bits(spec.model) is None:
        return
    facts = (spec.model, spec.hardware.strategy, sys.platform, importlib.util.find_spec("bitsandbytes") is not None,
             _visible_gpus() if spec.hardware.strategy != "cpu" else 0)
    problem = peft_rules.quantization_refusal(*facts, torch_cuda=_torch_cuda_build())
    if problem:
        raise UserError(problem)


def _torch_cuda_build() -> bool | None:
    """Whether the installed torch is built with CUDA, read from its version.py without importing it (None when
    that cannot be read: not refused here; the runner asks torch itself)."""
    import re

    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.origin:
        return False
    try:
        text = (Path(spec.origin).parent / "version.py").read_text()
    except OSError:
        return None
    match = re.search(r"^cuda\s*(?::[^=\n]*)?=\s*(.+)$", text, re.M)
    return None if match is None else match.group(1).strip() != "None"


def check_lora(spec: RunSpec, resolved: Any) -> None:
    """model.lora: a runner that trains adapters, and target names the model has (the error lists its own)."""
    from runners.plan import architecture

    lora = spec.model.lora
    if lora is None:
        return
    if spec.runner not in LORA_RUNNERS:
        raise UserError(f"model.lora trains adapters with the hf_trainer runner, but runner is {spec.runner}, which "
                        "trains the whole model. Remove model.lora, or use runner: hf_trainer.")
    architecture.lora_params(resolved.arch, lora.r, lora.target_modules, spec.task, tuple(lora.modules_to_save or ()),
                             lora.use_dora)


# -- runs dir ---------------------------------------------------------------------------------------------------
def check_runs_dir(runs_dir: Path) -> None:
    """The runs dir (or the folder it will be made in) takes a small file; nothing is left behind."""
    runs_dir = Path(runs_dir)
    where = runs_dir
    while not where.exists() and where != where.parent:
        where = where.parent
    fix = ("Choose a writable runs dir with --runs-dir or $FTUI_RUNS_DIR, or make this one writable (remount it "
           "read-write, fix its permissions, or free space).")
    if not where.is_dir():
        raise UserError(f"Runs dir '{runs_dir}': '{where}' is not a directory. {fix}")
    probe = where / f".ftui-probe-{os.getpid()}"
    try:
        with probe.open("wb") as fh:
            fh.write(b"\0" * PROBE_BYTES)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        raise UserError(f"Runs dir '{runs_dir}' cannot take a new run: writing in '{where}' fails "
                        f"({exc.strerror or exc}). {fix}") from exc
    finally:
        try:
            probe.unlink()
        except OSError:
            pass
    free = shutil.disk_usage(where).free
    if free < LOW_SPACE:
        warn(f"runs dir '{runs_dir}' has only {free / 2**20:.1f} MiB free: checkpoints may not fit.")


# -- model ------------------------------------------------------------------------------------------------------
def _hub_cache() -> Path:
    return Path(os.environ.get("HF_HUB_CACHE") or Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface")
                / "hub")


def _missing_shards(index_file: Path, exists: Any) -> list[str]:
    try:
        shards = sorted(set(json.loads(index_file.read_text()).get("weight_map", {}).values()))
    except (OSError, ValueError):
        return [f"{index_file.name} (unreadable)"]
    return [s for s in shards if not exists(s)]


def local_weights(path: Path) -> tuple[str | None, str]:
    """(the weight file found, or None; what was looked for) in a local model dir."""
    looked = f"{', '.join(WEIGHT_GLOBS)} in {path}"
    for pattern in WEIGHT_GLOBS:
        for hit in sorted(path.glob(pattern)):
            if hit.name.endswith(".index.json"):
                missing = _missing_shards(hit, lambda s: (path / s).is_file())
                if missing:
                    raise UserError(f"Model '{path}': {hit.name} lists weight shards that are not there "
                                    f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}): the download is "
                                    "incomplete. Download the missing shards, or set model.init: random to train from "
                                    "a random init.")
            return str(hit), looked
    return None, looked


def cached_weights(name: str) -> tuple[str | None, str]:
    """(a cached weight file, or None; what was looked for) in the Hugging Face cache: no network."""
    cache = _hub_cache()
    looked = f"{', '.join(HUB_WEIGHT_FILES)} of {name} in the Hugging Face cache {cache}"
    try:
        from huggingface_hub import try_to_load_from_cache

        for filename in HUB_WEIGHT_FILES:
            hit = try_to_load_from_cache(name, filename, cache_dir=cache)
            if isinstance(hit, str):
                if filename.endswith(".index.json"):
                    missing = _missing_shards(Path(hit), lambda s: isinstance(
                        try_to_load_from_cache(name, s, cache_dir=cache), str))
                    if missing:
                        continue
                return hit, looked
    except Exception:  # noqa: BLE001 - an id the cache cannot hold (bad characters): not cached
        pass
    return None, looked


def hub_weights(name: str) -> tuple[bool, str]:
    """(the hub lists weights for ``name``, what the hub said) within a short timeout."""
    if _offline():
        return False, "the hub is switched off here (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE is set)"
    try:
        from huggingface_hub import HfApi

        info = HfApi().model_info(name, timeout=HUB_TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001 - every failure is "no weights from the hub"; the kind says why
        kind = type(exc).__name__
        if "GatedRepo" in kind:
            return False, f"{name} is gated on the hub: accept its licence on huggingface.co and set HF_TOKEN"
        if "RepositoryNotFound" in kind:
            return False, f"the hub has no model {name} (or it is private: set HF_TOKEN)"
        return False, f"the hub is not reachable ({kind}: {str(exc)[:120]})"
    files = [s.rfilename for s in (info.siblings or [])]
    if any(f.endswith((".safetensors", ".bin")) or f.endswith(".index.json") for f in files):
        return True, "the hub has its weights"
    return False, f"the hub lists no PyTorch weights for {name} ({len(files)} files)"


def check_model(spec: RunSpec) -> Any:
    """Resolve the model's config and make sure the runner can build it; returns the resolved model."""
    from runners.plan import models

    name = spec.model.name_or_path
    resolved = models.resolve(name)
    if spec.model.init == "random":
        if resolved.source == "bundled":
            raise UserError(f"model.init is random, which builds '{name}' from its config, but the only config of it "
                            f"here is ftui's bundled copy (for planning), and the runner needs the model's own files "
                            f"(config and tokenizer). Download them (huggingface-cli download {name} --exclude "
                            "'*.safetensors' '*.bin'), or point model.name_or_path at a local dir with a config.json "
                            "and tokenizer files.")
        return resolved
    path = Path(name).expanduser()
    if path.is_dir():
        found, looked = local_weights(path)
        if found:
            return resolved
        raise UserError(f"Model '{name}' has no weights (model.init is pretrained): looked for {looked}. Fix: "
                        "download the weights into that folder (save_pretrained, or huggingface-cli download ... "
                        f"--local-dir {name}), or set model.init: random in the spec to train from a random init "
                        "built from its config.")
    found, looked = cached_weights(name)
    if found:
        return resolved
    ok, hub = hub_weights(name)
    if ok:
        return resolved
    raise UserError(f"Model '{name}' has no weights this machine can load (model.init is pretrained): not a local "
                    f"dir; looked for {looked}; {hub}. Fix: download the weights (huggingface-cli download {name}, on "
                    "a machine with the hub, into this cache or a local dir given as model.name_or_path), or set "
                    "model.init: random in the spec to train from a random init built from its config.")


# -- sequence length --------------------------------------------------------------------------------------------
def check_sequence(spec: RunSpec, resolved: Any) -> None:
    """max_seq_length against the model's positions: learned tables crash past their size (error); rotary
    models run past their trained context and degrade (warning)."""
    n = spec.dataset.max_seq_length
    if n > MAX_SEQ_ABSURD:
        raise UserError(f"dataset.max_seq_length is {n:,} tokens: no GPU holds the activations of one sequence that "
                        f"long and ftui has no context parallelism (the limit here is {MAX_SEQ_ABSURD:,}). Set it to "
                        "the length your texts need, at most the model's positions.")
    cfg = resolved.config
    text_cfg = cfg.get("text_config") if isinstance(cfg.get("text_config"), dict) else cfg
    family = str(text_cfg.get("model_type") or cfg.get("model_type") or "")
    positions = text_cfg.get("max_position_embeddings") or text_cfg.get("n_positions")
    if not positions or family in RELATIVE_POSITIONS:
        return
    usable = int(positions) - POSITION_PADDING.get(family, 0)
    if n <= usable:
        return
    rotary = family in ROTARY or any(k in text_cfg for k in ("rope_theta", "rope_scaling", "rope_parameters"))
    if family in LEARNED_POSITIONS and not rotary:
        raise UserError(f"dataset.max_seq_length is {n:,}, but {spec.model.name_or_path} ({family}) has learned "
                        f"position embeddings for {usable:,} tokens: a longer sequence fails in the embedding lookup "
                        f"(index out of range). Set dataset.max_seq_length to at most {usable:,}.")
    warn(f"dataset.max_seq_length {n:,} is above the {usable:,} positions {spec.model.name_or_path} ({family or 'unknown'}) "
         f"was trained with: {'rotary positions run past them but quality degrades' if rotary else 'it may fail or degrade'}"
         " unless the model is meant to extrapolate (rope_scaling).")


# -- tokenizer --------------------------------------------------------------------------------------------------
def check_tokenizer(spec: RunSpec, resolved: Any, texts: list[str]) -> None:
    """Load the tokenizer exactly as the runner does and encode the first texts."""
    from runners.plan.models import load_tokenizer

    source = spec.model.tokenizer or spec.model.name_or_path
    fix = (f"Put the tokenizer files that match the model in '{source}' (tokenizer.json, or vocab.txt / vocab.json + "
           "merges.txt with a tokenizer_config.json naming the class), or point model.tokenizer at a folder or hub "
           "id with a working tokenizer.")
    try:
        import contextlib
        import io

        with contextlib.redirect_stderr(io.StringIO()):
            tokenizer = load_tokenizer(spec)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - any load failure is the same user-facing problem
        raise UserError(f"The tokenizer of '{source}' does not load ({type(exc).__name__}: {str(exc)[:300]}). {fix}") from exc
    kind = type(tokenizer).__name__
    texts = [t for t in texts if isinstance(t, str) and t.strip()][:8]
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
    size = len(tokenizer)
    if size <= len(set(tokenizer.all_special_tokens)) or (texts and not any(ids)):
        sample = f" ({texts[0][:40]!r} gives {ids[0]})" if texts else ""
        raise UserError(f"The tokenizer of '{source}' ({kind}) has {size} token(s) and turns the first rows of "
                        f"'{spec.dataset.train}' into no ids{sample}: the run would crash at step 0 (\"cannot reshape "
                        "tensor of 0 elements\"). Its tokenizer files probably do not match its config (model_type "
                        f"{resolved.config.get('model_type')!r}). {fix}")
    empty = [t for t, i in zip(texts, ids) if not i]
    if empty:
        warn(f"the tokenizer of '{source}' turns {len(empty)} of the first {len(texts)} texts into no ids "
             f"(e.g. {empty[0][:40]!r}).")
    if tokenizer.pad_token is None:
        raise UserError(f"The tokenizer of '{source}' ({kind}) has no pad, eos or unk token, so batches cannot be "
                        f"padded. Add a pad token to its tokenizer_config.json (\"pad_token\"). {fix}")
    vocab = (resolved.config.get("text_config") or {}).get("vocab_size") or resolved.config.get("vocab_size")
    full = tokenizer(texts)["input_ids"] if texts else []
    top = max((max(i) for i in full if i), default=-1)
    if vocab and top >= int(vocab):
        raise UserError(f"The tokenizer of '{source}' ({kind}, {size} tokens) gives id {top} on the first rows, but "
                        f"the model's config has vocab_size {vocab}: the embedding lookup would fail (index out of "
                        f"range). Use the model's own tokenizer, or (with model.init: random) set vocab_size to at "
                        f"least {size} in its config.json.")


def check_all(spec: RunSpec) -> None:
    """Every check that needs no run dir: model, data, cadence (the real TrainingArguments), launcher."""
    from runners import data
    from runners.plan import planner

    if not spec.model.name_or_path:
        raise UserError("The spec has no model.name_or_path: give a hub id or a local model directory.")
    if spec.runner == "simpletransformers" and spec.hardware.num_processes > 1:
        raise UserError(f"The simpletransformers runner trains in one process (it spreads over GPUs itself with n_gpu), "
                        f"but hardware.num_processes is {spec.hardware.num_processes}. Set it to 1, or use the "
                        "hf_trainer runner for multi-process training.")
    if spec.runner == "simpletransformers" and spec.hardware.nodes > 1:
        raise UserError(f"The simpletransformers runner trains on one machine, but hardware.nodes is "
                        f"{spec.hardware.nodes}. Set it to 1, or use the hf_trainer runner for multi-node training.")
    check_hardware(spec)
    check_quantization(spec)
    resolved = check_model(spec)
    planner.check_task(spec, resolved)  # before the data is read: seq2seq on a decoder-only model
    check_lora(spec, resolved)
    check_sequence(spec, resolved)
    roles = data.preflight(spec)
    check_tokenizer(spec, resolved, [str(t) for t in data.load_table(
        spec.dataset.train, spec.dataset.hub_config, nrows=20)[roles.get("text") or next(iter(roles.values()))].tolist()])
    cad = planner.make_plan(spec, gpu_memory_gib=80, validate=True).cadence
    if cad is not None and cad.validated is False:
        raise UserError(f"transformers refuses the training arguments: {cad.validation_error}")
    if commands.choose_launcher(spec) != "python":
        commands.find_program(commands.choose_launcher(spec))
