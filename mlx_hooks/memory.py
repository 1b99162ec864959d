"""Memory estimates before loading, and the budget they are checked against.

Everything is computed from file headers and config (no weights read): the weights
at their run-time precision, the KV cache for a context length, and the activation
cache for a number of captured points over that context.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .errors import MemoryBudgetError

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


@dataclass(frozen=True)
class ModelShape:
    """What the estimate needs to know about a model (from config.json or GGUF metadata)."""

    n_params: int
    """Parameter count (quantized weights counted as the values they encode)."""
    stored_bytes: int
    """Bytes of the weights as stored (quantized weights at their packed size)."""
    n_layers: int
    d_model: int
    n_kv_heads: int
    head_dim: int
    quantized: bool
    """Whether the stored weights are quantized."""
    stored_dtype: str = "float16"
    """Float dtype of the stored (non-quantized) tensors."""
    sliding_window: int | None = None
    """Window of the local-attention layers (their KV cache holds at most this many tokens)."""
    global_every: int = 1
    """Every ``global_every``-th layer attends globally; 1 = all layers do."""


@dataclass(frozen=True)
class MemoryEstimate:
    weights_bytes: int
    kv_cache_bytes: int
    activation_cache_bytes: int
    context_tokens: int
    runtime_dtype: str

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kv_cache_bytes + self.activation_cache_bytes

    def describe(self) -> str:
        gib = 2**30
        return (
            f"weights {self.weights_bytes / gib:.2f} GiB ({self.runtime_dtype}) + KV cache "
            f"{self.kv_cache_bytes / gib:.2f} GiB ({self.context_tokens} tokens) + activation cache "
            f"{self.activation_cache_bytes / gib:.2f} GiB = {self.total_bytes / gib:.2f} GiB"
        )


def estimate_memory(
    shape: ModelShape, runtime_dtype: str, context_tokens: int = 4096, capture_points: int = 0
) -> MemoryEstimate:
    """``runtime_dtype`` is ``"stored"`` (keep quantized/stored weights) or a float dtype name."""
    if runtime_dtype == "stored":
        weights = shape.stored_bytes
        act_bytes = DTYPE_BYTES.get(shape.stored_dtype, 2)
    elif runtime_dtype in DTYPE_BYTES:
        act_bytes = DTYPE_BYTES[runtime_dtype]
        weights = shape.n_params * act_bytes
    else:
        raise ValueError(f"runtime dtype {runtime_dtype!r}: use stored, {', '.join(DTYPE_BYTES)}")
    cached = kv_cached_tokens(shape.n_layers, context_tokens, shape.sliding_window, shape.global_every)
    kv = 2 * shape.n_kv_heads * shape.head_dim * cached * act_bytes
    activations = capture_points * context_tokens * shape.d_model * act_bytes
    return MemoryEstimate(weights, kv, activations, context_tokens, runtime_dtype)


def kv_cached_tokens(n_layers: int, context_tokens: int, sliding_window: int | None, global_every: int) -> int:
    """Tokens all layers' KV caches hold together for a context: mlx-lm gives local-attention
    layers (Gemma 3) a rotating cache of ``sliding_window`` tokens."""
    if not sliding_window or global_every <= 1:
        return n_layers * context_tokens
    n_global = n_layers // global_every
    return n_global * context_tokens + (n_layers - n_global) * min(sliding_window, context_tokens)


def physical_memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 16 * 2**30


def default_budget_bytes() -> int:
    """``SYMBIONT_MEMORY_BUDGET_GB`` if set, else 75% of physical memory."""
    env = os.environ.get("SYMBIONT_MEMORY_BUDGET_GB")
    if env:
        return int(float(env) * 2**30)
    return int(physical_memory_bytes() * 0.75)


def check_budget(estimate: MemoryEstimate, budget_bytes: int | None, what: str) -> None:
    """Refuse, with the numbers, when ``estimate`` does not fit ``budget_bytes``."""
    if budget_bytes is None or estimate.total_bytes <= budget_bytes:
        return
    raise MemoryBudgetError(
        f"{what}: needs about {estimate.total_bytes / 2**30:.2f} GiB ({estimate.describe()}), "
        f"over the memory budget of {budget_bytes / 2**30:.2f} GiB; raise the budget "
        "(--memory-budget / SYMBIONT_MEMORY_BUDGET_GB), shorten the context, or use quantized weights"
    )
