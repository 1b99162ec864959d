"""Faster attention softmax and SiLU for MLX's CPU backend, swapped into mlx-lm models.

    with cpu_kernels():               # on by default only where MLX runs on the CPU
        logits = model(tokens)

Why this exists: MLX's CPU backend evaluates transcendental element-wise functions
(``exp``, ``sigmoid``, ``tanh``, ``sqrt``) one element at a time, ~5–15 ns an element on
this project's x86-64 machine, while multiplications, additions, shifts and comparisons
run at memory speed (~0.2 ns an element). The causal softmax of a 512-token prompt
(``[1, 9, 512, 512]``) then costs more than the layer's matrix products
(``benchmarks/mlx_cpu_kernels.py`` times it). ``mx.compile`` alone does not help: it fuses
element-wise passes (which saves memory traffic, as in the SAE trainer's Adam update) but
its generated loop still calls the same per-element ``exp``, and measured no faster for
MLX's SiLU. So ``exp`` is written out of cheap ops (Cody–Waite style: round y = x·log2 e
to an integer n, a degree-6 polynomial for 2^(y − n) on [−0.5, 0.5], and 2^n built in the
exponent bits), which compiled SiLU then fuses into one loop; and the attention of
mlx-lm's ``scaled_dot_product_attention`` becomes two BLAS matrix products around that
softmax. On Metal and CUDA the native kernels are fused and fast, so nothing is swapped
there (``enabled=None`` asks :func:`default_enabled`).

Accuracy: ``fast_exp`` is within 2e-6 relative of float64 ``exp`` for float32 inputs in
[−86.5, 88], the rounding of x·log2 e dominating (below that range it saturates at 2^−125
instead of reaching denormals); softmax, SiLU and the attention agree with MLX's own
within float32 noise (``tests/test_cpu_kernels.py``, every architecture). Both functions
carry their own VJPs, so LoRA training through them gets exact gradients of the computed
values.

The swap replaces the module-level names ``scaled_dot_product_attention`` and ``swiglu``
in the model's mlx-lm architecture modules (that is how those modules call them), and
puts the originals back in ``finally:``. Families whose attention or MLP does not go
through those names (Gemma's softcapped attention, GELU MLPs) keep MLX's kernels.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import warnings
from contextlib import contextmanager
from typing import Iterator

import mlx.core as mx

from .backend import default_device_is_cpu

_LOG2E = 1.4426950408889634
_ROUND = 12582912.0  # 1.5 · 2^23: adding it rounds a float32 |y| < 2^22 to an integer
_ROUND_BITS = 0x4B400000  # the bits of _ROUND as a float32
# 2^f on [-0.5, 0.5] (Cephes exp2f; relative error ~1e-7), highest degree first
_EXP2_POLY = (1.535336188319500e-4, 1.339887440266574e-3, 9.618437357674640e-3,
              5.550332471162809e-2, 2.402264791363012e-1, 6.931472028550421e-1)


def _exp2(y: mx.array) -> mx.array:
    """2^y for float32 y already clamped to [-125, 127] (denormal results are ~100x slower on x86)."""
    shifted = y + _ROUND
    n = shifted - _ROUND  # round(y)
    f = y - n  # [-0.5, 0.5]
    p = _EXP2_POLY[0] * f
    for c in _EXP2_POLY[1:]:
        p = (p + c) * f
    p = p + 1.0
    # round(y) sits in the low mantissa bits of `shifted`; put n + 127 into the exponent field
    scale = mx.view((mx.view(shifted, mx.int32) - (_ROUND_BITS - 127)) << 23, mx.float32)
    return p * scale


_LN2_HIGH, _LN2_LOW = 0.693359375, -2.12194440e-4  # ln 2 split so that n · _LN2_HIGH is exact
# e^r on [-ln2/2, ln2/2] = 1 + r + r² · P(r) (Cephes expf; relative error ~1e-7), highest degree first
_EXP_POLY = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1,
             5.0000001201e-1)


def fast_exp(x: mx.array) -> mx.array:
    """exp(x) for float32 x from cheap element-wise ops; saturates below x = −86.6 (at ~2^−125) and above 88.3.

    Cody–Waite reduction: x = n · ln 2 + r with n an integer, r in [−ln2/2, ln2/2].
    """
    x = mx.clip(x, -86.6, 88.3)  # n in [-125, 127]: no denormals, no overflow of the exponent field
    shifted = x * _LOG2E + _ROUND
    n = shifted - _ROUND
    r = (x - n * _LN2_HIGH) - n * _LN2_LOW
    p = _EXP_POLY[0] * r
    for c in _EXP_POLY[1:-1]:
        p = (p + c) * r
    p = ((p + _EXP_POLY[-1]) * r * r + r) + 1.0
    scale = mx.view((mx.view(shifted, mx.int32) - (_ROUND_BITS - 127)) << 23, mx.float32)
    return p * scale


def _softmax2(z: mx.array) -> mx.array:
    """Softmax of z · ln 2 over the last axis (z in log2 units), float32."""
    z = z - z.max(axis=-1, keepdims=True)  # <= 0; masked entries stay -inf
    e = _exp2(mx.maximum(z, -125.0))  # masked -> 2^-125 ~ 2e-38, not 0: negligible, and no denormals
    return e / e.sum(axis=-1, keepdims=True)


def _silu_eager(x32: mx.array) -> mx.array:
    return x32 / (1.0 + fast_exp(-x32))


def _silu_grad_eager(x32: mx.array, g32: mx.array) -> mx.array:
    s = 1.0 / (1.0 + fast_exp(-x32))
    return g32 * s * (1.0 + x32 * (1.0 - s))


# SiLU and its gradient compiled: MLX fuses their ~20 cheap element-wise passes into one loop
# (on the CPU backend as C++ built once with the system compiler and cached; with no compiler
# mx.compile hands the function back as it is). SwiGLU on [512, 1536]: 1.45 vs 3.7 ms. The
# attention softmax is left eager: compiled, the attention got slower (15.6 vs 12.2 ms causal
# [1, 9, 512, 64]; 38 vs 21 ms unmasked), though a lone 64-query block was faster.
_silu = mx.compile(_silu_eager)
_silu_grad = mx.compile(_silu_grad_eager)


@mx.custom_function
def fast_softmax(x: mx.array) -> mx.array:
    """Softmax over the last axis, computed in float32 with the exp of :func:`fast_exp`."""
    return _softmax2(x.astype(mx.float32) * _LOG2E).astype(x.dtype)


@fast_softmax.vjp
def _fast_softmax_vjp(primals, cotangent, output):
    p = output.astype(mx.float32)
    g = cotangent.astype(mx.float32)
    return ((g - (g * p).sum(axis=-1, keepdims=True)) * p).astype(cotangent.dtype)


@mx.custom_function
def softmax_log2(z: mx.array) -> mx.array:
    """Softmax of ``z · ln 2`` (z in log2 units, float32): the attention folds log2 e into its scale."""
    return _softmax2(z)


@softmax_log2.vjp
def _softmax_log2_vjp(primals, cotangent, output):
    g = cotangent.astype(mx.float32)
    return (g - (g * output).sum(axis=-1, keepdims=True)) * output * math.log(2.0)


@mx.custom_function
def fast_silu(x: mx.array) -> mx.array:
    """x · sigmoid(x) with sigmoid from :func:`fast_exp`."""
    return _silu(x.astype(mx.float32)).astype(x.dtype)


@fast_silu.vjp
def _fast_silu_vjp(primals, cotangent, output):
    x = primals[0] if isinstance(primals, (tuple, list)) else primals
    return _silu_grad(x.astype(mx.float32), cotangent.astype(mx.float32)).astype(cotangent.dtype)


_SMALL = 16384  # below this many elements MLX's own SiLU wins (~20 cheap ops cost more to dispatch)


def fast_swiglu(gate: mx.array, x: mx.array) -> mx.array:
    """mlx-lm's ``swiglu`` (``silu(gate) * x``) with :func:`fast_silu`."""
    return fast_silu(gate) * x


