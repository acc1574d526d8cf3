"""CUDA's behaviour on the meta device, for runners.plan.trace: autocast's cast lists, the fused SDPA and dropout
kernels' saved tensors, and a tracker of every storage ops create (imports torch)."""
from __future__ import annotations

from typing import Any

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

HALF = {"linear", "matmul", "__matmul__", "mm", "bmm", "addmm", "baddbmm", "addbmm", "einsum", "conv1d", "conv2d",
        "addmv", "mv", "chain_matmul"}
FP32 = {"softmax", "log_softmax", "layer_norm", "group_norm", "pow", "exp", "log", "rsqrt", "reciprocal", "cross_entropy",
        "nll_loss", "logsumexp", "cumsum", "sum", "softplus", "mse_loss", "binary_cross_entropy_with_logits", "norm",
        "log1p", "expm1", "erfinv", "cosine_similarity", "kl_div"}
def _cast(obj: Any, dtype: torch.dtype) -> Any:
    if isinstance(obj, torch.Tensor) and obj.is_floating_point() and obj.dtype != dtype:
        return obj.to(dtype)
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cast(o, dtype) for o in obj)
    return obj


class _FusedAttention(torch.autograd.Function):
    """What CUDA's flash / memory-efficient SDPA keeps: inputs, output, log-sum-exp (and the bias it was given)."""

    @staticmethod
    def forward(ctx, q, k, v, mask):  # noqa: ANN001 - autograd signature
        if k.shape[1] != q.shape[1]:  # enable_gqa: the kernel reads the shared heads, nothing is copied
            pass
        out = q.new_empty(q.shape[:-1] + (v.shape[-1],))
        lse = torch.empty(q.shape[:-1], dtype=torch.float32, device=q.device)
        ctx.save_for_backward(q, k, v, out, lse, *(() if mask is None else (mask,)))
        ctx.mask_grad = mask is not None and mask.requires_grad
        return out

    @staticmethod
    def backward(ctx, grad):  # noqa: ANN001
        q, k, v, out, lse, *mask = ctx.saved_tensors
        dmask = torch.empty_like(mask[0]) if mask and ctx.mask_grad else None
        return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v), dmask


def _math_attention(q, k, v, mask, p, scale):  # noqa: ANN001
    """SDPA's composite path, which CUDA takes for an additive bias that needs a gradient (T5's position
    bias): it keeps the float32 probabilities, the dropout mask and the dropped probabilities per head."""
    scale = scale if scale is not None else q.shape[-1] ** -0.5
    attn = torch.softmax(torch.matmul(q, k.transpose(-2, -1)) * scale + mask, dim=-1)
    if p:
        attn = torch.native_dropout(attn, p, True)[0]
    return torch.matmul(attn.to(v.dtype), v)  # under autocast the matmul takes a half copy of the probabilities


class CudaLike(TorchFunctionMode):
    """CUDA autocast's cast lists (when ``half`` is set) and CUDA's fused SDPA, on any device."""

    def __init__(self, half: torch.dtype | None) -> None:
        super().__init__()
        self.half = half

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name == "dropout" and len(args) > 0 and isinstance(args[0], torch.Tensor):
            p = kwargs.get("p", args[1] if len(args) > 1 else 0.5)
            training = kwargs.get("training", args[2] if len(args) > 2 else True)
            if training and p > 0:  # CUDA's fused dropout keeps a 1-byte mask, not a float noise tensor
                return torch.native_dropout(args[0], p, True)[0]
            return args[0]
        if name == "scaled_dot_product_attention":
            q, k, v = args[:3]
            mask = kwargs.get("attn_mask", args[3] if len(args) > 3 else None)
            if self.half is not None:
                q, k, v = _cast((q, k, v), self.half)
            if isinstance(mask, torch.Tensor) and mask.dtype == torch.bool:
                mask = None  # a boolean mask is read, not kept as a float bias (and is tiny)
            if isinstance(mask, torch.Tensor) and mask.requires_grad:
                return _math_attention(q, k, v, mask, kwargs.get("dropout_p", 0.0), kwargs.get("scale"))
            return _FusedAttention.apply(q, k, v, mask)
        if self.half is not None and torch.is_autocast_enabled("cpu") is False:
            if name in HALF:
                args, kwargs = _cast(args, self.half), {k: _cast(v, self.half) for k, v in kwargs.items()}
            elif name in FP32 and not kwargs.get("dtype"):
                args = _cast(args, torch.float32)
        return func(*args, **kwargs)


