"""`ftui try` on real checkpoints of the bundled demos of every runner (tests/trained.py trains them once).

The answers are checked against what the runs themselves measured: a classifier's labels over the run's own
eval split give exactly the eval_accuracy the run recorded for that checkpoint (so the right folder, labels,
tokenization and head were loaded), an embedding model finds an eval row nearest to itself, and a generation
obeys its controls (stop strings, forbidden and forced words) while staying the greedy answer otherwise.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from runners import data
from runners import spec as specmod
from runners.results import checkpoints
from runners.results.try_session import TryError, TrySession
from tests.conftest import ftui
from tests.trained import demo_run


def answers(run: Path, *args: str, stdin: str | None = None) -> list[dict[str, Any]]:
    proc = ftui("try", str(run), "--json", *args, input=stdin)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "loaded " in proc.stderr and "no GPU: running on the CPU" in proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


def eval_rows(run: Path) -> tuple[list[str], list[str]]:
    spec = specmod.load(run / "spec.yaml")
    train_df, eval_df = data.load_splits(spec)
    roles = data.detect_columns(train_df, spec.dataset, spec.task, spec.dataset.train)
    return [str(t) for t in eval_df[roles["text"]]], [str(v) for v in eval_df[roles["label"]]]


@pytest.mark.parametrize("demo", ["demo", "demo_simpletransformers"])
def test_a_classifiers_labels_over_its_eval_split_give_the_accuracy_the_run_recorded(
        demo: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    run = demo_run(tmp_path_factory, demo)
    best = checkpoints.history(run).best
    assert best and best["metric"] == "eval_accuracy"
    texts, labels = eval_rows(run)
    got = answers(run, "--checkpoint", "best", stdin="\n".join(texts) + "\n")
    assert [a["input"] for a in got] == texts  # one warm process answered every line, in order
    for a in got:
        assert a["task"] == "seq-cls" and {r["label"] for r in a["labels"]} == set(labels) | {r["label"] for r in a["labels"]}
        assert abs(sum(r["score"] for r in a["labels"]) - 1) < 1e-4
        assert a["labels"] == sorted(a["labels"], key=lambda r: -r["score"])
    predicted = [a["labels"][0]["label"] for a in got]
    accuracy = sum(p == t for p, t in zip(predicted, labels)) / len(labels)
    assert accuracy == pytest.approx(best["value"], abs=1e-9), (accuracy, best)


def test_an_embedding_model_finds_each_eval_row_nearest_to_itself(tmp_path_factory: pytest.TempPathFactory) -> None:
    run = demo_run(tmp_path_factory, "demo_sentence_transformers")
    texts, labels = eval_rows(run)
    picked = texts[:3]
    got = answers(run, "--pair", picked[0], "-k", "2", stdin="\n".join(picked) + "\n")
    assert len(got) == 3
    for text, a in zip(picked, got):
        assert a["task"] == "embedding" and a["searched_rows"] == len(texts)
        assert a["nearest"][0]["text"] == text and a["nearest"][0]["score"] == pytest.approx(1.0, abs=1e-4)
        assert a["nearest"][0]["label"] == labels[a["nearest"][0]["row"]] and len(a["nearest"]) == 2
        assert -1.0001 <= a["similarity"] <= 1.0001
    assert got[0]["similarity"] == pytest.approx(1.0, abs=1e-4)  # a text against itself
    assert got[1]["similarity"] < got[0]["similarity"]


def test_a_generation_streams_and_obeys_stop_forbid_and_force(tmp_path_factory: pytest.TempPathFactory) -> None:
    run = demo_run(tmp_path_factory, "demo_sft")
    prompt = "hello"
    plain = answers(run, prompt, "--max-new-tokens", "12")[0]
    assert plain["task"] == "causal-lm" and plain["prompt"] == "chat template"
    words = plain["text"].split()
    assert len(words) >= 3, plain
    assert plain["first_token_s"] is not None and plain["tokens"] >= len(words)

    with TrySession() as session:  # the same worker `ftui try` starts, kept warm across the variants
        facts = session.load(run)
        assert facts["kind"] == "adapter" and facts["chat"]

        def ask(**params: Any) -> tuple[list[str], dict[str, Any]]:
            lines = list(session.ask(prompt, max_new_tokens=12, **params))
            assert lines[-1]["event"] == "done"
            return [m["text"] for m in lines if m["event"] == "token"], lines[-1]["result"]

        pieces, again = ask()
        assert again["text"] == plain["text"] and len(pieces) >= 2  # streamed, and greedy is reproducible
        assert "".join(pieces).split() == words

        _, cut = ask(stop=[words[2]])
        assert cut["stopped"] == "stop string" and cut["text"].split() == words[:2]

        _, forbidden = ask(forbid=[words[0]])
        assert words[0] not in forbidden["text"].split()

        vocabulary = ["seven", "river", "yellow", "chair", "moon", "oslo"]  # in the demo chat model's vocabulary
        extra = [w for w in vocabulary if w not in words][:2]
        _, forced = ask(force=extra)
        assert all(w in forced["text"].split() for w in extra) and "unknown_words" not in forced, forced
        _, unknown = ask(force=["zzzqqq"])
        assert unknown["unknown_words"] == ["zzzqqq"]

        _, raw = ask(chat=False)
        assert raw["prompt"] == "plain text"
        with pytest.raises(TryError, match="top_p"):
            ask(top_p=2)
        _, sampled = ask(temperature=1.5, seed=7)
        _, resampled = ask(temperature=1.5, seed=7)
        assert sampled["text"] == resampled["text"]  # a seed makes sampling repeatable (both sides of --against)


def test_against_answers_every_input_with_both_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> None:
    run = demo_run(tmp_path_factory, "demo")
    got = answers(run, "a lovely product", "--checkpoint", "best", "--against", "latest")
    assert [a["slot"] for a in got] == ["a", "b"]
    best, latest = checkpoints.select(run, "best"), checkpoints.select(run, "last")
    assert [a["checkpoint"] for a in got] == [best.name, latest.name]


def test_bad_input_is_refused_before_any_model_loads(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    run = demo_run(tmp_path_factory, "demo")
    cases = {("--checkpoint", "999"): "no checkpoint-999", ("--temperature", "-1"): "--temperature",
             ("--checkpoint", str(tmp_path / "nope/")): "no such folder", ("--against", "nosuchrun"): "No run matches"}
    for args, said in cases.items():
        proc = ftui("try", str(run), "x", *args)
        assert proc.returncode == 2 and said in proc.stderr and "loaded" not in proc.stderr, (args, proc.stderr)
    empty = tmp_path / "runs" / "empty-run"
    empty.mkdir(parents=True)
    for name in ("spec.yaml", "status.json"):
        (empty / name).write_text((run / name).read_text())
    proc = ftui("try", str(empty), "x")
    assert proc.returncode == 2 and "nothing to load" in proc.stderr, proc.stderr


def test_a_seq2seq_run_streams_the_target_its_model_generates(tmp_path: Path) -> None:
    """A tiny T5 trained by the hf runner on a copy task: the streamed answer is the model's own greedy output."""
    import pandas as pd
    import torch
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from runners.train import hf
    from tests.conftest import DEMO_DATA, tiny_model_dir, tiny_spec

    frame = pd.read_csv(DEMO_DATA).head(160)
    frame = pd.DataFrame({"source": frame["text"], "summary": frame["text"].str.split().str[-3:].str.join(" ")})
    frame.to_csv(tmp_path / "train.csv", index=False)
    model_dir = tiny_model_dir(tmp_path, "t5", {"model_type": "t5", "vocab_size": 90, "d_model": 32, "d_kv": 16,
                                                "d_ff": 64, "num_layers": 1, "num_decoder_layers": 1, "num_heads": 2,
                                                "pad_token_id": 0, "eos_token_id": 3, "decoder_start_token_id": 0})
    spec = specmod.from_dict(tiny_spec(task="seq2seq", model={"name_or_path": str(model_dir)},
                                       dataset={"train": str(tmp_path / "train.csv"), "text_column": "source"},
                                       training={"learning_rate": 0.01, "num_train_epochs": 4}))
    run = tmp_path / "runs" / "seq2seq-run"
    run.mkdir(parents=True)
    (run / "spec.yaml").write_text(specmod.dump(spec))
    hf.train(spec, run)
    text = str(frame["source"].iloc[0])
    with TrySession() as session:
        facts = session.load(run)
        assert facts["task"] == "seq2seq" and facts["path"] == str(checkpoints.select(run, None).path)
        lines = list(session.ask(text, max_new_tokens=8))
    result = lines[-1]["result"]
    assert [m["event"] for m in lines][-1] == "done" and any(m["event"] == "token" for m in lines)

    final = facts["path"]
    tok, model = AutoTokenizer.from_pretrained(str(final)), AutoModelForSeq2SeqLM.from_pretrained(str(final)).eval()
    with torch.inference_mode():
        out = model.generate(**tok(text, return_tensors="pt", return_token_type_ids=False), max_new_tokens=8, do_sample=False)
    assert result["text"].strip() == tok.decode(out[0], skip_special_tokens=True).strip()
