"""Parameter-efficient runs: LoRA trains what the planner plans, through `ftui run`, with adapter checkpoints, best
marked, stop and resume; target names are checked against the model's own modules; a 4/8-bit base is refused
cleanly where bitsandbytes cannot run (this CPU machine).

Real parts throughout: the real Trainer and peft on tiny random-init models built from configs (no hub), the real
CLI in subprocesses. The one boundary that cannot exist here is CUDA for bitsandbytes, which is what is refused.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from runners import peft_rules
from runners import spec as specmod
from runners.errors import UserError
from runners.watch.history import RunHistory
from tests.conftest import DEMO_MODEL, ftui, only_run, records, tiny_model_dir, tiny_spec, wait_until

GPT2 = {"model_type": "gpt2", "vocab_size": 90, "n_embd": 32, "n_layer": 2, "n_head": 2, "n_positions": 64,
        "bos_token_id": 2, "eos_token_id": 3}
T5 = {"model_type": "t5", "vocab_size": 90, "d_model": 32, "d_kv": 16, "d_ff": 64, "num_layers": 1,
      "num_decoder_layers": 1, "num_heads": 2, "pad_token_id": 0, "eos_token_id": 3, "decoder_start_token_id": 0}
PHI3 = {"model_type": "phi3", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 4, "vocab_size": 90, "max_position_embeddings": 64,
        "pad_token_id": 0}
LORA = {"r": 4, "alpha": 8, "dropout": 0.1}


def _write(tmp_path: Path, name: str = "spec.yaml", **overrides: Any) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(tiny_spec(**overrides)))
    return path


def _of(recs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [r for r in recs if r["type"] == kind]


def _planned_trainable(spec_path: Path) -> int:
    """The plan's trainable parameter count, from the real planner CLI."""
    proc = ftui("--plan", str(spec_path), "--json", "--num_train_samples", "128", timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["model"]["trainable_params"]


def _tensors(path: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(path))


def test_rules_are_peft_s_own() -> None:
    """The copy of peft's defaults the planner reads (it cannot import peft) is the installed peft's."""
    from peft.utils import constants

    mapping = constants.TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
    assert {k: mapping[k] for k in peft_rules.DEFAULT_TARGETS} == peft_rules.DEFAULT_TARGETS
    assert set(peft_rules.SEQ_CLS_HEADS) == set(constants.SEQ_CLS_HEAD_NAMES)
    assert peft_rules.ALL_LINEAR == constants.INCLUDE_LINEAR_LAYERS_SHORTHAND
    # NF4 with double quantization: 4 bits + a uint8 absmax per 64 weights + a float32 per 256 absmax
    assert peft_rules.quantized_weight_bytes(4, 4096) == pytest.approx(0.5 + 1 / 64 + 4 / (64 * 256))


def test_seq_cls_stop_resume_adapter_checkpoints_and_best(tmp_path: Path) -> None:
    """Through `ftui run --detach`: the classifier head trains and is saved with the adapter, checkpoints hold the
    adapter only (small next to the model), the plan's trainable count is the run's, stop then resume continues from
    the adapter checkpoint, and the best checkpoint is marked as for a full run."""
    runs = tmp_path / "runs"
    spec = _write(tmp_path, model={"lora": LORA}, dataset={"max_train_samples": None},
                  training={"num_train_epochs": 3, "per_device_train_batch_size": 4},
                  cadence={"metric_for_best_model": "eval_loss"})
    proc = ftui("run", str(spec), "--detach", "--runs-dir", str(runs))
    assert proc.returncode == 0, proc.stderr
    run = only_run(runs)
    planned = _planned_trainable(spec)  # while the run trains
    wait_until(lambda: max([r["step"] for r in _of(records(run), "log")] or [0]) >= 4, what="training steps")
    stopped = ftui("stop", run.name, "--runs-dir", str(runs), "--wait", "120")
    assert stopped.returncode == 0 and "stopped" in stopped.stdout, stopped.stdout + stopped.stderr
    recs = records(run)
    start, stop = _of(recs, "start")[0], _of(recs, "stop")[0]
    assert start["trainable_params"] == planned == 4 * 2 * 2 * (64 + 64) + 64 * 2 + 2  # query, value x 2 + head
    assert start["total_params"] == 81_346 + planned  # the frozen base and its head, plus the trained copies
    ckpt = Path(_of(recs, "checkpoint")[-1]["path"])
    assert ckpt.name == f"checkpoint-{stop['step']}"
    assert {"adapter_model.safetensors", "adapter_config.json"} <= {p.name for p in ckpt.iterdir()}
    assert not list(ckpt.glob("model.safetensors"))
    adapter = (ckpt / "adapter_model.safetensors").stat().st_size
    assert adapter < 0.1 * 4 * start["total_params"], adapter  # a full checkpoint's fp32 weights: 4 B a parameter
    saved = _tensors(ckpt / "adapter_model.safetensors")
    assert {k for k in saved if "classifier" in k} == {"base_model.model.classifier.weight",
                                                         "base_model.model.classifier.bias"}
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in saved.items())  # B starts at zero: it trained

    resumed = ftui("resume", run.name, "--headless", "--runs-dir", str(runs), "--max_steps", str(stop["step"] + 6))
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    new = next(p for p in runs.iterdir() if p.is_dir() and p != run)
    recs = records(new)
    start = _of(recs, "start")[0]
    assert start["resumed_step"] == stop["step"] and start["trainable_params"] == planned
    assert _of(recs, "finish")[-1]["step"] == stop["step"] + 6
    history = RunHistory()
    history.apply(recs)
    best = history.snapshot()["best"]
    assert best and best["metric"] == "eval_loss" and Path(best["checkpoint"]).is_dir(), history.snapshot()
    state = json.loads((Path(best["checkpoint"]) / "trainer_state.json").read_text())
    assert state["best_model_checkpoint"] == best["checkpoint"]
    final = _tensors(new / "output" / "final" / "adapter_model.safetensors")
    at_best = _tensors(Path(best["checkpoint"]) / "adapter_model.safetensors")
    assert final.keys() == at_best.keys() and all((final[k] == at_best[k]).all() for k in final)  # best reloaded


