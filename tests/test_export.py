"""`ftui export`: a run's LoRA adapter, or the base with it merged in, as a folder from_pretrained loads.

The runs here are made the way a LoRA run of the HF Trainer leaves them: a real peft model on a tiny base,
saved with save_pretrained (plus the tokenizer and the Trainer's resume state) into RUN/output/checkpoint-N
and RUN/output/final, with the run's spec.yaml, status.json and checkpoint events. The adapters' weights
are set far from their identity init, so an export that dropped or mangled them cannot pass.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from runners import events as ev
from runners import rundir
from runners import spec as specmod
from runners.results import checkpoints
from tests.conftest import DEMO_MODEL, ROOT, ftui, only_run, tiny_spec
from tui import cli

LORA = {"seq-cls": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["query", "value"]},
        "causal-lm": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}}
INPUT = torch.randint(5, 90, (2, 12), generator=torch.Generator().manual_seed(0))


def _auto(task: str) -> Any:
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    return {"seq-cls": AutoModelForSequenceClassification, "causal-lm": AutoModelForCausalLM}[task]


@pytest.fixture(scope="module")
def bases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny pretrained bases on disk (config, weights, the demo tokenizer): a BERT classifier and a Llama LM."""
    from transformers import AutoConfig, AutoTokenizer, LlamaConfig

    root = tmp_path_factory.mktemp("bases")
    tokenizer = AutoTokenizer.from_pretrained(str(DEMO_MODEL))
    configs = {"seq-cls": AutoConfig.from_pretrained(str(DEMO_MODEL)),
               "causal-lm": LlamaConfig(vocab_size=90, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
                                        pad_token_id=0)}
    out = {}
    for task, config in configs.items():
        torch.manual_seed(1)
        path = root / task
        _auto(task).from_config(config).save_pretrained(str(path))
        tokenizer.save_pretrained(str(path))
        out[task] = path
    return out


def _peft_model(base: Path, task: str, seed: int) -> Any:
    """A LoRA model as the runner builds it, with its adapter (and head) moved far from the identity init."""
    from peft import LoraConfig, get_peft_model

    lora = LORA[task]
    config = LoraConfig(task_type={"seq-cls": "SEQ_CLS", "causal-lm": "CAUSAL_LM"}[task], r=lora["r"],
                        lora_alpha=lora["alpha"], lora_dropout=0.0, target_modules=lora["target_modules"])
    model = get_peft_model(_auto(task).from_pretrained(str(base)), config)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:  # the LoRA matrices and the classifier head (modules_to_save)
                param.copy_(torch.randn(param.shape, generator=gen) * 0.3)
    return model.eval()


def _logits(model: Any) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=INPUT, attention_mask=torch.ones_like(INPUT)).logits


def _save_like_trainer(model: Any, tokenizer_dir: Path, path: Path, step: int | None) -> None:
    """What Trainer._save_checkpoint leaves: the adapter, the tokenizer, the resume state, trainer_state.json last."""
    from transformers import AutoTokenizer

    model.save_pretrained(str(path))
    AutoTokenizer.from_pretrained(str(tokenizer_dir)).save_pretrained(str(path))
    torch.save({"args": "x"}, path / "training_args.bin")
    if step is not None:
        torch.save({"state": {}}, path / "optimizer.pt")
        torch.save({"rng": 1}, path / "rng_state.pth")
        (path / "trainer_state.json").write_text(json.dumps({"global_step": step, "best_metric": None}))


def make_run(runs: Path, base: Path, task: str = "seq-cls", steps: tuple[int, ...] = (2, 4, 6), best: int | None = 4,
             final: bool = True, **model: Any) -> tuple[Path, dict[str, Any]]:
    """A finished LoRA run dir; returns it and the in-memory peft model of each save (by folder name)."""
    spec = specmod.from_dict(tiny_spec(name="lora", task=task, model={"name_or_path": str(base), "init": "pretrained",
                                                                      "lora": LORA[task], **model}))
    run = rundir.create_run_dir(runs, "lora")
    specmod.save(spec, run / rundir.SPEC_FILE)
    models = {}
    with ev.EventWriter(run / ev.EVENTS_FILE) as writer:
        writer.emit(ev.START, world_size=1, total_steps=max(steps or (1,)), runner="hf_trainer", task=task)
        for step in steps:
            path = run / "output" / f"checkpoint-{step}"
            models[path.name] = _peft_model(base, task, seed=step)
            _save_like_trainer(models[path.name], base, path, step)
            writer.emit(ev.CHECKPOINT, step=step, path=str(path), metric="eval_accuracy", value=0.5 + step / 100,
                        is_best=step == best)
        if final:
            models["final"] = _peft_model(base, task, seed=99)
            _save_like_trainer(models["final"], base, run / "output" / "final", None)
        writer.emit(ev.FINISH, step=max(steps or (0,)), metrics={})
    rundir.update_status(run, state="finished", run_id=run.name, runner="hf_trainer", created_at=time.time(), exit_code=0)
    return run, models