class Tracker(TorchDispatchMode):
    """Live bytes of every storage ops create (parameters excluded), and the peak, as the step runs.

    Deaths are seen lazily (a C++ weak reference expires): the running sum is an upper bound, made exact
    only when it could be a new peak, so the cost stays near one dictionary insert per op."""

    def __init__(self, exclude: set[int]) -> None:
        super().__init__()
        self.exclude = exclude
        self.live: dict[int, tuple[StorageWeakRef, int]] = {}
        self.upper = 0
        self.peak = 0
        self.largest = 0  # the largest single tensor created: what a fragmented allocator must still place

    def prune(self) -> None:
        for k in [k for k, (ref, _) in self.live.items() if ref.expired()]:
            self.dead(k, self.live.pop(k)[1])

    def dead(self, key: int, n: int) -> None:
        self.upper -= n

    def current(self) -> int:
        self.prune()
        return self.upper

    def add(self, t: torch.Tensor) -> None:
        st = t.untyped_storage()
        key = st._cdata
        if key not in self.live and key not in self.exclude:
            n = st.nbytes()
            self.live[key] = (StorageWeakRef(st), n)
            self.upper += n
            self.largest = max(self.largest, n)

    def check(self) -> None:
        if self.upper > self.peak:
            self.prune()
            self.peak = max(self.peak, self.upper)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        out = func(*args, **(kwargs or {}))
        for t in torch.utils._pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.add(t)
        self.check()
        return out


def _sdpa_without_softcap() -> None:
    """Releases that ran gemma-2 under sdpa ignored its attention softcap; the kernel's memory is the same."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    sdpa = ALL_ATTENTION_FUNCTIONS["sdpa"]
    if getattr(sdpa, "_ftui", False):
        return

    def run(*args: Any, **kwargs: Any) -> Any:
        kwargs.pop("softcap", None)
        return sdpa(*args, **kwargs)

    run._ftui = True  # type: ignore[attr-defined]
    ALL_ATTENTION_FUNCTIONS["sdpa"] = run


class _all_ones:
    """The Trainer passes an all-ones attention mask; the masking code asks ``mask.all()`` to drop it. Meta
    tensors have no values, so that question is answered as the real data would (True)."""

    def __enter__(self) -> None:
        self.orig = torch.Tensor.all

        def all_(t: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            if t.is_meta and not args and not kwargs:
                return torch.tensor(True)
            return self.orig(t, *args, **kwargs)

        # monkeypatch: torch's stub types Tensor.all as an overloaded method, not a plain function
        torch.Tensor.all = all_  # type: ignore[method-assign, assignment]
        import transformers.masking_utils as masking

        fast = self.fast = getattr(masking, "fast_all", None)
        if fast is not None:

            def fast_all(tensor: Any) -> Any:  # True (not a tensor) for a meta mask
                return True if tensor.is_meta else fast(tensor)

            masking.fast_all = fast_all

    def __exit__(self, *exc: Any) -> None:
        torch.Tensor.all = self.orig  # type: ignore[method-assign]
        if self.fast is not None:
            import transformers.masking_utils as masking

            masking.fast_all = self.fast


def _recompute_like(checkpoint: Any, half: torch.dtype | None) -> Any:
    def run(fn: Any, *args: Any, **kwargs: Any) -> Any:
        def inner(*a: Any, **k: Any) -> Any:
            with CudaLike(half):
                return fn(*a, **k)
        return checkpoint(inner, *args, **kwargs)
    return run


class _Backward(Tracker):
    """In backward, tensors shaped like a parameter are gradients: peaks with them (full fine-tuning) and
    without them (LoRA: the frozen base has none; the planner adds the adapters' own)."""

    def __init__(self, exclude: set[int], shapes: set[tuple[int, ...]]) -> None:
        super().__init__(exclude)
        self.shapes = shapes
        self.grads: set[int] = set()
        self.grad_bytes = 0  # upper bounds, like ``upper``
        self.peak_no_grads = 0
        self.grads_at_peak = 0

    def start(self, live: dict[int, tuple[StorageWeakRef, int]], peak: int) -> None:
        self.live = dict(live)
        self.upper = sum(n for _, n in self.live.values())
        self.peak = self.peak_no_grads = peak

    def dead(self, key: int, n: int) -> None:
        self.upper -= n
        if key in self.grads:
            self.grad_bytes -= n

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        out = func(*args, **(kwargs or {}))
        for t in torch.utils._pytree.tree_leaves(out):
            if not isinstance(t, torch.Tensor):
                continue
            key = t.untyped_storage()._cdata
            fresh = key not in self.live and key not in self.exclude
            self.add(t)
            if fresh and tuple(t.shape) in self.shapes:
                self.grads.add(key)
                self.grad_bytes += self.live[key][1]
        self.check()
        if self.upper - self.grad_bytes > self.peak_no_grads:
            self.prune()
            if self.upper - self.grad_bytes > self.peak_no_grads:
                self.peak_no_grads = self.upper - self.grad_bytes
                self.grads_at_peak = self.grad_bytes
        return out
