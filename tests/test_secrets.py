"""Secrets stay off disk and off screen, and redaction never changes a setting the run reads back."""
from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from runners import redaction
from runners import spec as specmod
from runners.errors import UserError
from runners.launch import launcher
from runners.train import entry
from runners.watch import procs
from tests.conftest import DEMO_MODEL, ftui, only_run, tiny_spec

SNAPSHOT = "/hf-cache/hub/models--org--model/snapshots/" + "0123456789abcdef0123456789abcdef01234567" + "/"


def trap_spec(hub_token: str | None = None, **overrides: dict) -> dict:
    """A spec holding every value a loose redaction rule used to rewrite, and optionally a secret."""
    training = {"include_num_input_tokens_seen": "non_padding", "hub_revision": "a" * 40, "num_train_epochs": 1,
                "learning_rate": 0.001}
    if hub_token:
        training["hub_token"] = hub_token
    spec = tiny_spec(model={"tokenizer": str(DEMO_MODEL)}, training=training,
                     runner_args={"pad_token": "<pad>", "eos_token": "</s>", "mask_token": "[MASK]",
                                  "cache_path": SNAPSHOT, "max_new_tokens": 8, "secret_note": ""})
    for section, values in overrides.items():
        spec[section] = {**spec.get(section, {}), **values}
    return spec


@pytest.mark.parametrize("key", ["tokenizer", "include_num_input_tokens_seen", "pad_token", "eos_token", "bos_token",
                                 "mask_token", "max_new_tokens", "tokenizer_name", "add_special_tokens",
                                 "token_text_column", "tokens_per_second", "secret_note"])
def test_settings_named_like_tokens_are_not_secrets(key: str) -> None:
    assert not redaction.is_secret_key(key)


@pytest.mark.parametrize("key", ["hub_token", "HF_TOKEN", "token", "WANDB_API_KEY", "api_key", "apikey", "password",
                                 "client_secret", "--hub-token", "training.hub_token", "aws_secret_access_key",
                                 "use_auth_token"])
def test_secret_names(key: str) -> None:
    assert redaction.is_secret_key(key)


def test_values_are_redacted_by_unambiguous_shapes_only() -> None:
    commit = "0123456789abcdef" * 2 + "01234567"
    data = {"im_end_token": "<|im_end|>", "sep_token": "[SEP]", "hub_token": "[abc]", "use_auth_token": True,
            "path": f"/cache/snapshots/{commit}/", "url": "https://user:s3cr3t-pw@host/x", "note": "hf_" + "a" * 34,
            "header": "Authorization: Bearer abcdefgh12345678", "tokenizer": "hf-internal-testing/tiny"}
    out = redaction.redact(data)
    assert out["im_end_token"] == "<|im_end|>" and out["sep_token"] == "[SEP]" and out["use_auth_token"] is True
    assert out["hub_token"] == redaction.REDACTED and out["note"] == redaction.REDACTED
    assert out["path"] == data["path"] and out["tokenizer"] == data["tokenizer"]
    assert "s3cr3t" not in out["url"] and out["url"].endswith("@host/x")
    assert "abcdefgh12345678" not in out["header"]


def test_round_trip_keeps_every_setting(tmp_path: Path) -> None:
    """spec.yaml is what the training process reads: every non-secret value comes back exactly as written."""
    original = specmod.from_dict(trap_spec(model={"name_or_path": SNAPSHOT, "tokenizer": str(DEMO_MODEL)}))
    path = tmp_path / "spec.yaml"
    specmod.save(original, path)
    assert specmod.REDACTED not in path.read_text()
    again = specmod.load(path)
    assert again == original
    assert again.model.tokenizer == str(DEMO_MODEL)
    assert again.training["include_num_input_tokens_seen"] == "non_padding"
    assert again.training["hub_revision"] == "a" * 40
    assert again.runner_args["cache_path"] == SNAPSHOT and again.runner_args["pad_token"] == "<pad>"
    assert again.model.name_or_path == SNAPSHOT


def test_secret_slots_fill_back_exactly_and_only_for_their_run(tmp_path: Path) -> None:
    token = "hf_" + secrets.token_hex(17)
    original = specmod.from_dict(trap_spec(token))
    path = tmp_path / "spec.yaml"
    specmod.save(original, path)
    assert token not in path.read_text()
    env = redaction.secrets_env(original.to_dict(), str(tmp_path))
    assert token in env[redaction.SECRETS_ENV]
    assert specmod.load(path, secrets=redaction.slots_from_env(env, str(tmp_path))) == original
    # slots meant for another run fill nothing; the placeholder is dropped, never used as a token
    other = specmod.load(path, secrets=redaction.slots_from_env(env, str(tmp_path / "other")))
    assert "hub_token" not in other.training
    assert other.model == original.model and other.runner_args == original.runner_args


