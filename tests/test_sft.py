"""The sft runner (trl's SFTTrainer) on the bundled chat demo: formats, loss masks, packing, chat templates, LoRA,
the plan's counts against the trainer's, and whole runs through the CLI.

Everything is real: the real SFTTrainer prepares the data (tokenizing, masking, packing) and trains in-process, and
the two runs through `ftui demo` / `ftui run` are real detached jobs. Those two are started first, side by side
(module fixture ``cli_runs``), and the in-process tests run while they train: most of this file's time is start-up
(importing torch, transformers and trl, in three processes at once).
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from runners import chat_data, chat_render, data, rundir
from runners import spec as specmod
from runners.errors import UserError
from runners.plan import planner
from tests.conftest import ROOT, records

DEMO_SPEC = ROOT / "assets" / "specs" / "demo_sft.yaml"
CHAT_MODEL = ROOT / "assets" / "demo" / "chat_model"
INSTRUCTIONS = ROOT / "assets" / "demo" / "instructions.jsonl"
ROWS = [json.loads(line) for line in INSTRUCTIONS.read_text().splitlines()]


def _cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tui", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _demo_dict(**sections: dict[str, Any]) -> dict[str, Any]:
    """The demo spec as data (paths made absolute), with sections merged in."""
    spec = specmod.load(DEMO_SPEC).to_dict()
    for key, value in sections.items():
        spec[key] = {**spec[key], **value} if isinstance(spec.get(key), dict) else value
    return spec


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """`ftui demo --runner sft --headless`, and `ftui run SPEC --headless` of a short packed LoRA run."""
    base = tmp_path_factory.mktemp("sft-cli")
    packed = base / "packed.yaml"
    packed.write_text(yaml.safe_dump(_demo_dict(
        name="sft-packed", dataset={"packing": True, "max_eval_samples": 8}, training={"num_train_epochs": 1},
        cadence={"n_evals": 3, "n_saves": 1})))
    procs = {"demo": (_cli("demo", "--runner", "sft", "--headless", "--runs-dir", str(base / "demo")), base / "demo"),
             "run": (_cli("run", str(packed), "--headless", "--runs-dir", str(base / "run")), base / "run")}
    yield procs
    for proc, runs in procs.values():
        if proc.poll() is None:
            proc.kill()
        for run in rundir.list_runs(runs) if runs.exists() else []:
            if (rundir.read_status(run) or {}).get("state") not in rundir.TERMINAL_STATES:
                subprocess.run([sys.executable, "-m", "tui", "kill", run.name, "--yes", "--runs-dir", str(runs)],
                               cwd=ROOT, capture_output=True, timeout=120)


def _write_rows(path: Path, fmt: str, n: int = 64) -> Path:
    """The demo's chats in another format: prompt-completion pairs, or plain text."""
    with path.open("w") as fh:
        for row in ROWS[:n]:
            turns = row["messages"]
            user = next(t["content"] for t in reversed(turns) if t["role"] == "user")
            answer = turns[-1]["content"]
            record = {"prompt": user, "completion": f" {answer}"} if fmt == "prompt-completion" \
                else {"text": f"{user} {answer}"} if fmt == "text" else row
            fh.write(json.dumps(record) + "\n")
    return path


def _spec(train: Path | str = INSTRUCTIONS, **dataset: Any) -> specmod.RunSpec:
    return specmod.from_dict(_demo_dict(dataset={"train": str(train), "max_train_samples": 48, "max_eval_samples": 16,
                                                 **dataset}))


def _trainer(spec: specmod.RunSpec, tmp_path: Path) -> Any:
    from runners.train import sft

    return sft.build_trainer(spec, tmp_path / "run")


