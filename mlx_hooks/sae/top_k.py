"""Indices of the k largest entries of each row, for TopK SAEs: MLX's ``argpartition`` on the
CPU backend, done in two smaller passes.

Written by hand because no library call does it fast here: MLX's CPU ``argpartition`` (and
``topk``) select over whole rows, 24 ms (18 ms) for the trainer's [512, 4608] latent
pre-activations at k 32 on this project's 2-core x86-64 machine, a fifth of a training step.
The k largest entries of a row always lie in the k chunks with the largest maxima (each of
them is at least the k-th largest chunk maximum, so its own chunk's maximum is too), so the
rows are cut into chunks, the chunk maxima are partitioned, then only the entries of the k
chosen chunks: 6.4 ms for the same rows, 18 ms against 27 (argpartition) at the auxiliary
loss's k 256 (``python benchmarks/mlx_cpu_kernels.py --rounds 3``, 2026-12-05). On the GPU
backends ``argpartition`` runs over a row in parallel in one kernel, where five launches
would not pay off, so it is left to MLX there.
"""

from __future__ import annotations

import math

import mlx.core as mx

from ..backend import default_device_is_cpu


# Rows narrower than this many times k go to argpartition: with few chunks the first pass saves nothing.
_MIN_WIDTH_PER_K = 8


def chunk_width(width: int, k: int) -> int:
    """The chunk width that makes both passes small (chunk count ≈ k × chunk width ≈ √(width·k)),
    nudged to a divisor of ``width`` nearby so that no padding copy is needed."""
    ideal = max(2, round(math.sqrt(width / k)))
    for delta in range(0, ideal):
        for c in (ideal + delta, ideal - delta):
            if c >= 2 and width % c == 0:
                return c
    return ideal


def top_k_indices(scores: mx.array, k: int, two_pass: bool | None = None) -> mx.array:
    """``[..., k]`` indices of the k largest entries along the last axis of ``scores``, in no
    particular order; of several values tied at the k-th place, which are kept is unspecified
    (as with ``argpartition``). ``two_pass``: None = on the CPU backend only."""
    width = scores.shape[-1]
    if two_pass is None:
        two_pass = default_device_is_cpu()
    if not two_pass or width < _MIN_WIDTH_PER_K * k:
        return mx.argpartition(scores, width - k, axis=-1)[..., width - k:]
    c = chunk_width(width, k)
    chunks = -(-width // c)
    lead = scores.shape[:-1]
    if chunks * c != width:  # pad with -inf, never chosen over a real entry
        pad = mx.full((*lead, chunks * c - width), -mx.inf, dtype=scores.dtype)
        scores = mx.concatenate([scores, pad], axis=-1)
    blocks = scores.reshape(*lead, chunks, c)  # [..., chunks, c]
    best = mx.argpartition(blocks.max(axis=-1), chunks - k, axis=-1)[..., chunks - k:]  # [..., k] chunk ids
    candidates = mx.take_along_axis(blocks, best[..., None], axis=-2).reshape(*lead, k * c)  # [..., k·c]
    picked = mx.argpartition(candidates, k * c - k, axis=-1)[..., k * c - k:]  # [..., k] positions in candidates
    return mx.take_along_axis(best, picked // c, axis=-1) * c + picked % c


# Rows below which MLX's topk wins even on the CPU (one row of 4608: 58 µs against 85 µs for the
# two passes, 8 rows: 99 against 128 µs; 64 rows: 2.4 ms against 0.87 ms).
_MIN_ROWS_TWO_PASS = 32


def kth_largest(scores: mx.array, k: int) -> mx.array:
    """The k-th largest entry along the last axis, ``[..., 1]`` (the threshold of a TopK SAE)."""
    rows = scores.size // max(scores.shape[-1], 1)
    if rows < _MIN_ROWS_TWO_PASS or not default_device_is_cpu():
        return mx.topk(scores, k, axis=-1).min(axis=-1, keepdims=True)
    return mx.take_along_axis(scores, top_k_indices(scores, k, two_pass=True), axis=-1).min(axis=-1, keepdims=True)
