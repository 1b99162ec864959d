"""Memory estimates before loading, the budget they are checked against, and giving memory back.

Everything is computed from file headers and config (no weights read): the weights
at their run-time precision, the KV cache for a context length, and the activation
cache for a number of captured points over that context.

The budget (:func:`memory_budget`) is the smaller of a share of RAM and, where the
model runs on the GPU, Metal's recommended working set (``mx.device_info()
["max_recommended_working_set_size"]``: what macOS lets the GPU keep resident, less than
RAM on small Macs) or, on MLX's CUDA backend, the device's memory; less what other Symbiont processes hold (:mod:`.memory_claims`:
the chat and a lab run side by side). ``SYMBIONT_MEMORY_BUDGET_GB`` replaces the
machine's limit.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Iterator, Sequence

from .errors import MemoryBudgetError

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
RAM_SHARE = 0.75
"""Share of physical memory Symbiont budgets for (the rest: the OS, the window, other apps)."""
BUDGET_ENV = "SYMBIONT_MEMORY_BUDGET_GB"
GIB = 2**30


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
    d_mlp: int | None = None
    """MLP hidden width (``mlp_hidden`` points); None = unknown, counted as ``d_model``."""
    attn_z_width: int | None = None
    """``n_heads * head_dim`` (``attn_z`` points); None = unknown, counted as ``d_model``."""

    def point_width(self, point: str) -> int:
        """Last-axis width of a hook point's activation (``mlp_hidden.3`` -> ``d_mlp``), as
        :meth:`mlx_hooks.points.ModelAdapter.width` gives it for a loaded model."""
        kind = point.split(".", 1)[0]
        if kind == "mlp_hidden" and self.d_mlp:
            return self.d_mlp
        if kind == "attn_z" and self.attn_z_width:
            return self.attn_z_width
        return self.d_model


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
    shape: ModelShape, runtime_dtype: str, context_tokens: int = 4096, capture_points: int | Sequence[str] = 0
) -> MemoryEstimate:
    """``runtime_dtype`` is ``"stored"`` (keep quantized/stored weights) or a float dtype name.

    ``capture_points`` is a count of residual-width points, or the point names themselves
    (each at its own width: ``mlp_hidden`` is ``d_mlp`` wide, ``attn_z`` ``n_heads·head_dim``)."""
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
    widths = (capture_points * shape.d_model if isinstance(capture_points, int)
              else sum(shape.point_width(p) for p in capture_points))
    activations = widths * context_tokens * act_bytes
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


def format_bytes(n: int) -> str:
    """``"1.25 GiB"``, or MiB below a GiB (a tiny model's claim is not "0.00 GiB")."""
    return f"{n / GIB:.2f} GiB" if n >= GIB else f"{n / 2**20:.1f} MiB"


def metal_working_set_bytes() -> int | None:
    """Metal's recommended working set of MLX's default device (bytes); None off the GPU
    (the CPU device reports none, and then no GPU memory is used) and on CUDA."""
    import mlx.core as mx

    try:
        value = mx.device_info().get("max_recommended_working_set_size")
    except (RuntimeError, ValueError):
        return None
    return int(value) if value else None


def cuda_memory_bytes() -> int | None:
    """The CUDA device's memory (bytes) when MLX's default device is a CUDA GPU (the
    ``mlx-cuda`` wheels), else None. The key is looked up under the names MLX's device info
    may use; a device reporting none gets no GPU limit."""
    import mlx.core as mx

    cuda = getattr(mx, "cuda", None)
    if cuda is None or not cuda.is_available() or mx.default_device().type != mx.gpu:
        return None
    try:
        info = mx.device_info()
    except (RuntimeError, ValueError):
        return None
    value = next((info[k] for k in ("memory_size", "total_memory") if info.get(k)), None)
    return int(value) if value else None


@dataclass(frozen=True)
class MemoryBudget:
    """How much the next load may take, and why."""

    limit_bytes: int
    """The machine's limit for Symbiont: the binding one of the limits below."""
    binding: str
    """Which limit that is, in words (``"75% of RAM"``, ``"Metal's recommended working set"``, the variable)."""
    ram_share_bytes: int
    """:data:`RAM_SHARE` of physical memory."""
    metal_bytes: int | None
    """Metal's recommended working set when the default device is the GPU, else None."""
    others: tuple = ()
    """:class:`~mlx_hooks.memory_claims.Claim` of each other live Symbiont process holding a model."""
    gpu_label: str = "Metal's recommended working set"
    """What ``metal_bytes`` is on this backend (``"CUDA device memory"`` on the CUDA backend)."""

    @property
    def others_bytes(self) -> int:
        return sum(c.bytes for c in self.others)

    @property
    def bytes(self) -> int:
        return max(0, self.limit_bytes - self.others_bytes)

    def describe(self) -> str:
        parts = [f"{RAM_SHARE:.0%} of RAM {self.ram_share_bytes / GIB:.2f} GiB"]
        if self.metal_bytes is not None:
            parts.append(f"{self.gpu_label} {self.metal_bytes / GIB:.2f} GiB")
        else:
            parts.append("no GPU memory limit: MLX's default device is the CPU")
        text = f"budget {self.bytes / GIB:.2f} GiB: limit {self.limit_bytes / GIB:.2f} GiB set by {self.binding}"
        text += " (" + "; ".join(parts) + ")"
        if self.others:
            text += f", less {format_bytes(self.others_bytes)} held by other Symbiont processes (" + "; ".join(
                c.describe() for c in self.others) + ")"
        return text


def memory_budget(*, other_processes: bool = True) -> MemoryBudget:
    """The budget now: ``SYMBIONT_MEMORY_BUDGET_GB`` if set, else the smaller of the RAM share
    and Metal's recommended working set; less the other Symbiont processes' claims."""
    from .memory_claims import other_claims

    ram = int(physical_memory_bytes() * RAM_SHARE)
    metal, label = metal_working_set_bytes(), "Metal's recommended working set"
    if metal is None and (cuda := cuda_memory_bytes()) is not None:
        metal, label = cuda, "CUDA device memory"  # the weights live there; the smaller limit still binds
    env = os.environ.get(BUDGET_ENV)
    if env:
        limit, binding = int(float(env) * GIB), f"{BUDGET_ENV}={env}"
    elif metal is not None and metal < ram:
        limit, binding = metal, label
    else:
        limit, binding = ram, f"{RAM_SHARE:.0%} of RAM"
    others = tuple(other_claims()) if other_processes else ()
    return MemoryBudget(limit, binding, ram, metal, others, label)


def default_budget_bytes() -> int:
    """:func:`memory_budget` in bytes: ``SYMBIONT_MEMORY_BUDGET_GB`` if set, else the smaller of
    75% of physical memory and Metal's recommended working set; less what other Symbiont
    processes hold."""
    return memory_budget().bytes


def check_budget(estimate: MemoryEstimate, budget_bytes: int | None, what: str, *,
                 budget: MemoryBudget | None = None) -> None:
    """Refuse, with the numbers, when ``estimate`` does not fit ``budget_bytes`` (``budget``, when
    given, says where that number came from)."""
    if budget_bytes is None or estimate.total_bytes <= budget_bytes:
        return
    why = f" ({budget.describe()})" if budget is not None and budget.bytes == budget_bytes else ""
    raise MemoryBudgetError(
        f"{what}: needs about {estimate.total_bytes / GIB:.2f} GiB ({estimate.describe()}), "
        f"over the memory budget of {budget_bytes / GIB:.2f} GiB{why}; raise the budget "
        "(--memory-budget / SYMBIONT_MEMORY_BUDGET_GB), shorten the context, or use quantized weights"
    )


def release_freed_memory() -> None:
    """Give the buffers of dropped arrays back to the system: after a model switch.

    MLX keeps freed buffers in its cache for reuse; after the old model's references are
    gone that cache would hold a whole model's worth of memory the next one cannot use
    as the budget assumed. Collects reference cycles first (a model in one keeps its arrays).
    """
    import gc

    import mlx.core as mx

    gc.collect()
    mx.clear_cache()


@contextlib.contextmanager
def wired_limit_restored() -> Iterator[None]:
    """Put MLX's wired limit back, when the block ends, to what it was before.

    mlx-lm's trainer (``mlx_lm.tuner.trainer.train``) raises the wired limit to Metal's
    recommended working set and never lowers it: the chat's memory would stay wired after
    a lab run in the same process. MLX has no getter, so this sets the limit the trainer will
    set anyway (mlx-lm's own helper, which returns the previous one) and restores that at
    the end, as mlx-lm's ``wired_limit`` context does around generation. On the CPU
    (no recommended working set) nothing is changed.
    """
    import mlx.core as mx
    from mlx_lm.utils import maybe_set_recommended_wired_limit

    previous = maybe_set_recommended_wired_limit()
    try:
        yield
    finally:
        if previous is not None:
            mx.synchronize()  # the limit must not change under a running evaluation
            mx.set_wired_limit(previous)