def test_causal_lm_all_linear_through_ftui_run(tmp_path: Path) -> None:
    """GPT-2 (Conv1D layers), all-linear: every linear layer but the tied output head; plan and run agree."""
    from runners.plan.planner import make_plan

    model = tiny_model_dir(tmp_path, "gpt", GPT2)
    spec = _write(tmp_path, task="causal-lm", model={"name_or_path": str(model), "lora": {**LORA,
                  "target_modules": ["all-linear"]}}, dataset={"max_train_samples": 64, "max_eval_samples": 32},
                  training={"learning_rate": 0.01, "num_train_epochs": 2}, cadence={"n_evals": 4})
    proc = ftui("run", str(spec), "--headless", "--runs-dir", str(tmp_path / "runs"))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    recs = records(only_run(tmp_path / "runs"))
    per_layer = 4 * ((32 + 96) + (32 + 32) + (32 + 128) + (128 + 32))  # c_attn, attn.c_proj, c_fc, mlp.c_proj
    planned = make_plan(specmod.load(spec), num_train_samples=64).to_json()["model"]["trainable_params"]
    assert _of(recs, "start")[0]["trainable_params"] == planned == 2 * per_layer
    evals = [e["metrics"]["eval_loss"] for e in _of(recs, "eval")]
    assert evals[-1] < evals[0], evals  # the adapters learn through a frozen random base
    history = RunHistory()
    history.apply(recs)
    kept = [c for c in history.checkpoints if not c["removed"]]
    assert kept and all((Path(c["path"]) / "adapter_model.safetensors").is_file() for c in kept)
    assert history.best and history.best["metric"] == "eval_loss"


