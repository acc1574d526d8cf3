"""What a loaded model answers, per task: the model side of ``ftui try`` (runners/results/try_worker.py).

- causal LM and sft runs **generate**, streamed token by token (transformers' TextIteratorStreamer), through
  the chat template when the tokenizer has one; seq2seq generates the target. Parameters: ``max_new_tokens``,
  ``temperature`` (0: greedy), ``top_p``, ``repetition_penalty``, ``stop`` strings, ``seed``, and controlled
  generation: ``forbid`` words (never produced: ``bad_words_ids``) and ``force`` words (each produced before
  the answer ends: :class:`ForceWords`, which works while streaming and sampling, where transformers' own
  constrained beam search needs beams, no streamer, and now a hub download).
- classification: every label with its probability, highest first (a regression head: its value).
- embedding: the cosine similarity to ``pair`` when given, and the nearest rows of the run's eval set.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runners.errors import UserError
from runners.results.loading import Loaded, input_device

DEFAULTS = {"max_new_tokens": 64, "temperature": 0.0, "top_p": 1.0, "repetition_penalty": 1.0}
NEAREST_ROWS = 5
NEAREST_MAX_ROWS = 5000  # the eval set is embedded once per session, up to this many rows
PARAMS = ("max_new_tokens", "temperature", "top_p", "repetition_penalty", "stop", "forbid", "force", "seed",
          "chat", "system", "pair", "k")


def check_params(params: dict[str, Any]) -> dict[str, Any]:
    """Typed parameters with defaults; a UserError naming a parameter that is unknown or out of range."""
    unknown = sorted(set(params) - set(PARAMS))
    if unknown:
        raise UserError(f"unknown parameter {', '.join(unknown)}: use {', '.join(PARAMS)}")
    out: dict[str, Any] = {**DEFAULTS, **{k: v for k, v in params.items() if v is not None}}
    rules = {"max_new_tokens": (int, 1, 8192), "temperature": (float, 0.0, 10.0), "top_p": (float, 0.0, 1.0),
             "repetition_penalty": (float, 0.01, 10.0), "k": (int, 1, 100), "seed": (int, 0, 2**31 - 1)}
    for key, (kind, low, high) in rules.items():
        if key not in out:
            continue
        try:
            value = kind(out[key])
        except (TypeError, ValueError):
            raise UserError(f"{key} must be a number, got {out[key]!r}") from None
        if not low <= value <= high or (key == "top_p" and value == 0):
            raise UserError(f"{key} = {value} is out of range: {'(0' if key == 'top_p' else f'[{low}'}, {high}]")
        out[key] = value
    if isinstance(out.get("chat"), str):  # typed in the Try tab's settings: chat=false
        spelled = out["chat"].strip().lower()
        if spelled not in ("true", "false", "yes", "no", "1", "0", "on", "off"):
            raise UserError(f"chat must be true or false, got {out['chat']!r}")
        out["chat"] = spelled in ("true", "yes", "1", "on")
    for key in ("stop", "forbid", "force"):
        value = out.get(key) or []
        out[key] = [value] if isinstance(value, str) else [str(v) for v in value if str(v)]
    return out


def word_ids(tokenizer: Any, words: list[str]) -> list[list[int]]:
    """Token ids of each word as it appears mid-text and at the start (both spellings for BPE tokenizers)."""
    seen: list[list[int]] = []
    for word in words:
        for spelled in (word, " " + word):
            ids = tokenizer(spelled, add_special_tokens=False).input_ids
            if ids and ids not in seen and tokenizer.unk_token_id not in ids:
                seen.append(ids)
    return seen


class ForceWords:
    """A logits processor that makes each forced phrase appear before generation ends.

    While a phrase is missing, it is written out token by token once the budget left (max_new_tokens minus
    the tokens so far) only just covers the missing phrases, or when the model would end (EOS) first. A
    phrase the model writes by itself counts as done. The sampling in between is the model's own."""

    def __init__(self, phrases: list[list[int]], prompt_len: int, max_new: int, eos: set[int]) -> None:
        self.pending = [p for p in phrases if p]
        self.prompt_len = prompt_len
        self.max_new = max_new
        self.eos = eos
        self.queue: list[int] = []

    @staticmethod
    def _contains(seq: list[int], part: list[int]) -> bool:
        n = len(part)
        return any(seq[i:i + n] == part for i in range(len(seq) - n + 1))

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        made = input_ids[0, self.prompt_len:].tolist()
        if not self.queue:
            self.pending = [p for p in self.pending if not self._contains(made, p)]
            if self.pending:
                left = self.max_new - len(made)
                need = sum(len(p) for p in self.pending)
                if left <= need or int(scores[0].argmax()) in self.eos:
                    self.queue = list(self.pending.pop(0))
        if not self.queue:
            return scores
        forced = self.queue.pop(0)
        out = torch.full_like(scores, float("-inf"))
        out[:, forced] = 0.0
        return out


