"""One saved model of a run, loaded for use: ``ftui try`` and ``ftui eval`` (their child processes only).

Which folder: :func:`runners.results.checkpoints.select` (best, latest, final, a step) or a path. How it loads
follows the runner that saved it: a sentence-transformers model as a ``SentenceTransformer``; a full model with
the Auto class of the run's task; a LoRA adapter on its base rebuilt exactly as ``ftui export --merge`` does
(runners/results/merge.py: the base the run saved, else the spec's, with the runner's labels), through peft.
With CUDA the model goes to the GPUs with ``device_map="auto"`` (spread over several when it does not fit one)
in the run's dtype; without, to the CPU in float32, and the notes say so. torch, transformers, peft and
sentence-transformers are imported inside its functions, so a command may import it for :func:`choose` (the checks
before a worker starts) without loading them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runners import rundir
from runners import spec as specmod
from runners.errors import UserError
from runners.results import merge as mergemod
from runners.results.checkpoints import Checkpoint, kind_of, problem, select
from runners.spec import RunSpec

GENERATIVE = ("causal-lm", "seq2seq")


@dataclass
class Loaded:
    model: Any
    tokenizer: Any                 # None for a SentenceTransformer (it tokenizes itself)
    spec: RunSpec
    task: str                      # seq-cls, causal-lm, seq2seq, embedding, ...
    runner: str
    checkpoint: Checkpoint
    device: str                    # "cpu", "cuda:0", or "cuda:0,1 (device_map=auto)"
    labels: list[str] = field(default_factory=list)  # seq-cls: id -> name
    chat: bool = False             # the tokenizer has a chat template (sft and chat models)
    notes: list[str] = field(default_factory=list)

    def facts(self) -> dict[str, Any]:
        """What the worker reports once loaded (JSON-able)."""
        return {"task": self.task, "runner": self.runner, "checkpoint": self.checkpoint.name,
                "path": str(self.checkpoint.path), "why": self.checkpoint.why, "kind": self.checkpoint.kind,
                "step": self.checkpoint.step, "device": self.device, "labels": self.labels, "chat": self.chat,
                "notes": list(self.notes)}


def run_spec(run_dir: Path) -> RunSpec:
    try:
        return specmod.load(run_dir / rundir.SPEC_FILE)
    except (OSError, UserError) as exc:
        raise UserError(f"Run {run_dir.name} has no readable spec.yaml ({exc}); ftui needs it to know the run's task "
                        "and base model.") from exc


def choose(run_dir: Path, which: str | None, notes: list[str] | None = None) -> Checkpoint:
    """The checkpoint to load: a folder path, or a name :func:`select` knows (``latest`` is the last complete
    checkpoint). By default a running run's latest save (never the files being written) and an ended run's best."""
    notes = notes if notes is not None else []
    if which and ("/" in which or which.startswith(".")) and not which.strip().isdigit():
        path = Path(which).expanduser()
        if not path.is_dir():
            raise UserError(f"--checkpoint {which}: no such folder. Pass a checkpoint folder, or best, latest, final "
                            "or a step number.")
        trouble = problem(path)
        if trouble:
            raise UserError(f"--checkpoint {which} cannot be loaded: {trouble}.")
        kind = kind_of(path)
        assert kind is not None
        return Checkpoint(path.name, path, kind, None, "the folder asked for")
    if which is None and (rundir.read_status(run_dir) or {}).get("state") in ("running", "pending"):
        which = "last"
        notes.append("the run is still training: its latest saved checkpoint is loaded (training is not touched)")
    return select(run_dir, "last" if which and which.strip().lower() == "latest" else which, notes, purpose="load")


def _device() -> tuple[str, dict[str, Any]]:
    import torch

    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        shown = "cuda:0" if count == 1 else f"cuda:0-{count - 1} (device_map=auto)"
        return shown, {"device_map": "auto"}
    return "cpu", {}


def _dtype(spec: RunSpec, device: str) -> Any:
    import torch

    if device == "cpu" or spec.model.torch_dtype in ("auto", "float32"):
        return torch.float32 if device == "cpu" else "auto"
    return getattr(torch, spec.model.torch_dtype)


def _tokenizer(ckpt: Checkpoint, spec: RunSpec) -> Any:
    from transformers import AutoTokenizer

    from runners.plan.models import load_tokenizer

    if (ckpt.path / "tokenizer_config.json").is_file():
        tokenizer = AutoTokenizer.from_pretrained(str(ckpt.path))
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        return tokenizer
    return load_tokenizer(spec)


def _auto_class(task: str) -> Any:
    import transformers

    if task not in mergemod.AUTO_CLASSES:
        raise UserError(f"ftui cannot load a '{task}' model for use yet: it loads {', '.join(mergemod.AUTO_CLASSES)} "
                        "and embedding models.")
    return getattr(transformers, mergemod.AUTO_CLASSES[task])


def _full(ckpt: Checkpoint, spec: RunSpec, device: str, place: dict[str, Any]) -> Any:
    return _auto_class(spec.task).from_pretrained(str(ckpt.path), dtype=_dtype(spec, device), **place)


def _adapter(ckpt: Checkpoint, run_dir: Path, spec: RunSpec, device: str, place: dict[str, Any],
             tokenizer: Any, notes: list[str]) -> Any:
    from peft import PeftModel

    base, origin = mergemod.base_for(run_dir, spec)
    kwargs = {} if mergemod.saved_base(run_dir) is not None else mergemod.head_kwargs(spec, ckpt.path, notes)
    try:
        model = _auto_class(spec.task).from_pretrained(base, dtype=_dtype(spec, device), **kwargs, **place)
    except (OSError, ValueError) as exc:
        raise UserError(f"Cannot load the base model '{base}' ({origin}) under the adapter: "
                        f"{str(exc).splitlines()[0]}. It must be a local folder, in the Hugging Face cache, or "
                        "reachable on the hub (set HF_TOKEN for a gated model).") from exc
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    notes.append(f"LoRA adapter {ckpt.name} on its base ({origin})")
    return PeftModel.from_pretrained(model, str(ckpt.path))


def load(run_dir: Path, which: str | None = None) -> Loaded:
    """The model ``which`` names, ready for inference (eval mode, no grad needed)."""
    import warnings

    notes: list[str] = []
    spec = run_spec(run_dir)
    ckpt = choose(run_dir, which, notes)
    device, place = _device()
    if device == "cpu":
        notes.append("no GPU: running on the CPU in float32")
    with warnings.catch_warnings(), mergemod._quiet():
        warnings.simplefilter("ignore")
        if spec.runner == "sentence_transformers" or spec.task == "embedding":
            from sentence_transformers import SentenceTransformer

            model = SentenceTransformer(str(ckpt.path), device="cuda" if device != "cpu" else "cpu")
            return Loaded(model.eval(), None, spec, "embedding", spec.runner, ckpt, device, notes=notes)
        tokenizer = _tokenizer(ckpt, spec)
        if ckpt.kind == "adapter":
            model = _adapter(ckpt, run_dir, spec, device, place, tokenizer, notes)
        else:
            model = _full(ckpt, spec, device, place)
        if device == "cpu":
            model = model.to("cpu")
    config = model.config
    labels = [str(config.id2label[i]) for i in sorted(config.id2label)] if spec.task == "seq-cls" else []
    chat = bool(getattr(tokenizer, "chat_template", None)) and spec.task == "causal-lm"
    return Loaded(model.eval(), tokenizer, spec, spec.task, spec.runner, ckpt, device, labels, chat, notes)


def input_device(loaded: Loaded) -> Any:
    """Where the inputs go: the device of the model's first parameter (the embedding, with device_map=auto)."""
    return next(loaded.model.parameters()).device