def _expected(spec: specmod.RunSpec) -> chat_render.Formatted:
    """What chat_render (the dashboard's preview and the plan) says the first training row becomes."""
    train, _ = data.load_splits(spec)
    layout = chat_data.Layout.of(data.roles_for(train, spec, spec.dataset.train))
    tok = chat_render.tokenizer_for(str(CHAT_MODEL))
    template, _ = chat_data.find_template(spec)
    ds = spec.dataset
    return chat_render.format_example(chat_data.example(train.iloc[0].to_dict(), layout), tok, template,
                                      ds.max_seq_length, ds.completion_only_loss, ds.assistant_only_loss)


@pytest.mark.parametrize("fmt, loss", [("messages", "assistant_only_loss"), ("prompt-completion", "completion_only_loss"),
                                       ("text", None)])
def test_each_format_trains_and_matches_the_preview(cli_runs, tmp_path: Path, fmt: str,  # noqa: ANN001
                                                    loss: str | None) -> None:
    """Each format is accepted before launch and prepared by trl exactly as the preview and the plan compute it
    (the same token ids and the same tokens carrying loss); the plan counts the rows trl trains on."""
    del cli_runs  # started first: the CLI runs go on while these tests run
    train = INSTRUCTIONS if fmt == "messages" else _write_rows(tmp_path / f"{fmt}.jsonl", fmt)
    options = {"assistant_only_loss": False, **({loss: True} if loss else {})}
    spec = _spec(train, **options)
    roles = data.preflight(spec)
    assert chat_data.Layout.of(roles).format == fmt
    trainer = _trainer(spec, tmp_path)
    row = trainer.train_dataset[0]
    expected = _expected(spec)
    assert row["input_ids"] == expected.ids
    assert row["labels"] == chat_render.labels(expected)
    if loss:
        assert -100 in row["labels"] and any(label != -100 for label in row["labels"])
    else:
        assert -100 not in row["labels"]
    plan = planner.make_plan(spec).to_json()
    assert plan["sft"]["format"] == fmt and plan["num_train_samples"] == len(trainer.train_dataset)
    assert plan["sft"]["longest"] == max(len(r) for r in trainer.train_dataset["input_ids"]) == plan["sft"]["seq"]


