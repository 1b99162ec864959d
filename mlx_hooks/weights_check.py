"""A cheap check that a model's floating-point weights are all finite, right after loading.

A damaged or badly converted file with NaN/inf weights otherwise loads, and every reply is
garbage (or NaN log-probabilities) with nothing naming the file. One reduction per tensor on
the device, all evaluated together, on the weights as stored (before a quantized model is
dequantized for the CPU): on the default model it took 0.08-0.32 s of loads taking 5.5-12.9 s,
measured on the 2-core machine while it was busy (load average ~13). Integer tensors (packed quantized weights) are
skipped; their float scales and biases are checked.
"""

from __future__ import annotations

import mlx.core as mx
from mlx.utils import tree_flatten


def _has_nonfinite(value: mx.array) -> mx.array:
    # A sum is NaN or inf when any term is: one reduction, which MLX's CPU backend runs several times
    # faster than an elementwise isfinite over the tensor (measured: 240 ms against 3.6 s for 135M
    # float32 values on the busy 2-core machine). Half-precision tensors are summed per row first and
    # the row sums in float32, so a large but finite tensor rarely overflows float16's 65504 (a row
    # that does is only a suspect: nonfinite_parameters counts exactly before reporting it).
    if value.dtype != mx.float32 and value.ndim > 1:
        value = mx.sum(value, axis=-1).astype(mx.float32)
    return ~mx.isfinite(mx.sum(value))


def nonfinite_parameters(model) -> list[tuple[str, int, int]]:
    """``(name, non-finite count, size)`` of every floating-point parameter holding NaN or inf."""
    floats = [(name, value) for name, value in tree_flatten(model.parameters())
              if mx.issubdtype(value.dtype, mx.floating)]
    flags = [_has_nonfinite(value) for _, value in floats]
    mx.eval(flags)
    suspects = [(name, value) for (name, value), flag in zip(floats, flags) if flag.item()]
    # Only for the suspects, the exact count, elementwise: a sum can also overflow on finite values
    # (a half-precision row past 65504), and such a tensor is not reported.
    counts = [(name, int(mx.sum(~mx.isfinite(value)).item()), int(value.size)) for name, value in suspects]
    return [entry for entry in counts if entry[1]]


def describe_nonfinite(found: list[tuple[str, int, int]], limit: int = 3) -> str:
    listed = ", ".join(f"{name} {count} of {size}" for name, count, size in found[:limit])
    return listed + (f" and {len(found) - limit} more tensor(s)" if len(found) > limit else "")
