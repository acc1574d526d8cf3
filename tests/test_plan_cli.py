"""`ftui --plan` end to end, in subprocesses like a user runs it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fakes import GIB, FakeGPU, fake_nvml

ROOT = Path(__file__).resolve().parent.parent
OFFLINE = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def ftui(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tui", *args], capture_output=True, text=True, cwd=ROOT,
                          env=env or OFFLINE, timeout=120)


def test_issue_example_json_offline() -> None:
    proc = ftui("--plan", "--model_name_or_path", "bert-large-uncased", "--task", "seq-cls",
                "--per_device_train_batch_size", "4", "--max_seq_length", "512", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    for key in ("peak_allocated_bytes", "device_used_bytes", "host_ram_bytes", "components", "phase", "fits",
                "recommendations", "cadence"):
        assert key in data
    assert data["model"]["params"] == 335_143_938
    assert data["device_used_bytes"] > data["peak_allocated_bytes"] > 5e9  # 16 B/param of model states alone is 5.4 GB
    assert sum(data["components"].values()) == pytest.approx(data["peak_allocated_bytes"], rel=1e-6)
    # without gradient checkpointing the peak is in backward: the forward's saved activations (4 x 512 tokens through
    # 24 layers, GBs) are all still held when the first gradients arrive; the optimizer step adds only the
    # gradients (4 B x 335M = 1.3 GB), and eval keeps no activations for a backward
    assert data["phase"] == "backward"
    assert data["fits"] is True and data["max_per_device_train_batch_size"] >= 4


def test_plan_imports_no_textual_no_torch() -> None:
    code = ("import sys; from tui.cli import main; "
            "main(['--plan', '--model_name_or_path', 'Llama-2-70b', '--task', 'causal-lm', '--json']); "
            "bad = [m for m in ('textual', 'torch', 'transformers', 'deepspeed') if m in sys.modules]; "
            "sys.stderr.write('IMPORTED:' + ','.join(bad))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=OFFLINE, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip().endswith("IMPORTED:"), proc.stderr


def test_rich_report_and_spec_file() -> None:
    proc = ftui("plan", "assets/specs/demo.yaml", "--num_train_epochs", "2")
    assert proc.returncode == 0, proc.stderr
    assert "ftui plan" in proc.stdout and "Cadence" in proc.stdout and "host RAM" in proc.stdout


def test_validate_reports_acceptance() -> None:
    proc = ftui("--plan", "assets/specs/demo.yaml", "--json", "--validate")
    data = json.loads(proc.stdout)
    assert data["cadence"]["validated"] is True and data["cadence"]["validation_error"] is None
    assert data["num_train_samples_source"] == "dataset"


@pytest.mark.parametrize("args, needle", [
    (["--model_name_or_path", "not-a-model-xyz"], "Unknown model 'not-a-model-xyz'"),
    (["--model_name_or_path", "gpt2", "--per_device_train_batchsize", "4"], "Did you mean '--per_device_train_batch_size'"),
    (["--model_name_or_path", "gpt2", "--per_device_train_batch_size", "0"], "at least 1, got 0"),
    (["--model_name_or_path", "gpt2", "--strategy", "ddp", "--num_gpus", "1"], "ddp needs at least 2 GPUs"),
    (["--model_name_or_path", "gpt2", "--eval_batch"], "Unknown flag"),
    (["assets/specs/nope.yaml"], "does not exist"),
])
def test_bad_input_is_one_paragraph_exit_2(args: list[str], needle: str) -> None:
    proc = ftui("--plan", *args)
    assert proc.returncode == 2
    assert needle in proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


def test_impossible_cadence_is_exit_2(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text("model: {name_or_path: gpt2}\ntask: causal-lm\ntraining:\n  max_steps: 333\n  eval_strategy: steps\n"
                    "  save_strategy: steps\n  eval_steps: 0.02\n  save_steps: 0.1\n  load_best_model_at_end: true\n")
    proc = ftui("--plan", str(spec), "--num_train_samples", "1000")
    assert proc.returncode == 2 and "Impossible cadence" in proc.stderr


def test_unknown_spec_key_is_exit_2(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text("model: {name_or_path: gpt2}\ntraining: {learning_rat: 0.1}\n")
    proc = ftui("--plan", str(spec))
    assert proc.returncode == 2 and "Did you mean 'learning_rate'" in proc.stderr


def test_runner_flag_covers_other_runners() -> None:
    st = json.loads(ftui("--plan", "--model_name_or_path", "bert-base-uncased", "--runner", "simpletransformers",
                         "--num_train_samples", "1000", "--json").stdout)
    assert st["cadence"]["simpletransformers"]["evaluate_during_training_steps"] >= 1
    sbert = json.loads(ftui("--plan", "--model_name_or_path", "all-MiniLM-L6-v2", "--runner", "sentence_transformers",
                            "--num_train_samples", "1000", "--json").stdout)
    assert sbert["task"] == "embedding" and sbert["cadence"]["training_arguments"]["metric_for_best_model"] == "eval_loss"


def test_validate_reports_the_trainers_refusal_text(tmp_path: Path) -> None:
    """A spec ftui's own checks accept but TrainingArguments refuses: the JSON carries the refusal."""
    spec = tmp_path / "spec.yaml"
    # (a misspelt enum such as cosine_typo is refused by the spec's own typed checks, runners/spec_types.py)
    spec.write_text("model: {name_or_path: gpt2}\ntask: causal-lm\n"
                    "training: {lr_scheduler_type: reduce_lr_on_plateau, eval_strategy: 'no'}\n")
    proc = ftui("--plan", str(spec), "--num_train_samples", "1000", "--json", "--validate")
    assert proc.returncode == 0, proc.stderr
    cad = json.loads(proc.stdout)["cadence"]
    assert cad["validated"] is False
    assert "reduce_lr_on_plateau requires an eval strategy" in cad["validation_error"]
    plain = json.loads(ftui("--plan", str(spec), "--num_train_samples", "1000", "--json").stdout)["cadence"]
    assert plain["validated"] is None  # not checked (and transformers not imported) without --validate


