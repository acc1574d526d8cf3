"""Model resolution and parameter counts (checked against real meta-device instantiation)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from runners.errors import UserError
from runners.plan import architecture, models

REQUIRED = ["bert-base-uncased", "bert-large-uncased", "roberta-base", "roberta-large", "distilbert-base-uncased",
            "gpt2", "t5-base", "all-MiniLM-L6-v2", "Llama-2-7b", "Llama-2-13b", "Llama-2-70b", "Llama-3.1-8B",
            "Llama-3.1-70B", "Mistral-7B-v0.1", "Mixtral-8x7B-v0.1", "Qwen2.5-7B", "gemma-2-9b"]


@pytest.mark.parametrize("name", REQUIRED)
def test_bundled_names_resolve_with_and_without_org(name: str) -> None:
    short = models.resolve(name)
    assert short.source == "bundled"
    hub_id = json.loads(Path(short.path).read_text())["_ftui"]["hub_id"]
    assert models.resolve(hub_id).config == short.config
    assert models.resolve(name.upper()).config == short.config


def test_published_parameter_counts() -> None:
    """Counts the model cards publish (rounded), from the closed forms."""
    expect = {"meta-llama/Llama-2-7b-hf": 6.74e9, "meta-llama/Llama-3.1-8B": 8.03e9, "mistralai/Mistral-7B-v0.1": 7.24e9,
              "mistralai/Mixtral-8x7B-v0.1": 46.7e9, "meta-llama/Llama-2-70b-hf": 68.98e9, "google/gemma-2-9b": 9.24e9,
              "Qwen/Qwen2.5-7B": 7.62e9, "openai-community/gpt2": 124.4e6, "google-t5/t5-base": 222.9e6}
    for name, count in expect.items():
        arch = models.resolve(name).arch
        task = "seq2seq" if "t5" in name else "causal-lm"
        assert abs(architecture.params_for_task(arch, task) - count) / count < 0.002, name


def test_closed_forms_match_meta_instantiation() -> None:
    """Every bundled config: the fast path equals what transformers builds on the meta device."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoModelForSequenceClassification
    from transformers.utils import logging

    logging.set_verbosity_error()
    for name in models.bundled_names():
        resolved = models.resolve(name)
        config = AutoConfig.for_model(**resolved.config)
        for task, auto in (("causal-lm", AutoModelForCausalLM), ("seq-cls", AutoModelForSequenceClassification),
                           ("seq2seq", AutoModelForSeq2SeqLM)):
            if task not in resolved.arch.params:
                continue
            with torch.device("meta"):
                model = auto.from_config(config)
            assert resolved.arch.params[task] == sum(p.numel() for p in model.parameters()), (name, task)


def test_local_directory_and_errors(tmp_path: Path) -> None:
    demo = Path(__file__).resolve().parent.parent / "assets" / "demo" / "model"
    local = models.resolve(str(demo))
    assert local.source == "local" and local.arch.hidden == 64
    with pytest.raises(UserError, match="has no config.json"):
        models.resolve(str(tmp_path))
    with pytest.raises(UserError, match=r"Unknown model 'lama-2-7b'.*Did you mean 'llama-2-7b'"):
        models.resolve("lama-2-7b")


def test_hf_cache_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    snap = tmp_path / "hub" / "models--acme--tiny" / "snapshots" / "abc"
    snap.mkdir(parents=True)
    cfg = json.loads((Path(__file__).resolve().parent.parent / "assets" / "demo" / "model" / "config.json").read_text())
    (snap / "config.json").write_text(json.dumps(cfg))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    resolved = models.resolve("acme/tiny")
    assert resolved.source == "cache" and resolved.arch.layers == 2


def test_lora_params_and_bad_targets() -> None:
    arch = models.resolve("Mistral-7B-v0.1").arch
    # r * (in + out) per layer: q 4096->4096, k/v 4096->1024, o 4096->4096; 32 layers
    assert architecture.lora_params(arch, 16, ["q_proj", "k_proj", "v_proj", "o_proj"]) == 16 * 32 * (8192 * 2 + 5120 * 2)
    with pytest.raises(UserError, match="do not have"):
        architecture.lora_params(arch, 16, ["query"])


def test_hub_config_over_http_and_fast_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hub route fetches only config.json (here from a real local HTTP server standing in for the
    endpoint); with the endpoint unreachable it gives up at once and the error lists bundled names."""
    import http.server
    import threading
    import time

    cfg = (Path(__file__).resolve().parent.parent / "assets" / "demo" / "model" / "config.json").read_bytes()
    asked: list[str] = []

    class Hub(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            asked.append(self.path)
            ok = self.path == "/acme/remote-tiny/resolve/main/config.json"
            self.send_response(200 if ok else 404)
            self.end_headers()
            self.wfile.write(cfg if ok else b"{}")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
        monkeypatch.setenv("HF_HUB_CACHE", "/nonexistent-ftui-cache")
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_port}")
        remote = models.resolve("acme/remote-tiny")
        assert remote.source == "hub" and remote.arch.hidden == 64 and remote.path is None
        assert asked == ["/acme/remote-tiny/resolve/main/config.json"]
        with pytest.raises(UserError, match="Unknown model 'acme/missing'"):
            models.resolve("acme/missing")
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # offline: the hub is not even asked
        with pytest.raises(UserError):
            models.resolve("acme/remote-tiny")
        assert len(asked) == 2
        monkeypatch.delenv("HF_HUB_OFFLINE")
    finally:
        server.shutdown()
        server.server_close()
    # the endpoint is now closed: refused at once, and the error lists what would work
    start = time.perf_counter()
    with pytest.raises(UserError, match="Bundled configs: .*meta-llama/Llama-2-7b-hf"):
        models.resolve("acme/remote-tiny")
    assert time.perf_counter() - start < 3.5