def export(runs: Path, *args: str) -> int:
    return cli.main(["export", *args, "--runs-dir", str(runs)])


def _loaded_by_hint(out: str) -> Any:
    """Run the printed one-line how-to-load, as a user would paste it."""
    line = next(x for x in out.splitlines() if x.strip().startswith("load: ")).split("load: ", 1)[1]
    scope: dict[str, Any] = {}
    exec(line, scope)  # noqa: S102 - the line ftui printed for the user
    return scope["model"].eval()


def test_adapter_export_loads_with_peft_and_gives_the_in_memory_logits(tmp_path: Path, bases, capsys) -> None:
    runs = tmp_path / "runs"
    run, models = make_run(runs, bases["seq-cls"])
    assert export(runs, run.name) == 0
    out = capsys.readouterr().out
    target = run / "export" / "checkpoint-4"  # the default: the checkpoint the run marked best
    assert f"path: {target}" in out and "kind: LoRA adapter" in out and "best eval_accuracy" in out
    names = {p.name for p in target.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer_config.json", "ftui_export.json",
            "README.md"} <= names
    assert not names & {"optimizer.pt", "rng_state.pth", "trainer_state.json", "training_args.bin"}
    meta = json.loads((target / "ftui_export.json").read_text())
    assert meta["run"] == run.name and meta["kind"] == "adapter" and meta["base_model"] == str(bases["seq-cls"])
    assert meta["step"] == 4 and meta["num_labels"] == 2
    loaded = _loaded_by_hint(out)
    assert type(loaded).__name__.startswith("Peft")
    expected = _logits(models["checkpoint-4"])
    assert (expected - _logits(_auto("seq-cls").from_pretrained(str(bases["seq-cls"])).eval())).abs().max() > 0.1
    torch.testing.assert_close(_logits(loaded), expected, atol=1e-6, rtol=0)
    assert not list((run / "export").glob(".*")), "no temp folder left beside the export"