def test_training_entry_gets_the_secret_in_memory_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real run dir as the launcher writes it, read back by the training entry point."""
    token = "hf_" + secrets.token_hex(17)
    spec = specmod.from_dict(trap_spec(token))
    run_dir = launcher.create_run(spec, tmp_path / "runs")
    for file in run_dir.rglob("*"):
        assert not file.is_file() or token.encode() not in file.read_bytes(), file
    monkeypatch.delenv("HF_TOKEN", raising=False)
    for key, value in redaction.secrets_env(spec.to_dict(), str(run_dir)).items():
        monkeypatch.setenv(key, value)
    loaded = entry.load_run_spec(run_dir)
    assert os.environ.get("HF_TOKEN") == token  # the Trainer pushes with it; training_args.bin never holds it
    assert redaction.SECRETS_ENV not in os.environ  # not inherited by dataloader workers or trackers
    assert "hub_token" not in loaded.training
    assert {k: v for k, v in spec.training.items() if k != "hub_token"} == loaded.training
    assert loaded.model == spec.model and loaded.runner_args == spec.runner_args
    assert loaded.spec_hash() == spec.spec_hash()


def test_displayed_command_lines_hide_secret_arguments() -> None:
    token, key = "hf_" + secrets.token_hex(17), secrets.token_hex(20)
    argv = ["python", "train.py", "--hub_token", token, f"--wandb-api-key={key}", "--tokenizer", "tok/dir",
            f"WANDB_API_KEY={key}", "--pad_token", "<pad>", "--revision", "b" * 40, f"--note=uses {token}"]
    shown = redaction.redact_argv(argv)
    assert token not in " ".join(shown) and key not in " ".join(shown)
    assert shown[:4] == ["python", "train.py", "--hub_token", redaction.REDACTED]
    assert ["--tokenizer", "tok/dir"] == shown[5:7] and ["--pad_token", "<pad>", "--revision", "b" * 40] == shown[8:12]


def test_ps_processes_show_and_serialise_redacted_commands() -> None:
    token = "hf_" + secrets.token_hex(17)
    proc = procs.Proc(pid=1, ppid=0, pgid=1, cmdline=["python", "-m", "runners.train", "--hub_token", token,
                                                       "--output_dir", "out"], cwd="/", create_time=0, rss=0, role="worker")
    job = procs.Job(pid=1, launcher="python", processes=[proc], output_dir="/out", output_dir_from="--output_dir")
    assert token not in proc.command and redaction.REDACTED in proc.command
    assert token not in json.dumps(job.to_json())
    assert proc.cmdline[4] == token  # kept for finding the output dir, never displayed as is
    assert procs.locate_output_dir(proc.cmdline, "/")[0] == "/out"


def test_type_errors_do_not_echo_secret_values() -> None:
    for value in (1234567890123, ["hf_" + "q" * 34], {"v": "p4ssw0rd-xyz"}):
        with pytest.raises(UserError, match=r"training\.hub_token must be a string or empty") as err:
            specmod.from_dict({"training": {"hub_token": value}})
        assert "1234567890123" not in str(err.value) and "q" * 34 not in str(err.value)
        assert "p4ssw0rd" not in str(err.value)
    for value in ("hf_" + "z" * 34, {"api_key": "z" * 34}):
        with pytest.raises(UserError, match="learning_rate must be a number") as err:
            specmod.from_dict({"training": {"learning_rate": value}})
        assert "z" * 34 not in str(err.value)


def _scan(text: str | bytes, planted: dict[str, str], where: str) -> None:
    data = text.encode() if isinstance(text, str) else text
    for name, value in planted.items():
        assert value.encode() not in data, f"{name} leaked into {where}"


def test_secret_leak(tmp_path: Path) -> None:
    """Secrets planted in the environment, the spec and a command line appear in no file of the run dir
    (output/ included), no command output, `ftui ps` (text and JSON), attach --once --json, runs --json."""
    planted = {"HF_TOKEN": "hf_" + secrets.token_hex(17), "WANDB_API_KEY": secrets.token_hex(20),
               "training.hub_token": "hf_" + secrets.token_hex(17), "argv --hub_token": "hf_" + secrets.token_hex(17),
               "argv --api_key=": "k" + secrets.token_hex(12), "argv env assignment": secrets.token_hex(20)}
    env = {**os.environ, "HF_TOKEN": planted["HF_TOKEN"], "WANDB_API_KEY": planted["WANDB_API_KEY"]}
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(trap_spec(planted["training.hub_token"])))
    runs = tmp_path / "runs"
    outputs = []
    run = ftui("run", str(spec_path), "--headless", "--runs-dir", str(runs), env=env)
    outputs.append(("ftui run", run))
    run_dir = only_run(runs)
    # the separate tokenizer folder, include_num_input_tokens_seen and hub_revision reached the Trainer intact
    assert run.returncode == 0, run.stdout + run.stderr + (run_dir / "stdout.log").read_text()
    assert json.loads((run_dir / "status.json").read_text())["state"] == "finished"
    sleeper = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)", "runners.train", "--hub_token", planted["argv --hub_token"],
         f"--api_key={planted['argv --api_key=']}", f"WANDB_API_KEY={planted['argv env assignment']}",
         "--output_dir", str(tmp_path / "sleeper_out"), "--run-dir", str(tmp_path / "sleeper_run")], cwd=tmp_path)
    # (--run-dir: what ftui's own training processes carry, evidence enough for `ftui ps` without ML libraries)
    try:
        ps = ftui("ps", env=env)
        ps_json = ftui("ps", "--json", env=env)
        attach_pid = ftui("attach", str(sleeper.pid), "--once", "--json", env=env)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert str(sleeper.pid) in ps.stdout, ps.stdout + ps.stderr  # listed (its line is cut at 110 characters)
    jobs = json.loads(ps_json.stdout)["jobs"]
    mine = [p for j in jobs for p in j["processes"] if p["pid"] == sleeper.pid]
    assert mine and redaction.REDACTED in mine[0]["cmdline"]
    outputs += [("ftui ps", ps), ("ftui ps --json", ps_json), ("ftui attach PID", attach_pid),
                ("ftui attach --once --json", ftui("attach", str(run_dir), "--once", "--json", env=env)),
                ("ftui runs --json", ftui("runs", "--json", "--runs-dir", str(runs), env=env))]
    for name, proc in outputs:
        _scan(proc.stdout + proc.stderr, planted, name)
    assert json.loads(outputs[-2][1].stdout)["state"] == "finished"
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert any(p.name == "training_args.bin" for p in files) and any(p.name == "events.jsonl" for p in files)
    for path in files:
        _scan(path.read_bytes(), planted, str(path.relative_to(run_dir)))