def _of(recs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [r for r in recs if r["type"] == kind]


def _finished(proc: subprocess.Popen, timeout: float = 600) -> str:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"{out}\n{err}"
    return out


def test_a_stop_request_is_honoured(tmp_path: Path) -> None:
    """The stop file (what `ftui stop` writes) ends the run after the step it is seen at, with a checkpoint of the
    adapter, a stop record and a finish record that says so."""
    from runners.train import sft

    run = tmp_path / "run"
    (run / rundir.CONTROL_DIR).mkdir(parents=True)
    (run / rundir.CONTROL_DIR / rundir.STOP_REQUEST).write_text("")
    sft.train(_spec(), run)
    recs = records(run)
    start, stopped, finish = _of(recs, "start")[0], _of(recs, "stop")[0], _of(recs, "finish")[0]
    assert stopped == {**stopped, "step": 1, "reason": "user request"} and start["total_steps"] > 1
    assert finish["stopped"] and finish["step"] == 1 and not (run / rundir.CONTROL_DIR / rundir.STOP_REQUEST).exists()
    last = Path(_of(recs, "checkpoint")[-1]["path"])
    assert last.name == "checkpoint-1" and (last / "adapter_model.safetensors").is_file()


def test_loss_masks_cover_only_the_assistant_turns_and_the_completions(tmp_path: Path) -> None:
    """The labels of a collated batch: prompt tokens are -100 when asked, and only then."""
    def batch(spec: specmod.RunSpec) -> tuple[Any, Any]:
        trainer = _trainer(spec, tmp_path)
        collated = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
        return trainer.processing_class, collated

    def prompts(spec: specmod.RunSpec) -> list[str]:  # the batch's prompts: the first training rows, in order
        return data.load_splits(spec)[0]["prompt"].tolist()[:4]

    tok, chats = batch(_spec(assistant_only_loss=True))
    for ids, labels, mask in zip(chats["input_ids"], chats["labels"], chats["attention_mask"]):
        kept = [tok.convert_ids_to_tokens(int(i)) for i, label in zip(ids, labels) if label != -100]
        masked = [tok.convert_ids_to_tokens(int(i)) for i, label, m in zip(ids, labels, mask) if label == -100 and m]
        assert kept and kept[-1] == "<|im_end|>" and "user" not in kept and "<|im_start|>" not in kept
        assert masked[:2] == ["<|im_start|>", masked[1]] and {"user", "assistant"} <= set(masked)
    pairs = _write_rows(tmp_path / "pairs.jsonl", "prompt-completion")
    for only in (True, False):
        spec = _spec(pairs, assistant_only_loss=False, completion_only_loss=only)
        tok, out = batch(spec)
        for prompt, labels, mask in zip(prompts(spec), out["labels"], out["attention_mask"]):
            n = len(tok(prompt)["input_ids"])
            real = [int(x) for x, m in zip(labels, mask) if m]
            assert len(real) > n
            if only:
                assert real[:n] == [-100] * n and -100 not in real[n:]
            else:
                assert -100 not in real
            assert all(int(x) == -100 for x, m in zip(labels, mask) if not m)  # padding never carries loss


def test_packing_fills_max_length_blocks_as_the_plan_counts(tmp_path: Path) -> None:
    spec = _spec(max_train_samples=None, packing=True, max_seq_length=64)
    trainer = _trainer(spec, tmp_path)
    rows = trainer.train_dataset
    plan = planner.make_plan(spec).to_json()
    unpacked = planner.make_plan(_spec(max_train_samples=None, max_seq_length=64)).to_json()
    assert plan["sft"]["packing"] and plan["sft"]["seq"] == 64 and unpacked["sft"]["seq"] < 64
    assert plan["num_train_samples"] == len(rows) < unpacked["num_train_samples"] / 2
    assert all(len(ids) <= 64 for ids in rows["input_ids"]) and max(len(ids) for ids in rows["input_ids"]) == 64
    assert sum(sum(s) for s in rows["seq_lengths"]) == sum(len(ids) for ids in rows["input_ids"])
    collated = trainer.data_collator([rows[0], rows[1]])
    assert "attention_mask" not in collated  # padding-free: one flat row, the sequences told apart by position_ids
    positions = collated["position_ids"][0].tolist()
    starts = [i for i, p in enumerate(positions) if p == 0]
    assert len(starts) == len(rows[0]["seq_lengths"]) + len(rows[1]["seq_lengths"])
    assert plan["cadence"]["total_steps"] < unpacked["cadence"]["total_steps"]


def test_lora_trainable_parameters_are_what_the_plan_shows(tmp_path: Path) -> None:
    from runners.train import adapters

    spec = _spec()
    trainable, total = adapters.parameter_counts(_trainer(spec, tmp_path).model)
    plan = planner.make_plan(spec).to_json()
    assert plan["model"]["trainable_params"] == trainable < total / 2
    assert plan["model"]["params"] == total - trainable  # the base model: the adapter comes on top


def _no_template_model(tmp_path: Path) -> Path:
    model = tmp_path / "plain_model"
    shutil.copytree(CHAT_MODEL, model)
    config = json.loads((model / "tokenizer_config.json").read_text())
    del config["chat_template"]
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    return model


def test_conversations_without_a_chat_template_are_refused_before_launch(tmp_path: Path) -> None:
    model = _no_template_model(tmp_path)
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(_demo_dict(model={"name_or_path": str(model)})))
    runs = tmp_path / "runs"
    proc = subprocess.run([sys.executable, "-m", "tui", "run", str(spec_file), "--headless", "--runs-dir", str(runs)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "no chat template" in proc.stderr and "dataset.chat_template" in proc.stderr and str(INSTRUCTIONS) in proc.stderr
    assert not runs.exists() or not any(runs.iterdir())
    # the spec's own template (a file next to it) makes the same data trainable
    template = tmp_path / "chatml.jinja"
    template.write_text(chat_data.model_template(CHAT_MODEL)[0] or "")
    spec_file.write_text(yaml.safe_dump(_demo_dict(model={"name_or_path": str(model)},
                                                   dataset={"chat_template": "chatml.jinja", "max_train_samples": 48})))
    spec = specmod.load(spec_file)
    assert spec.dataset.chat_template == str(template)
    data.preflight(spec)
    trainer = _trainer(spec, tmp_path)
    assert trainer.processing_class.chat_template == template.read_text()
    assert trainer.train_dataset[0]["input_ids"] == _expected(spec).ids


def test_bad_rows_and_options_are_refused_with_the_fix(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    lines = [json.dumps(r) for r in ROWS[:5]] + [json.dumps({"messages": [{"role": "user", "content": "hi"}]}),
                                                 json.dumps({"messages": "hello"})]
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=r"2 of 7 rows .*line 6: no assistant turn.*line 7: not a list"):
        data.preflight(_spec(bad))
    pairs = _write_rows(tmp_path / "pairs.jsonl", "prompt-completion")
    with pytest.raises(UserError, match="assistant_only_loss needs conversations"):
        data.preflight(_spec(pairs))
    with pytest.raises(UserError, match="dataset.packing is a setting of the sft runner"):
        specmod.from_dict({"runner": "hf_trainer", "dataset": {"train": str(pairs), "packing": True}})
    with pytest.raises(UserError, match="no messages column"):
        data.preflight(_spec(pairs, format="messages", assistant_only_loss=False))
    with pytest.raises(UserError, match="keeps any assistant token within dataset.max_seq_length"):
        data.preflight(_spec(max_seq_length=6))
    assert specmod.from_dict({"runner": "sft"}).task == "causal-lm"


def test_ftui_demo_runner_sft_finishes_with_adapter_checkpoints(cli_runs) -> None:  # noqa: ANN001
    proc, runs = cli_runs["demo"]
    _finished(proc)
    (run,) = rundir.list_runs(runs)
    assert (rundir.read_status(run) or {})["state"] == "finished"
    recs = records(run)
    start, evals, finish = _of(recs, "start")[0], _of(recs, "eval"), _of(recs, "finish")[0]
    assert start["runner"] == "sft" and _of(recs, "log") and len(evals) >= 3
    assert evals[-1]["metrics"]["eval_loss"] < 0.6 * evals[0]["metrics"]["eval_loss"]  # it learns the chats
    assert finish["step"] == start["total_steps"] == json.loads((run / "plan.json").read_text())["total_steps"]
    best = [c for c in _of(recs, "checkpoint") if c.get("is_best") and not c.get("removed")][-1]
    for folder in (Path(best["path"]), run / "output" / "final"):
        assert (folder / "adapter_model.safetensors").is_file() and (folder / "adapter_config.json").is_file()
        assert not (folder / "model.safetensors").exists()  # the adapter, not a copy of the model
    assert any(m["text"].startswith("LoRA r=16: 32,768 of") for m in _of(recs, "message"))


def test_ftui_run_sft_with_lora_and_packing(cli_runs) -> None:  # noqa: ANN001
    proc, runs = cli_runs["run"]
    _finished(proc)
    (run,) = rundir.list_runs(runs)
    assert (rundir.read_status(run) or {})["state"] == "finished"
    recs = records(run)
    start, finish = _of(recs, "start")[0], _of(recs, "finish")[0]
    assert _of(recs, "log") and len(_of(recs, "eval")) >= 3 and finish["step"] == start["total_steps"]
    assert any(m["text"].startswith("sft: trl prepared") and "packed into" in m["text"] for m in _of(recs, "message"))
    best = Path([c for c in _of(recs, "checkpoint") if not c.get("removed")][-1]["path"])
    assert (best / "adapter_model.safetensors").is_file() and (best / "adapter_config.json").is_file()
    # the plan counted the packed rows as trl made them: 150 rows of 64 tokens, not 360 rows, at 16 a step
    assert json.loads((run / "plan.json").read_text())["total_steps"] == start["total_steps"] < 360 // 16
