"""Regenerates the bundled instruction-tuning demo: instructions.jsonl and the tiny chat model in chat_model/.

The data are short chats in the ``messages`` format (system / user / assistant turns) built from templates:
sums of small numbers, reversing three words, colour names in French, capitals, opposites, and a few two-turn
chats that start with a greeting. The answers follow from the question, so a small model can learn them.
Deterministic (seed 11).

The model is a 2-layer Llama-style config (hidden 64, random init: ``model.init: random``) with a word-level
tokenizer built here with the ``tokenizers`` library from the words of the data, saved as tokenizer.json, and a
ChatML-style chat template whose assistant turns are marked with ``{% generation %}`` (so assistant-only loss
works and the end-of-turn token is trained).
Run: python assets/demo/make_chat_demo.py
"""
from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODEL = HERE / "chat_model"
SYSTEM = "you are a helpful assistant ."
COLOURS = {"red": "rouge", "blue": "bleu", "green": "vert", "black": "noir", "white": "blanc", "yellow": "jaune",
           "grey": "gris", "pink": "rose"}
CAPITALS = {"france": "paris", "spain": "madrid", "italy": "rome", "japan": "tokyo", "egypt": "cairo",
            "peru": "lima", "kenya": "nairobi", "norway": "oslo", "canada": "ottawa", "chile": "santiago"}
OPPOSITES = {"hot": "cold", "big": "small", "fast": "slow", "up": "down", "early": "late", "happy": "sad",
             "light": "dark", "open": "closed", "old": "new", "loud": "quiet"}
WORDS = ["cat", "dog", "tree", "river", "book", "lamp", "cloud", "stone", "apple", "chair", "road", "moon"]
NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
                "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen"]
SPECIAL = ["<pad>", "<unk>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{% else %}{{ message['content'] + '<|im_end|>' }}{% endif %}"
    "{{ '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def question(rng: random.Random) -> tuple[str, str]:
    kind = rng.randrange(5)
    if kind == 0:
        a, b = rng.randrange(10), rng.randrange(10)
        return f"what is {a} plus {b} ?", f"{a} plus {b} is {NUMBER_WORDS[a + b]} ."
    if kind == 1:
        words = rng.sample(WORDS, 3)
        return f"reverse the words : {' '.join(words)}", " ".join(reversed(words))
    if kind == 2:
        colour = rng.choice(sorted(COLOURS))
        return f"how do you say {colour} in french ?", f"{colour} in french is {COLOURS[colour]} ."
    if kind == 3:
        country = rng.choice(sorted(CAPITALS))
        return f"what is the capital of {country} ?", f"the capital of {country} is {CAPITALS[country]} ."
    word = rng.choice(sorted(OPPOSITES))
    return f"what is the opposite of {word} ?", f"the opposite of {word} is {OPPOSITES[word]} ."


def chat(rng: random.Random) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": SYSTEM}] if rng.random() < 0.4 else []
    if rng.random() < 0.15:
        messages += [{"role": "user", "content": rng.choice(["hello !", "hi there !", "good morning !"])},
                     {"role": "assistant", "content": "hello ! how can i help ?"}]
    user, answer = question(rng)
    return messages + [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]


def main() -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    rng = random.Random(11)
    rows = [{"messages": chat(rng)} for _ in range(400)]
    with (HERE / "instructions.jsonl").open("w") as fh:
        fh.writelines(json.dumps(row) + "\n" for row in rows)
    words = {"system", "user", "assistant"} | {w for row in rows for m in row["messages"] for w in m["content"].split()}
    vocab = {token: i for i, token in enumerate(SPECIAL + sorted(words))}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.add_special_tokens(SPECIAL)
    MODEL.mkdir(exist_ok=True)
    tokenizer.save(str(MODEL / "tokenizer.json"))
    (MODEL / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 256, "pad_token": "<pad>",
        "unk_token": "<unk>", "eos_token": "<|im_end|>", "bos_token": None, "chat_template": CHAT_TEMPLATE}, indent=1) + "\n")
    (MODEL / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": len(vocab), "hidden_size": 64,
        "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "head_dim": 16, "hidden_act": "silu", "max_position_embeddings": 256, "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0, "tie_word_embeddings": True, "initializer_range": 0.15, "attention_bias": False,
        "attention_dropout": 0.0, "mlp_bias": False, "pad_token_id": vocab["<pad>"], "eos_token_id": vocab["<|im_end|>"],
        "bos_token_id": None, "use_cache": True}, indent=1) + "\n")


if __name__ == "__main__":
    main()
