"""Activation memory of one training step, counted tensor by tensor from the architecture.

Bytes saved for backward per token, per layer, following what the Hugging Face implementations
actually keep (Korthikanti et al. 2022 adapted): the residual stream stays in the weights' dtype
under autocast (fp32 residual + bf16 matmuls), RMSNorm upcasts to fp32, eager attention stores the
softmax probabilities (and a dropout mask) per head and key, SDPA/FlashAttention store only the
output and a log-sum-exp. Causal-LM losses upcast logits to fp32 before log-softmax.
"""
from __future__ import annotations

import subprocess
from dataclasses import dataclass

from runners.plan.architecture import Arch


@dataclass(frozen=True)
class Precision:
    """Byte widths in one step: ``residual`` (hidden states between layers), ``matmul`` (linear
    inputs/outputs, the autocast dtype), ``weights`` (parameters as loaded)."""

    residual: int
    matmul: int
    weights: int
    autocast: bool


def layer_bytes_per_token(arch: Arch, p: Precision, seq: int, attn: str, cross_attention: bool = False) -> float:
    """Bytes one transformer layer saves for backward, per token of the micro-batch."""
    h, i, a = arch.hidden, arch.intermediate, p.matmul
    q_out, kv_out = arch.heads * arch.head_dim, arch.kv_heads * arch.head_dim
    upcast = 4 if (arch.norm == "rmsnorm" and p.residual < 4) else 0  # RMSNorm's float32 copy of its input
    norm = p.residual * h + upcast * h + (a * h if (p.autocast or p.residual != a or arch.norm == "rmsnorm") else 0)
    drop = arch.dropout
    total = 0.0
    # attention block: norm, q/k/v projections, rotary copies, scores, output projection input
    total += norm + a * (q_out + 2 * kv_out)
    if arch.family in ("llama", "mistral", "mixtral", "qwen2", "gemma", "gemma2"):
        total += a * (q_out + kv_out)  # q and k after rotary embedding
    if attn == "eager":
        probs = arch.heads * seq
        # softmax runs in float32 under autocast (and in llama's eager code); its output is saved,
        # then cast to the matmul dtype for probs @ v, which saves the cast copy too
        soft = 4 if (p.autocast or arch.norm == "rmsnorm") else a
        total += soft * probs + (a * probs if soft != a else 0)
        if drop:
            total += probs + soft * probs  # dropout mask and dropped probabilities
        total += a * (q_out + 2 * kv_out)  # matmul on transposed heads saves contiguous copies of q, k, v
    else:
        total += 4 * arch.heads  # log-sum-exp per head
    total += a * q_out  # attention output, input of the output projection
    if drop:
        total += h  # residual dropout mask
    if cross_attention:
        total += norm + a * q_out * 2 + a * 2 * kv_out + (a * arch.heads * seq if attn == "eager" else 4 * arch.heads)
    # MLP block
    total += norm
    if arch.gated_mlp:
        mlp = 4 * a * i  # gate, up, activation, product
    else:
        mlp = 2 * a * i  # fc1 output (activation input), activation output (fc2 input)
        if arch.family == "gpt2":
            mlp += 2 * a * i  # gelu_new's tanh-approximation intermediates
    total += mlp * arch.experts_per_token + (4 * arch.experts if arch.experts > 1 else 0)
    if drop:
        total += h
    if arch.family == "gemma2":
        total += 2 * norm  # post-attention and post-feedforward norms
    return total


@dataclass
class ActivationEstimate:
    """Saved activations at the start of backward, and what the loss and backward add on top."""

    saved: float  # layers + embeddings, in bytes
    loss_forward: float  # logits, their float32 copy and the log-softmax output, while the loss is computed
    loss_saved: float  # what the loss keeps for backward: the float32 log-softmax output
    backward_extra: float  # loss gradients (float32) or one recomputed layer (checkpointing), whichever is larger
    eval_transient: float  # peak of one eval forward (nothing saved)


def estimate(arch: Arch, p: Precision, batch: int, seq: int, eval_batch: int, attn: str, task: str,
             gradient_checkpointing: bool) -> ActivationEstimate:
    tokens = batch * seq
    layer = layer_bytes_per_token(arch, p, seq, attn)
    decoder_layers = arch.decoder_layers
    dec_layer = layer_bytes_per_token(arch, p, seq, attn, cross_attention=True) if decoder_layers else 0.0
    embed = p.residual * arch.hidden * (2 if arch.dropout else 1) + p.residual * arch.hidden  # + final norm
    if gradient_checkpointing:
        kept: float = (arch.layers + decoder_layers) * p.residual * arch.hidden  # only each layer's input
        recompute = max(layer, dec_layer)
    else:
        kept = arch.layers * layer + decoder_layers * dec_layer
        recompute = 0.0
    vocab_row = arch.vocab if task in ("causal-lm", "seq2seq") else 0
    upcast = 4 if p.matmul < 4 else 0
    # The loss upcasts the logits (matmul dtype) to float32 and log-softmaxes them; only the
    # log-softmax output survives the forward. Its backward holds the incoming gradient, the
    # result and the saved output at once (3 float32 copies), before casting back.
    loss_forward = tokens * vocab_row * (p.matmul + upcast + 4)
    loss_saved = tokens * vocab_row * 4
    backward_extra = max(tokens * vocab_row * 8, tokens * recompute)
    eval_transient = eval_batch * seq * (2 * layer / 3 + vocab_row * (p.matmul + upcast + 4))
    return ActivationEstimate(saved=tokens * (kept + embed), loss_forward=loss_forward, loss_saved=loss_saved,
                              backward_extra=backward_extra, eval_transient=eval_transient)