def test_seq2seq_lora_and_dora_in_process(tmp_path: Path) -> None:
    """T5 with DoRA and rsLoRA under gradient checkpointing: it learns, and the runner's count (DoRA: a magnitude
    per output of each adapted layer) is the plan's."""
    from runners.plan.planner import make_plan
    from runners.train import hf

    model = tiny_model_dir(tmp_path, "t5", T5)
    spec = specmod.from_dict(tiny_spec(
        task="seq2seq", model={"name_or_path": str(model), "lora": {**LORA, "use_dora": True, "use_rslora": True}},
        dataset={"columns": {"target": "text"}, "max_train_samples": 32, "max_eval_samples": 8},
        training={"gradient_checkpointing": True}))
    run = tmp_path / "run"
    run.mkdir()
    hf.train(spec, run)
    start = _of(records(run), "start")[0]
    # q and v (peft's t5 default) in 1 encoder self, 1 decoder self and 1 cross attention: 32 -> 32 each
    assert start["trainable_params"] == make_plan(spec, num_train_samples=32).to_json()["model"]["trainable_params"] \
        == 3 * 2 * (4 * (32 + 32) + 32)
    evals = [e["metrics"]["eval_loss"] for e in _of(records(run), "eval")]
    assert evals[-1] < evals[0], evals
    config = json.loads((run / "output" / "final" / "adapter_config.json").read_text())
    assert config["use_dora"] and config["use_rslora"] and config["task_type"] == "SEQ_2_SEQ_LM"


def test_target_names_are_the_model_s_own(tmp_path: Path) -> None:
    """A wrong name is refused before launch, listing the demo BERT's real module names; nothing is created.
    all-linear counts every linear layer but the classifier head (trained whole), pooler included."""
    from runners.plan import architecture, models
    from runners.train import adapters

    runs = tmp_path / "runs"
    spec = _write(tmp_path, model={"lora": {**LORA, "target_modules": ["q_proj", "v_proj"]}})
    proc = ftui("run", str(spec), "--headless", "--runs-dir", str(runs))
    assert proc.returncode == 2, proc.stderr
    assert "model.lora.target_modules" in proc.stderr and "q_proj, v_proj" in proc.stderr
    assert "Choose from: classifier, dense, key, query, value, or all-linear" in proc.stderr
    assert "Traceback" not in proc.stderr and not runs.exists()

    resolved = models.resolve(str(DEMO_MODEL))
    built = specmod.from_dict(tiny_spec(model={"lora": {**LORA, "target_modules": ["all-linear"]}}))
    from transformers import AutoConfig, AutoModelForSequenceClassification

    model = adapters.wrap(built, AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(DEMO_MODEL)))
    per_layer = 4 * (4 * (64 + 64) + (64 + 128) + (128 + 64))  # query, key, value, attention output; the MLP
    pooler, head = 4 * (64 + 64), 64 * 2 + 2
    assert adapters.parameter_counts(model)[0] == 2 * per_layer + pooler + head == \
        architecture.lora_params(resolved.arch, 4, ["all-linear"], "seq-cls")