class Session:
    """One loaded model and what it answers; the eval set's embeddings are cached for nearest-row lookups."""

    def __init__(self, loaded: Loaded, run_dir: Path) -> None:
        self.loaded = loaded
        self.run_dir = run_dir
        self._rows: tuple[list[str], list[str], Any] | None = None

    def ask(self, text: str, params: dict[str, Any], on_token: Callable[[str], None],
            cancelled: Callable[[], bool]) -> dict[str, Any]:
        if not text.strip():
            raise UserError("the input text is empty")
        p = check_params(params)
        task = self.loaded.task
        if task in ("causal-lm", "seq2seq"):
            return self.generate(text, p, on_token, cancelled)
        if task == "seq-cls":
            return self.classify(text)
        if task == "embedding":
            return self.embed(text, p)
        raise UserError(f"ftui try has no pipeline for task '{task}' yet")

    # -- generation -------------------------------------------------------------------------------

    def _inputs(self, text: str, p: dict[str, Any]) -> tuple[Any, str]:
        tok = self.loaded.tokenizer
        if self.loaded.chat and p.get("chat", True):
            messages = ([{"role": "system", "content": p["system"]}] if p.get("system") else [])
            messages.append({"role": "user", "content": text})
            encoded = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                              return_dict=True)
            return encoded, "chat template"
        return tok(text, return_tensors="pt"), "plain text"

    def generate(self, text: str, p: dict[str, Any], on_token: Callable[[str], None],
                 cancelled: Callable[[], bool]) -> dict[str, Any]:
        import torch
        from transformers import LogitsProcessorList, StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        tok, model = self.loaded.tokenizer, self.loaded.model
        encoded, prompt_form = self._inputs(text, p)
        # token_type_ids (BERT-style tokenizers) are no input of a generating model
        encoded = {k: v.to(input_device(self.loaded)) for k, v in encoded.items() if k != "token_type_ids"}
        eos = tok.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}

        stops, start = p["stop"], int(encoded["input_ids"].shape[1]) if self.loaded.task == "causal-lm" else 0
        tail = max((len(x) for x in stops), default=0) + 8  # tokens decoded to look for a stop string

        class Stop(StoppingCriteria):
            """Cancelled, or a stop string in the text so far (transformers' stop_strings needs a BPE vocab)."""

            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                hit = bool(cancelled()) or bool(stops) and any(
                    x in tok.decode(input_ids[0, start:][-tail:], skip_special_tokens=True) for x in stops)
                return torch.full((input_ids.shape[0],), hit, dtype=torch.bool)

        kwargs: dict[str, Any] = {"max_new_tokens": p["max_new_tokens"], "repetition_penalty": p["repetition_penalty"],
                                  "pad_token_id": tok.pad_token_id if tok.pad_token_id is not None else eos,
                                  "stopping_criteria": StoppingCriteriaList([Stop()])}
        if p["temperature"] > 0:
            kwargs.update(do_sample=True, temperature=p["temperature"], top_p=p["top_p"])
            torch.manual_seed(int(p.get("seed", 0)))
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        spelled = {w: word_ids(tok, [w]) for w in p["forbid"] + p["force"]}  # every spelling of each word
        unknown = [w for w, ids in spelled.items() if not ids]
        banned = [ids for w in p["forbid"] for ids in spelled[w]]
        if banned:
            kwargs["bad_words_ids"] = banned
        forced = [ids for word in p["force"] for ids in spelled[word][:1]]  # one spelling per word
        if forced:
            offset = start if self.loaded.task == "causal-lm" else 1  # a decoder starts from one start token
            kwargs["logits_processor"] = LogitsProcessorList(
                [ForceWords(forced, offset, p["max_new_tokens"], eos_ids)])
        streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True, timeout=600)
        failure: list[BaseException] = []

        def run() -> None:
            try:
                with torch.inference_mode():
                    model.generate(**encoded, streamer=streamer, **kwargs)
            except BaseException as exc:  # noqa: BLE001 - reported by the caller's thread
                failure.append(exc)
                streamer.end()

        started = time.monotonic()
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        pieces: list[str] = []
        first: float | None = None
        for piece in streamer:
            if not piece:
                continue
            if first is None:
                first = time.monotonic() - started
            pieces.append(piece)
            on_token(piece)
        thread.join()
        if failure:
            raise failure[0]
        answer = "".join(pieces)
        stopped = "cancelled" if cancelled() else "stop string" if any(s in answer for s in p["stop"]) else None
        for s in p["stop"]:
            if s in answer:
                answer = answer[:answer.index(s)]
        tokens = len(tok(answer, add_special_tokens=False).input_ids) if answer else 0
        seconds = time.monotonic() - started
        ended = stopped or ("max_new_tokens" if tokens >= p["max_new_tokens"] else "end of text")
        return {"text": answer, "tokens": tokens, "first_token_s": round(first, 4) if first is not None else None,
                "seconds": round(seconds, 4), "tokens_per_s": round(tokens / seconds, 2) if seconds > 0 else None,
                "prompt": prompt_form, **({"unknown_words": unknown} if unknown else {}), "stopped": ended}

    # -- classification ---------------------------------------------------------------------------

    def classify(self, text: str) -> dict[str, Any]:
        import torch

        tok, model = self.loaded.tokenizer, self.loaded.model
        limit = self.loaded.spec.dataset.max_seq_length or getattr(tok, "model_max_length", 512)
        encoded = tok(text, return_tensors="pt", truncation=True, max_length=min(int(limit), 100_000))
        encoded = {k: v.to(input_device(self.loaded)) for k, v in encoded.items()}
        with torch.inference_mode():
            logits = model(**encoded).logits[0].float()
        if logits.numel() == 1:
            return {"value": float(logits.item())}
        probs = torch.softmax(logits, dim=-1).tolist()
        names = self.loaded.labels or [f"LABEL_{i}" for i in range(len(probs))]
        ranked = sorted(zip(names, probs), key=lambda pair: -pair[1])
        return {"labels": [{"label": name, "score": round(score, 6)} for name, score in ranked]}

    # -- embedding --------------------------------------------------------------------------------

    def _eval_rows(self) -> tuple[list[str], list[str], Any]:
        """The run's eval set (texts, labels) and their embeddings, computed on first use."""
        if self._rows is None:
            from runners import data

            spec = self.loaded.spec
            train_df, eval_df = data.load_splits(spec)
            roles = data.detect_columns(train_df, spec.dataset, spec.task, spec.dataset.train)
            column = roles.get("text") or roles.get("anchor")
            if column is None:
                raise UserError("the run's data has no text column to look up nearest rows in")
            frame = eval_df.head(NEAREST_MAX_ROWS)
            texts = [str(t) for t in frame[column].tolist()]
            labels = [str(v) for v in frame[roles["label"]].tolist()] if roles.get("label") else []
            vectors = self.loaded.model.encode(texts, convert_to_tensor=True, normalize_embeddings=True,
                                               batch_size=64, show_progress_bar=False)
            self._rows = (texts, labels, vectors)
        return self._rows

    def embed(self, text: str, p: dict[str, Any]) -> dict[str, Any]:
        model = self.loaded.model
        out: dict[str, Any] = {}
        vec = model.encode([text], convert_to_tensor=True, normalize_embeddings=True, show_progress_bar=False)
        if p.get("pair"):
            other = model.encode([str(p["pair"])], convert_to_tensor=True, normalize_embeddings=True,
                                 show_progress_bar=False)
            out["similarity"] = round(float((vec @ other.T).item()), 6)
        try:
            texts, labels, vectors = self._eval_rows()
        except (UserError, OSError, ValueError, KeyError) as exc:
            out["nearest_error"] = f"no eval rows to search: {exc}"
            return out
        scores = (vectors @ vec[0]).tolist()
        order = sorted(range(len(texts)), key=lambda i: -scores[i])[:int(p.get("k", NEAREST_ROWS))]
        out["nearest"] = [{"row": i, "text": texts[i], "score": round(scores[i], 6),
                           **({"label": labels[i]} if labels else {})} for i in order]
        out["searched_rows"] = len(texts)
        return out