TRACE_TASKS = ("causal-lm", "seq-cls", "seq2seq", "token-cls")
_LEARNED: set[str] = set()  # configs traced by this process already


@dataclass
class Traced:
    """Bytes at full depth, batch and sequence, from the model's own meta-device step (runners.plan.trace)."""

    saved: float  # saved for backward at the end of forward (autocast weight copies included)
    forward_peak: float  # the forward's peak: saved + the loss's logits copies
    backward_peak: float  # backward's peak without parameter gradients
    grads_at_peak: float  # parameter gradients alive at that moment
    end_backward: float  # all parameter gradients + what is left at the end of backward
    eval_peak: float
    largest_block: float  # the largest single tensor of a training / eval step
    route: str  # "cached" or "learned in N s"


def trace_mode(dtype: str, mixed: str | None, half_compute: bool = False, four_bit: bool = False) -> str:
    """The traced setting: "half" when the model computes in the half dtype (half weights, DeepSpeed or FSDP
    mixed precision, a 4-bit base), "mixed" for float32 weights under autocast, else "fp32"."""
    if dtype != "float32" or (half_compute and mixed) or four_bit:
        return "half"
    return "mixed" if mixed else "fp32"


def traced(arch: Arch, task: str, mode: str, attn: str, gc: bool, batch: int, seq: int, eval_batch: int,
           learn: bool) -> Traced | None:
    """The traced figures for this run, learning the structure first (subprocess) if allowed; None when
    the config cannot be traced (the caller falls back to the closed form and a wider band)."""
    from runners.plan import structure

    if not arch.config or task not in TRACE_TASKS:
        return None
    attn_key = "eager" if attn == "eager" else "sdpa"
    a = structure.anchor(seq, arch.config)
    main = structure.key(task, mode, attn_key, gc, a)
    known = structure.load(arch.config)
    route = "cached"
    # The same setting at another sequence window: reuse it where memory is linear in the sequence (fused
    # attention). Where S x S tensors exist (eager scores, T5's position bias) a fit does not carry across
    # windows (roberta-base eager at 256 tokens: 6.5 GiB from the 512 window, 4.2 GiB from its own): trace.
    linear_in_seq = attn_key == "sdpa" and task != "seq2seq"
    if main not in known["fits"] and linear_in_seq:
        prefix = main.rsplit("/", 1)[0] + "/"
        near = sorted((abs(int(k.rsplit("/", 1)[1]) - a), k) for k in known["fits"] if k.startswith(prefix))
        if near:
            main, route = near[0][1], f"cached, window {near[0][1].rsplit('/', 1)[1]}"
    if main in known["failed"]:
        return None  # torch could not run this setting of this model: the closed form, at once
    if main not in known["fits"]:
        tag = structure.config_hash(arch.config)
        if not (learn and structure.tracing_allowed()) or tag in _LEARNED:
            return None  # one trace per config and process: a lever's other setting uses the closed form
        _LEARNED.add(tag)
        siblings = [main, structure.key(task, mode, attn_key, not gc, a)]
        siblings += [structure.key(task, m, attn_key, gc, a) for m in ("mixed", "half") if mode == "fp32"]
        siblings += [structure.key(task, mode, "sdpa", gc, a)] if attn_key == "eager" else []
        try:
            spent = structure.learn(arch.config, siblings)
        except (RuntimeError, OSError, ValueError, subprocess.SubprocessError):  # a config torch cannot build
            return None
        known = structure.load(arch.config)
        route = f"learned in {spent:.0f} s"
        if main not in known["fits"]:
            return None
    fit = known["fits"][main]
    depth = next((int(arch.config[k]) for k in ("num_hidden_layers", "num_layers", "n_layer", "n_layers")
                  if arch.config.get(k) is not None), arch.layers)
    total = max(arch.params.values()) if arch.params else 0
    kcap = 2.0 * total if mode == "mixed" else 4.0 * max(arch.largest_layer, arch.vocab * arch.hidden)

    def q(f: dict, name: str, layers: int, b: int, s: int) -> float:
        return structure.q(f, name, layers, b, s, None if name in ("grads_at_peak", "end_backward") else kcap)

    return Traced(saved=q(fit, "saved", depth, batch, seq), forward_peak=q(fit, "forward_peak", depth, batch, seq),
                  backward_peak=q(fit, "backward_peak_no_grads", depth, batch, seq),
                  grads_at_peak=q(fit, "grads_at_peak", depth, batch, seq),
                  end_backward=q(fit, "end_backward", depth, batch, seq),
                  eval_peak=q(fit, "eval_peak", depth, eval_batch, seq),
                  largest_block=max(q(fit, "largest_block", depth, batch, seq),
                                    q(fit, "eval_largest_block", depth, eval_batch, seq)), route=route)


def largest_block(arch: Arch, p: Precision, batch: int, seq: int, eval_batch: int, attn: str, task: str) -> float:
    """The closed form's largest single tensor: float32 logits, eager attention scores or the MLP's output."""
    lm = arch.vocab * 4 if task in ("causal-lm", "seq2seq") else 0
    scores = arch.heads * seq * 4 if attn == "eager" else 0
    per_token = max(lm, scores, arch.intermediate * p.matmul * max(arch.experts_per_token, 1))
    return float(max(batch, eval_batch) * seq * per_token)
