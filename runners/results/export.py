"""``ftui export``: one saved model of a run, as a folder that ``from_pretrained`` loads (docs/export.md).

A LoRA checkpoint exports as its adapter (``adapter_config.json``, ``adapter_model.safetensors``, the
tokenizer), for ``PeftModel.from_pretrained`` / ``AutoPeftModel*``; with ``merge`` as the base with the
adapter merged in (runners/results/merge.py), for plain ``AutoModelFor*.from_pretrained``. A full fine-tune
exports its model folder (merging is then a no-op). Every export also holds ``ftui_export.json`` (run,
checkpoint, base model, how to load) and a short ``README.md``; the Trainer's resume state (optimizer,
scheduler, RNG, trainer_state.json) stays behind. The export is written into a temp folder beside the
target and renamed into place, so a failure leaves nothing half-written; an existing non-empty target is
refused unless ``force``, and a target that holds or sits inside the checkpoint always is.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from runners import peft_rules, rundir
from runners import spec as specmod
from runners.errors import UserError
from runners.results import merge as mergemod
from runners.results.checkpoints import ADAPTER_CONFIG, ADAPTER_WEIGHTS, Checkpoint, select

EXPORT_DIR = "export"
META_FILE = "ftui_export.json"
# the Trainer's resume state and peft's model card: never part of an export
LEFT_BEHIND = {"optimizer.pt", "optimizer.bin", "scheduler.pt", "scaler.pt", "trainer_state.json", "training_args.bin",
               "README.md", "zero_to_fp32.py", "latest", "runs"}


@dataclass
class Export:
    path: Path
    kind: str            # adapter, merged, full
    checkpoint: Checkpoint
    load: str            # a one-line how-to-load
    size: int = 0
    files: int = 0
    notes: list[str] = field(default_factory=list)


def _left_behind(name: str) -> bool:
    return name in LEFT_BEHIND or name.startswith(("rng_state", "global_step")) or name.endswith(".tmp")


def default_target(run_dir: Path, ckpt: Checkpoint, merged: bool) -> Path:
    return run_dir / EXPORT_DIR / (ckpt.name + ("-merged" if merged else ""))


def check_target(target: Path, ckpt: Checkpoint, run_dir: Path, force: bool) -> None:
    """Refuse a target that would overwrite something: before any work is done."""
    t, source = target.resolve(), ckpt.path.resolve()
    if t == source or t in source.parents:
        raise UserError(f"Export target {target} holds the checkpoint being exported ({source}); replacing it would "
                        "delete the checkpoint. Pass --to a folder outside the run's output/.")
    if source in t.parents:
        raise UserError(f"Export target {target} is inside the checkpoint being exported ({source}). Pass --to a "
                        f"folder outside it (the default is {run_dir / EXPORT_DIR}/{ckpt.name}).")
    if t.exists() and not t.is_dir():
        raise UserError(f"Export target {target} is a file, not a folder; nothing was written. Pass --to a folder "
                        "path (it is created), or remove the file.")
    if t.is_dir() and any(t.iterdir()) and not force:
        raise UserError(f"Export target {target} already exists and is not empty; nothing was written and it is left "
                        "as it was. Pass --force to replace it, or --to another folder.")


def _copy_model_files(source: Path, out: Path) -> None:
    """Everything in a saved folder but the resume state, without overwriting what ``out`` already has."""
    for item in sorted(source.iterdir()):
        dest = out / item.name
        if _left_behind(item.name) or dest.exists():
            continue
        if item.is_dir():
            shutil.copytree(item, dest)
        else:
            shutil.copy2(item, dest)


def _ensure_tokenizer(out: Path, spec: specmod.RunSpec) -> None:
    if not (out / "tokenizer_config.json").is_file():  # a checkpoint saved without its processing_class
        from runners.plan.models import load_tokenizer

        load_tokenizer(spec).save_pretrained(str(out))


def _adapter(ckpt: Checkpoint, run_dir: Path, spec: specmod.RunSpec, out: Path, notes: list[str]) -> dict[str, Any]:
    _copy_model_files(ckpt.path, out)
    _ensure_tokenizer(out, spec)
    config = json.loads((out / ADAPTER_CONFIG).read_text())
    saved = mergemod.saved_base(run_dir)
    if saved is not None:
        base = str(saved)
    elif spec.model.init == "random":
        base = config.get("base_model_name_or_path") or spec.model.name_or_path
        notes.append(f"warning: the adapter was trained on a random init of {spec.model.name_or_path} (model.init: random) "
                     "that the run did not save: it fits only that lost init, so loading it onto any base gives another "
                     "model. Train on pretrained weights to get a reusable adapter.")
    else:
        base = spec.model.name_or_path
    if config.get("base_model_name_or_path") != base:
        config["base_model_name_or_path"] = base  # what AutoPeftModel loads under the adapter
        (out / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    facts: dict[str, Any] = {"base_model": base, "lora": {k: config.get(k) for k in ("r", "lora_alpha", "target_modules")}}
    if spec.task == "seq-cls" and saved is None:
        size = mergemod.head_size(out)
        if size is not None:
            facts["num_labels"] = size
    return facts


def _full(ckpt: Checkpoint, spec: specmod.RunSpec, out: Path) -> dict[str, Any]:
    _copy_model_files(ckpt.path, out)
    if not (out / "modules.json").is_file():  # sentence-transformers folders carry their own tokenizer layout
        _ensure_tokenizer(out, spec)
    return {"base_model": spec.model.name_or_path}


def load_hint(kind: str, task: str, path: Path, facts: dict[str, Any], folder: Path | None = None) -> str:
    """The one line that loads the export at ``path`` (``folder``: where its files are now, if not there yet)."""
    where = repr(str(path))
    if kind == "adapter":
        cls = mergemod.PEFT_CLASSES.get(task, "AutoPeftModel")
        labels = f", num_labels={facts['num_labels']}" if "num_labels" in facts else ""
        return f"from peft import {cls}; model = {cls}.from_pretrained({where}{labels})"
    if ((folder or path) / "modules.json").is_file():
        return f"from sentence_transformers import SentenceTransformer; model = SentenceTransformer({where})"
    cls = str(facts.get("auto_class") or mergemod.AUTO_CLASSES.get(task, "AutoModel"))
    return f"from transformers import {cls}; model = {cls}.from_pretrained({where})"


def _describe(folder: Path, result: Export, run_dir: Path, spec: specmod.RunSpec, facts: dict[str, Any]) -> None:
    ckpt = result.checkpoint
    meta = {"format": 1, "kind": result.kind, "run": run_dir.name, "run_dir": str(run_dir), "checkpoint": ckpt.name,
            "step": ckpt.step, "chosen": ckpt.why, "source": str(ckpt.path), "task": spec.task,
            "base_init": spec.model.init, "load": result.load, "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "notes": result.notes, **facts}
    if spec.model.lora is not None:
        meta.setdefault("lora_spec", asdict(spec.model.lora))
    (folder / META_FILE).write_text(json.dumps(meta, indent=1, default=str) + "\n")
    what = {"adapter": "a LoRA adapter", "merged": "the base model with the LoRA adapter merged in",
            "full": "a fully fine-tuned model"}[result.kind]
    (folder / "README.md").write_text(
        f"# {run_dir.name}: {ckpt.name}\n\n{what[0].upper() + what[1:]}, exported by `ftui export` from run `{run_dir.name}` "
        f"({ckpt.why}).\n\n- task: {spec.task}\n- base model: {facts.get('base_model')} (model.init: {spec.model.init})\n"
        f"- step: {ckpt.step if ckpt.step is not None else 'end of training'}\n\n"
        f"Load it with:\n\n```python\n{result.load}\n```\n")


def _publish(tmp: Path, target: Path) -> None:
    """Rename the finished export into place; a target that exists (empty, or --force) is swapped out whole."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{secrets.token_hex(3)}")
        os.rename(target, old)
    try:
        os.rename(tmp, target)
    except OSError:
        if old is not None:
            os.rename(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _size(path: Path) -> tuple[int, int]:
    files = [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files), len(files)


def export(run_dir: Path, which: str | None = None, merge: bool = False, to: str | Path | None = None,
           force: bool = False) -> Export:
    """Export one saved model of ``run_dir`` (see the module doc); every bad input is a UserError before any write."""
    spec_file = run_dir / rundir.SPEC_FILE
    if not spec_file.is_file():
        raise UserError(f"Run {run_dir.name} has no {rundir.SPEC_FILE}, so its base model is unknown. Export a run that "
                        "ftui launched (ftui runs lists them).")
    spec = specmod.load(spec_file)
    notes: list[str] = []
    ckpt = select(run_dir, which, notes)
    merged = merge and ckpt.kind == "adapter"
    if merge and not merged:
        notes.append(f"nothing to merge: {ckpt.name} is a full model (the run fine-tuned every weight), exported as it is")
    if merged:
        mergemod.base_for(run_dir, spec)  # refuses a base that cannot be rebuilt, before any write
        bits = peft_rules.quant_bits(spec.model)
        if bits:
            notes.append(f"warning: the adapter was trained on a {bits}-bit quantized base; the merge loads the base "
                         "unquantized (float32, saved in model.torch_dtype) and merges there, so its outputs differ "
                         f"slightly from the {bits}-bit base + adapter the run trained and evaluated. For the exact trained "
                         f"model export without --merge and load the base with BitsAndBytesConfig(load_in_{bits}bit=True); "
                         "to run the merged model quantized, load it with that quantization_config.")
    target = Path(to).expanduser().absolute() if to else default_target(run_dir, ckpt, merged)
    check_target(target, ckpt, run_dir, force)
    kind = "merged" if merged else ckpt.kind
    made = [p for p in [target.parent, *target.parent.parents] if not p.exists()]  # removed again on failure
    tmp = Path()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; an export is an ordinary folder
        if merged:
            facts = mergemod.merge(ckpt, run_dir, spec, tmp, notes)
            _copy_model_files(ckpt.path, tmp)  # the tokenizer; the adapter files stay out
            for name in (ADAPTER_CONFIG, *ADAPTER_WEIGHTS):
                (tmp / name).unlink(missing_ok=True)
            _ensure_tokenizer(tmp, spec)
        elif ckpt.kind == "adapter":
            facts = _adapter(ckpt, run_dir, spec, tmp, notes)
        else:
            facts = _full(ckpt, spec, tmp)
        result = Export(target, kind, ckpt, load_hint(kind, spec.task, target, facts, tmp), notes=notes)
        _describe(tmp, result, run_dir, spec, facts)
        _publish(tmp, target)
    except OSError as exc:
        raise UserError(f"Writing the export to {target} failed: {exc}. Nothing was written there (the partial copy "
                        "was removed); free some space or pass --to another folder.") from exc
    finally:
        if tmp.name:
            shutil.rmtree(tmp, ignore_errors=True)
        for path in made:
            if path.is_dir() and not any(path.iterdir()):
                path.rmdir()
    result.size, result.files = _size(target)
    return result