def test_fused_projections_without_a_trace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Phi-3's fused qkv_proj / gate_up_proj, no closed form, the trace switched off: the names come from the model
    built on the meta device (the bug: 'Choose from:  (or all-linear)', an empty list, for valid names)."""
    from runners.plan import architecture

    monkeypatch.setenv("FTUI_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("FTUI_NO_TRACE", "1")
    phi = architecture.arch_from_config(PHI3)
    # r * (in + out) per layer: qkv 64 -> 192, o 64 -> 64, 2 layers
    assert architecture.lora_params(phi, 16, ["qkv_proj", "o_proj"]) == 16 * 2 * ((64 + 192) + (64 + 64))
    with pytest.raises(UserError, match=r"names q_proj, .*Choose from: down_proj, gate_up_proj, lm_head, o_proj, qkv_proj"):
        architecture.lora_params(phi, 16, ["q_proj"])
    with pytest.raises(UserError, match="no default LoRA targets for phi3"):
        architecture.lora_params(phi, 16, None)


@pytest.mark.parametrize(("model", "needle"), [
    ({"load_in_4bit": True, "lora": LORA, "init": "pretrained"}, "hardware.strategy is cpu"),
    ({"load_in_8bit": True, "lora": LORA, "init": "pretrained"}, "no CUDA GPU is visible"),
])
def test_quantized_base_refused_where_bitsandbytes_cannot_run(tmp_path: Path, model: dict, needle: str) -> None:
    """This machine has no CUDA: the real CLI refuses before a run dir exists, saying why and what to do."""
    hardware = {"strategy": "cpu" if "load_in_4bit" in model else "single"}
    runs = tmp_path / "runs"
    spec = _write(tmp_path, model=model, hardware=hardware)
    proc = ftui("run", str(spec), "--headless", "--runs-dir", str(runs))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert needle in proc.stderr and "bitsandbytes" in proc.stderr, proc.stderr
    assert "LoRA without quantization trains here" in proc.stderr and "NVIDIA GPU" in proc.stderr
    assert not runs.exists() or not any(runs.iterdir())


def test_quantization_spec_errors_and_the_runner_s_own_refusal(tmp_path: Path) -> None:
    """Combinations no machine can run are spec errors; the runner refuses too when preflight was bypassed."""
    from runners.train import adapters

    for model, needle in (({"load_in_4bit": True}, "has no model.lora"),
                          ({"load_in_4bit": True, "load_in_8bit": True, "lora": LORA}, "are both set"),
                          ({"load_in_4bit": True, "lora": LORA}, "random base")):
        with pytest.raises(UserError, match=needle):
            specmod.from_dict(tiny_spec(model=model))
    spec = specmod.from_dict(tiny_spec(model={"load_in_4bit": True, "lora": LORA, "init": "pretrained"},
                                       hardware={"strategy": "single"}))
    with pytest.raises(UserError, match="needs a CUDA GPU"):
        adapters.load_kwargs(spec)
    import torch

    qlora = adapters.bnb_config(specmod.from_dict(tiny_spec(
        model={"load_in_4bit": True, "lora": LORA, "init": "pretrained"}, training={"bf16": True})))
    assert (qlora.load_in_4bit, qlora.bnb_4bit_quant_type, qlora.bnb_4bit_use_double_quant,
            qlora.bnb_4bit_compute_dtype) == (True, "nf4", True, torch.bfloat16)
    eight = adapters.bnb_config(specmod.from_dict(tiny_spec(model={"load_in_8bit": True, "lora": LORA,
                                                                   "init": "pretrained"})))
    assert eight.load_in_8bit and not eight.load_in_4bit
    zero3 = specmod.from_dict(tiny_spec(model={"load_in_4bit": True, "lora": LORA, "init": "pretrained"},
                                        hardware={"strategy": "zero3"}))
    assert "strategy single" in (peft_rules.quantization_refusal(zero3.model, "zero3", "linux", True, 8, True) or "")


def test_plan_flags_reach_the_count() -> None:
    """The planner CLI's LoRA flags (DoRA, modules_to_save, 8-bit) are the spec's, and change what it counts."""
    base = ["--plan", "--model_name_or_path", str(DEMO_MODEL), "--task", "seq-cls", "--strategy", "cpu", "--json",
            "--num_train_samples", "64"]
    proc = ftui(*base, "--lora_r", "4", "--use_dora", "--lora_modules_to_save", "pooler", "--lora_dropout", "0")
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    # query/value adapters + DoRA magnitudes, the pooler and the classifier trained whole
    assert plan["model"]["trainable_params"] == 4 * 2 * 2 * 128 + 4 * 64 + (64 * 64 + 64) + (64 * 2 + 2)
    # no dropout on a float32 base: no copies of the inputs, only lora_A's r float32 outputs, 4 adapted layers
    assert plan["components"]["adapter activations"] == 8 * 128 * 4 * (4 * 4)
    refused = ftui(*base, "--load_in_8bit")
    assert refused.returncode == 2 and "has no model.lora" in refused.stderr and "--lora_r 16" in refused.stderr