def test_rich_report_imports_no_textual_no_torch() -> None:
    code = ("import sys; from tui.cli import main; "
            "rc = main(['--plan', '--model_name_or_path', 'Mixtral-8x7B-v0.1', '--task', 'causal-lm', "
            "'--lora_r', '8', '--strategy', 'zero3', '--num_gpus', '4']); "
            "bad = [m for m in ('textual', 'torch', 'transformers', 'deepspeed') if m in sys.modules]; "
            "sys.stderr.write(f'RC:{rc} IMPORTED:' + ','.join(bad))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=OFFLINE, timeout=60)
    assert proc.stderr.strip().endswith("RC:0 IMPORTED:"), proc.stderr
    assert "Components at the peak" in proc.stdout


def _fms_argv(row: dict) -> list[str]:
    argv = ["--model_name_or_path", row["model"], "--task", "causal-lm", "--strategy", "fsdp", "--num_gpus",
            row["num_gpus"], "--per_device_train_batch_size", row["per_device_train_batch_size"],
            "--per_device_eval_batch_size", "1", "--max_seq_length", "4096", "--torch_dtype", "bfloat16", "--bf16",
            "--gradient_checkpointing", "--attn_implementation", "flash_attention_2", "--optim", "adamw_torch", "--json"]
    if row["peft"] == "lora":
        argv += ["--lora_r", row["lora_r"], "--lora_target_modules", *row["lora_target_modules"].split()]
    return argv


def test_calibration_rows_through_the_cli_flags(capsys: pytest.CaptureFixture[str]) -> None:
    """Each measured fms row, planned from the flags a user would pass, within 10% median error."""
    import csv
    import statistics

    from tui.commands import plan as cmd_plan

    errors = []
    for row in csv.DictReader((ROOT / "bench" / "calibration" / "fms_a100_mistral7b.csv").open()):
        assert cmd_plan.main("plan", _fms_argv(row)) == 0
        data = json.loads(capsys.readouterr().out)
        measured = int(row["peak_torch_alloc_bytes"])
        errors.append(abs(data["peak_allocated_bytes"] - measured) / measured)
        assert data["phase"] == ("backward" if row["peft"] == "lora" else "optimizer step"), row["id"]
    assert statistics.median(errors) < 0.10 and max(errors) < 0.20, errors


def test_gpu_memory_from_nvml_else_80_gib(monkeypatch: pytest.MonkeyPatch) -> None:
    """NVML is the one thing faked (it cannot exist without a GPU): its smallest GPU sets the capacity."""
    from runners.plan.planner import make_plan
    from runners.spec import from_dict

    spec = from_dict({"model": {"name_or_path": "Llama-3.1-8B"}, "task": "causal-lm",
                      "hardware": {"strategy": "zero3", "num_processes": 4}})
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml(init_error="Driver Not Loaded"))  # no GPU, on any machine
    none_seen = make_plan(spec, num_train_samples=100).to_json()
    assert none_seen["gpu_memory_bytes"] == 80 * 1024**3 and none_seen["gpu_memory_source"].startswith("default")

    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml([FakeGPU(total=80 * GIB),
                                                          FakeGPU(name="NVIDIA A100-SXM4-40GB", total=40 * GIB)]))
    seen = make_plan(spec, num_train_samples=100).to_json()
    assert seen["gpu_memory_bytes"] == 40 * 1024**3 and seen["gpu_memory_source"] == "nvml"
    assert any("NVML sees 2" in w for w in seen["warnings"])
    assert seen["device_used_bytes"] == none_seen["device_used_bytes"]  # capacity changes the verdict, not the bytes
    flagged = make_plan(spec, num_train_samples=100, gpu_memory_gib=24).to_json()
    assert flagged["gpu_memory_bytes"] == 24 * 1024**3 and flagged["gpu_memory_source"] == "flag"