def _make_swiglu(original):
    """mlx-lm's ``swiglu``, through :func:`fast_swiglu` for prompts and batches, its own for decode steps."""

    def swiglu(gate, x):
        return original(gate, x) if gate.size < _SMALL else fast_swiglu(gate, x)

    swiglu.symbiont_original = original
    return swiglu


_BLOCK_ELEMENTS = 9 * 64 * 512  # scores per query block: small enough for the caches (measured best of 64/128/256 rows)


def matmul_attention(queries: mx.array, keys: mx.array, values: mx.array, scale: float, mask,
                     block_elements: int = _BLOCK_ELEMENTS) -> mx.array:
    """Attention as BLAS matrix products around :func:`softmax_log2`, one block of queries at a time.

    queries [B, Hq, L, Dh], keys/values [B, Hkv, S, Dh] with Hq a multiple of Hkv (grouped
    queries share a key head, as in ``mx.fast.scaled_dot_product_attention``); ``mask`` is
    None, "causal" (query i sees keys up to i + S − L), a boolean array (True = attend) or an
    additive array broadcastable to [B, Hq, L, S]. Returns [B, Hq, L, Dh] in the queries' dtype.

    Why blocks: element-wise passes over a few hundred KB of scores stay in the CPU's caches,
    where passes over the whole [Hq, L, S] matrix go to memory (2.5x slower measured at
    L = S = 512), and under a causal mask a block skips the keys no query in it can see.
    """
    B, n_q, L, Dh = queries.shape
    n_kv, S = keys.shape[1], keys.shape[2]
    repeats = n_q // n_kv
    q = (queries * (scale * _LOG2E)).reshape(B, n_kv, repeats, L, Dh)  # [B, Hkv, R, L, Dh], log2 units
    keys_t = mx.expand_dims(keys, 2).swapaxes(-1, -2)  # [B, Hkv, 1, Dh, S]
    values = mx.expand_dims(values, 2)  # [B, Hkv, 1, S, Dh]
    if isinstance(mask, str) and mask != "causal":
        raise ValueError(f"unknown attention mask {mask!r}")
    causal = isinstance(mask, str)
    if mask is not None and not causal:
        mask = mask.reshape((1,) * (4 - mask.ndim) + mask.shape)  # broadcast as against [B, Hq, L, S]
        if mask.shape[1] == 1:
            mask = mx.expand_dims(mask, 2)  # [b, 1, 1, l, s]
        else:  # one mask per query head: group them as the queries are
            mask = mask.reshape(mask.shape[0], n_kv, repeats, *mask.shape[2:])
    block = max(16, block_elements // max(1, n_q * S))
    outputs = []
    for start in range(0, L, block):
        stop = min(L, start + block)
        seen = stop + (S - L) if causal else S  # keys any query of the block may see
        scores = (q[:, :, :, start:stop] @ keys_t[..., :seen]).astype(mx.float32)  # [B, Hkv, R, l, seen]
        if causal:
            rows = mx.arange(start + S - L, stop + S - L)[:, None]
            scores = mx.where(mx.arange(seen)[None, :] <= rows, scores, -mx.inf)
        elif mask is not None:
            part = mask[..., start:stop, :] if mask.shape[-2] == L else mask
            if part.dtype == mx.bool_:
                scores = mx.where(part, scores, -mx.inf)
            else:
                scores = scores + part.astype(mx.float32) * _LOG2E
        weights = softmax_log2(scores).astype(values.dtype)
        outputs.append(weights @ values[:, :, :, :seen])  # [B, Hkv, R, l, Dh]
    out = outputs[0] if len(outputs) == 1 else mx.concatenate(outputs, axis=3)
    return out.reshape(B, n_q, L, Dh).astype(queries.dtype)


def _make_sdpa(original):
    """A drop-in for mlx-lm's ``base.scaled_dot_product_attention`` that keeps its other paths."""

    def scaled_dot_product_attention(queries, keys, values, cache, scale, mask, sinks=None):
        # quantized KV caches and attention sinks keep mlx-lm's own kernels
        if sinks is not None or hasattr(cache, "bits") or queries.shape[2] == 1:
            return original(queries, keys, values, cache, scale=scale, mask=mask, sinks=sinks)
        return matmul_attention(queries, keys, values, scale, mask)

    scaled_dot_product_attention.symbiont_original = original
    return scaled_dot_product_attention


ENVIRONMENT_VARIABLE = "SYMBIONT_KERNELS"
"""``auto`` (default: the fast kernels on the CPU backend only), ``fast`` (always) or ``mlx`` (never)."""


def default_enabled() -> bool:
    """Whether the kernels are on when not asked: from $SYMBIONT_KERNELS, else where MLX runs on the CPU."""
    choice = os.environ.get(ENVIRONMENT_VARIABLE, "auto").strip().lower()
    if choice not in ("auto", "fast", "mlx"):
        warnings.warn(f"${ENVIRONMENT_VARIABLE}={choice!r} is not auto, fast or mlx; using auto", stacklevel=2)
        choice = "auto"
    if choice != "auto":
        return choice == "fast"
    return default_device_is_cpu()


_swap_lock = threading.Lock()
_scope_depth = 0
_swapped: list[tuple[object, str, object]] = []  # (module, name, original) while a scope is open


def _swap_loaded_modules() -> None:
    """Swap the names in every imported mlx-lm architecture module not swapped yet."""
    # not base/activations themselves: a module imported later would copy the swapped function
    # and keep it after the block; refresh() swaps such modules in place instead
    for name in sorted(n for n in sys.modules if n.startswith("mlx_lm.models.")
                       and n not in ("mlx_lm.models.base", "mlx_lm.models.activations")):
        module = sys.modules[name]
        current = getattr(module, "scaled_dot_product_attention", None)
        if callable(current) and not hasattr(current, "symbiont_original"):
            setattr(module, "scaled_dot_product_attention", _make_sdpa(current))
            _swapped.append((module, "scaled_dot_product_attention", current))
        current = getattr(module, "swiglu", None)
        if callable(current) and not hasattr(current, "symbiont_original"):
            setattr(module, "swiglu", _make_swiglu(current))
            _swapped.append((module, "swiglu", current))


def active() -> bool:
    """Whether a :func:`cpu_kernels` block with the kernels on is open."""
    return _scope_depth > 0


def swapped_names() -> list[str]:
    """``module.function`` of every name swapped now."""
    with _swap_lock:
        return [f"{m.__name__}.{name}" for m, name, _ in _swapped]


def refresh() -> None:
    """Inside an open block, also swap architecture modules imported since it opened.

    The model loader calls this after loading, so a model loaded inside the block (a CLI
    command, an engine request) gets the kernels too.
    """
    with _swap_lock:
        if _scope_depth > 0:
            _swap_loaded_modules()


@contextmanager
def cpu_kernels(enabled: bool | None = None) -> Iterator[bool]:
    """Use the fast attention and SiLU in mlx-lm models for the block; yields whether they are on.

    ``enabled=None`` asks :func:`default_enabled`. Blocks nest:
    the outermost one that turned them on restores every swapped name in ``finally:``.
    """
    global _scope_depth
    if enabled is None:
        enabled = default_enabled()
    if not enabled:
        yield False
        return
    with _swap_lock:
        _scope_depth += 1
        _swap_loaded_modules()
    try:
        yield True
    finally:
        with _swap_lock:
            _scope_depth -= 1
            if _scope_depth == 0:
                while _swapped:
                    module, name, original = _swapped.pop()
                    setattr(module, name, original)