@pytest.mark.parametrize("task", ["seq-cls", "causal-lm"])
def test_merged_export_loads_without_peft_and_equals_base_plus_adapter(tmp_path: Path, bases, capsys, task: str) -> None:
    runs = tmp_path / "runs"
    run, models = make_run(runs, bases[task], task=task, steps=(3,), best=None)
    assert export(runs, run.name, "--merge", "--checkpoint", "3") == 0
    out = capsys.readouterr().out
    target = run / "export" / "checkpoint-3-merged"
    assert f"path: {target}" in out and "kind: full model (LoRA adapter merged" in out
    names = {p.name for p in target.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer_config.json", "ftui_export.json"} <= names
    assert not any(n.startswith("adapter_") for n in names)
    loaded = _loaded_by_hint(out)
    assert type(loaded).__name__ in ("BertForSequenceClassification", "LlamaForCausalLM")
    assert not any("lora" in k for k in loaded.state_dict())
    expected = _logits(models["checkpoint-3"])
    assert (expected - _logits(_auto(task).from_pretrained(str(bases[task])).eval())).abs().max() > 0.1
    torch.testing.assert_close(_logits(loaded), expected, atol=1e-4, rtol=0)
    if task == "seq-cls":
        assert loaded.config.id2label == {0: "0", 1: "1"}  # the labels the runner gave the model, from the data


def test_an_existing_target_is_refused_and_left_untouched_unless_forced(tmp_path: Path, bases, capsys) -> None:
    runs = tmp_path / "runs"
    run, _ = make_run(runs, bases["seq-cls"], steps=(2,), best=None, final=False)
    target = tmp_path / "mine"
    target.mkdir()
    (target / "keep.txt").write_text("precious")
    assert export(runs, run.name, "--to", str(target)) == 2
    err = capsys.readouterr().err
    assert str(target) in err and "--force" in err and "not empty" in err
    assert [p.name for p in target.iterdir()] == ["keep.txt"] and (target / "keep.txt").read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "runs"], "no temp folder left beside it"
    assert not (run / "export").exists()
    assert export(runs, run.name, "--to", str(target), "--force") == 0
    assert not (target / "keep.txt").exists() and (target / "adapter_model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "runs"]
    # a target holding the checkpoint (or inside it) is refused even with --force: it would delete the source
    for bad in (run / "output", run / "output" / "checkpoint-2" / "x"):
        assert export(runs, run.name, "--to", str(bad), "--force") == 2
        assert "Pass --to a folder" in capsys.readouterr().err
    assert checkpoints.kind_of(run / "output" / "checkpoint-2") == "adapter"


def test_unknown_run_is_exit_2_through_the_real_cli(tmp_path: Path) -> None:
    proc = ftui("export", "no-such-run", "--runs-dir", str(tmp_path), timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "No run matches 'no-such-run'" in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1


def test_bad_requests_are_exit_2_and_write_nothing(tmp_path: Path, bases, capsys) -> None:
    runs = tmp_path / "runs"
    empty, _ = make_run(runs, bases["seq-cls"], steps=(), best=None, final=False)
    assert export(runs, empty.name) == 2
    assert "nothing to export" in capsys.readouterr().err
    run, _ = make_run(runs, bases["seq-cls"], steps=(2,), best=None, final=False)
    for args, needle in ((["--checkpoint", "7"], "no checkpoint-7"), (["--checkpoint", "bets"], "not a checkpoint"),
                         (["--checkpoint", "best"], "marked no best")):
        assert export(runs, run.name, *args) == 2
        assert needle in capsys.readouterr().err
    for path in (empty, run):
        assert not (path / "export").exists()


def test_a_failure_mid_export_leaves_nothing_behind(tmp_path: Path, bases, capsys) -> None:
    """The merge fails after the export folder was started (the spec's base is not the adapter's): exit 2, the
    error names the adapter and the base, and neither the target, a temp folder nor RUN/export/ is left."""
    runs = tmp_path / "runs"
    run, _ = make_run(runs, bases["seq-cls"], steps=(2,), best=2, final=False)
    spec = specmod.load(run / rundir.SPEC_FILE)
    spec.model.name_or_path = str(bases["causal-lm"])  # a Llama base under a BERT adapter
    specmod.save(spec, run / rundir.SPEC_FILE)
    assert export(runs, run.name, "--merge") == 2
    err = capsys.readouterr().err
    assert "does not fit the base model" in err and str(bases["causal-lm"]) in err
    assert not (run / "export").exists()
    target = tmp_path / "out" / "deep"
    assert export(runs, run.name, "--merge", "--to", str(target)) == 2
    assert not (tmp_path / "out").exists(), "the folders made for the target are removed again"


def test_selection_best_last_final_and_a_step(tmp_path: Path, bases) -> None:
    runs = tmp_path / "runs"
    run, _ = make_run(runs, bases["seq-cls"], steps=(2, 4, 6), best=4)
    (run / "output" / "checkpoint-8").mkdir()  # a save cut short: no trainer_state.json
    shutil.copy(run / "output" / "checkpoint-6" / "adapter_config.json", run / "output" / "checkpoint-8")
    pick = {w: checkpoints.select(run, w).name for w in (None, "best", "last", "final", "2", "checkpoint-6")}
    assert pick == {None: "checkpoint-4", "best": "checkpoint-4", "last": "checkpoint-6", "final": "final",
                    "2": "checkpoint-2", "checkpoint-6": "checkpoint-6"}
    notes: list[str] = []
    assert checkpoints.select(run, "last", notes).step == 6 and "checkpoint-8" in notes[0]
    no_best, _ = make_run(runs, bases["seq-cls"], steps=(2, 4), best=None)
    assert checkpoints.select(no_best).name == "final"
    no_final, _ = make_run(runs, bases["seq-cls"], steps=(2, 4), best=None, final=False)
    assert checkpoints.select(no_final).name == "checkpoint-4"
    shutil.rmtree(run / "output" / "checkpoint-4")  # the best one gone: the default falls back to final, and says so
    notes = []
    assert checkpoints.select(run, None, notes).name == "final" and "checkpoint-4 is gone" in notes[0]


def test_the_exported_step_is_the_one_asked_for(tmp_path: Path, bases, capsys) -> None:
    runs = tmp_path / "runs"
    run, _ = make_run(runs, bases["seq-cls"], steps=(2, 4), best=4)
    for which, source in (("2", "checkpoint-2"), ("final", "final"), ("last", "checkpoint-4")):
        assert export(runs, run.name, "--checkpoint", which) == 0
        exported = run / "export" / source / "adapter_model.safetensors"
        assert exported.read_bytes() == (run / "output" / source / "adapter_model.safetensors").read_bytes()
    capsys.readouterr()


def test_a_random_init_run_merges_only_onto_the_base_it_saved(tmp_path: Path, bases, capsys) -> None:
    runs = tmp_path / "runs"
    run, models = make_run(runs, bases["seq-cls"], steps=(2,), best=2, final=False, init="random")
    assert export(runs, run.name, "--merge") == 2
    err = capsys.readouterr().err
    assert "model.init: random" in err and "output/base" in err and "without --merge" in err
    assert not (run / "export").exists()
    assert export(runs, run.name) == 0  # the adapter alone still exports, with a warning
    assert "warning" in capsys.readouterr().err
    shutil.copytree(bases["seq-cls"], run / "output" / "base")  # what the LoRA runner saves for a random init
    assert export(runs, run.name, "--merge") == 0
    out = capsys.readouterr().out
    torch.testing.assert_close(_logits(_loaded_by_hint(out)), _logits(models["checkpoint-2"]), atol=1e-4, rtol=0)
    meta = json.loads((run / "export" / "checkpoint-2-merged" / "ftui_export.json").read_text())
    assert meta["base_model"] == str(run / "output" / "base")


def test_a_4bit_run_merges_with_a_warning_and_a_full_run_exports_its_model(tmp_path: Path, bases, capsys) -> None:
    runs = tmp_path / "runs"
    run, models = make_run(runs, bases["seq-cls"], steps=(2,), best=None, final=False, load_in_4bit=True)
    assert export(runs, run.name, "--merge") == 0
    captured = capsys.readouterr()
    assert "4-bit" in captured.err and "BitsAndBytesConfig" in captured.err
    torch.testing.assert_close(_logits(_loaded_by_hint(captured.out)), _logits(models["checkpoint-2"]), atol=1e-4, rtol=0)

    full, _ = make_run(runs, bases["seq-cls"], steps=(), best=None, final=False)
    final = full / "output" / "final"
    shutil.copytree(bases["seq-cls"], final)  # a full fine-tune's final model
    assert export(runs, full.name, "--merge") == 0
    captured = capsys.readouterr()
    assert "nothing to merge" in captured.err and "kind: full model\n" in captured.out
    assert (full / "export" / "final" / "model.safetensors").read_bytes() == (final / "model.safetensors").read_bytes()
    reference = _auto("seq-cls").from_pretrained(str(final)).eval()
    torch.testing.assert_close(_logits(_loaded_by_hint(captured.out)), _logits(reference), atol=0, rtol=0)


def _logits_without_peft(model_dir: Path) -> torch.Tensor:
    """The logits of a model folder loaded by plain transformers in a process where peft cannot be imported."""
    script = ("import sys, json, torch; sys.modules['peft'] = None\n"
              "from transformers import AutoModelForSequenceClassification as A\n"
              f"m = A.from_pretrained({str(model_dir)!r}).eval(); x = torch.tensor({INPUT.tolist()})\n"
              "print(json.dumps(m(input_ids=x, attention_mask=torch.ones_like(x)).logits.tolist()))\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return torch.tensor(json.loads(proc.stdout.strip().splitlines()[-1]))


def test_a_lora_run_trained_by_ftui_run_exports_both_ways(tmp_path: Path, bases, capsys) -> None:
    """End to end: `ftui run` trains a LoRA seq-cls run on a pretrained base; its best checkpoint exports as an
    adapter (peft) and merged (plain transformers, in a process without peft), and the two give the same logits."""
    runs = tmp_path / "runs"
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec(model={"name_or_path": str(bases["seq-cls"]), "init": "pretrained",
                                                    "lora": {"r": 4, "alpha": 8, "dropout": 0.1}},
                                             dataset={"max_train_samples": 64, "max_eval_samples": 16},
                                             training={"learning_rate": 0.01}, cadence={"n_evals": 2, "n_saves": 2})))
    proc = ftui("run", str(spec), "--headless", "--runs-dir", str(runs))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    run = only_run(runs)
    best = checkpoints.history(run).best
    assert best, "the run marked a best checkpoint"
    assert export(runs, run.name) == 0
    out = capsys.readouterr().out
    adapter_dir = run / "export" / Path(best["checkpoint"]).name
    assert f"path: {adapter_dir}" in out and "kind: LoRA adapter" in out
    assert export(runs, run.name, "--merge") == 0
    merged_dir = adapter_dir.with_name(adapter_dir.name + "-merged")
    assert f"path: {merged_dir}" in capsys.readouterr().out
    with_adapter = _logits(_loaded_by_hint(out))
    base = _logits(_auto("seq-cls").from_pretrained(str(bases["seq-cls"])).eval())
    assert (with_adapter - base).abs().max() > 1e-3, "training moved the adapter and the head"
    torch.testing.assert_close(_logits_without_peft(merged_dir), with_adapter, atol=1e-4, rtol=0)