def test_sentence_transformers_plan_shows_the_loss_and_why() -> None:
    proc = ftui("--plan", "assets/specs/demo_sentence_transformers.yaml", "--json")
    assert proc.returncode == 0, proc.stderr
    loss = json.loads(proc.stdout)["loss"]
    from runners import data, spec
    from runners.plan import st_losses

    demo = spec.load(ROOT / "assets" / "specs" / "demo_sentence_transformers.yaml")
    head = data.load_table(demo.dataset.train, nrows=200)
    roles = data.detect_columns(head, demo.dataset, "embedding")
    assert (loss["name"], loss["reason"]) == st_losses.choose_loss(roles, demo.runner_args.get("loss"), head["label"].tolist())
    assert loss["reason"]
    plain = json.loads(ftui("--plan", "--model_name_or_path", "all-MiniLM-L6-v2", "--runner", "sentence_transformers",
                            "--json").stdout)
    assert plain["loss"] is None  # no dataset given: nothing to choose from


def test_seq2seq_on_a_decoder_only_model_is_exit_2() -> None:
    """Issue 13: gpt2 with --task seq2seq was planned as if it fitted; the config says it is no encoder-decoder."""
    proc = ftui("--plan", "--model_name_or_path", "gpt2", "--task", "seq2seq")
    assert proc.returncode == 2 and not proc.stdout
    error = " ".join(proc.stderr.split())
    for needle in ("seq2seq", "'gpt2'", "encoder-decoder", "--task causal-lm", "t5"):
        assert needle in error, error
    assert ftui("--plan", "--model_name_or_path", "google-t5/t5-base", "--task", "seq2seq", "--json").returncode == 0


LLAMA_8B = ("--plan", "--model_name_or_path", "meta-llama/Llama-3.1-8B", "--task", "causal-lm", "--max_seq_length",
            "1024", "--per_device_train_batch_size", "16", "--gpu_memory_gib", "80", "--host_memory_gib", "512")


def test_lever_flags_are_whole_at_80_columns() -> None:
    """Issue 13: the levers table cut flags ('--per_device_train_batc…'); each lever's flags are one whole line."""
    proc = ftui(*LLAMA_8B, env={**OFFLINE, "COLUMNS": "80"})
    assert proc.returncode == 0, proc.stderr
    lines = [line.strip() for line in proc.stdout.splitlines()]
    assert "--per_device_train_batch_size 4 --gradient_accumulation_steps 4" in lines
    assert "--load_in_4bit --lora_r 16 --lora_target_modules q_proj k_proj v_proj o_proj" in lines
    assert "…" not in proc.stdout.split("Memory levers")[1].split("Cadence")[0]


def test_the_eval_batch_is_a_lever_and_no_advice_points_at_missing_levers() -> None:
    data = json.loads(ftui(*LLAMA_8B, "--per_device_eval_batch_size", "64", "--json").stdout)
    lever = next(lv for lv in data["levers"] if "per_device_eval_batch_size" in lv["change"])
    assert lever["change"] == {"per_device_eval_batch_size": 16} and lever["saves_bytes"] > 10 * GIB
    squeezed = json.loads(ftui("--plan", "--model_name_or_path", "meta-llama/Llama-3.1-70B", "--task", "causal-lm",
                               "--per_device_train_batch_size", "1", "--per_device_eval_batch_size", "1",
                               "--load_in_4bit", "--lora_r", "16", "--gradient_checkpointing", "--bf16", "--strategy",
                               "zero3_offload", "--gpu_memory_gib", "4", "--host_memory_gib", "512", "--json").stdout)
    assert squeezed["fits"] is False and squeezed["levers"] == []
    assert not any("levers below" in line for line in squeezed["advice"]), squeezed["advice"]
    assert any("smaller model" in line for line in squeezed["advice"])
