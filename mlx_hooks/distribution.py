"""Next-token distributions in numpy: the sampling filters, temperature and entropy.

The same transforms as mlx-lm's sampler (``apply_top_p``, ``apply_min_p``,
``apply_top_k``, then ``logprobs / temp``) written for numpy, because two callers must
not touch MLX: the per-step statistics (a 49k-vocabulary vector is already on the
host; a dozen MLX ops on it cost ~15 ms per token on the CPU backend, numpy ~0.3 ms)
and the GUI's temperature slider, which redraws the distribution without re-running
the model and without calling MLX off the engine thread. Tests check these against
mlx-lm's own filters.
"""

from __future__ import annotations

import math

import numpy as np

LOG2E = 1.0 / math.log(2.0)


def normalise(logits) -> np.ndarray:
    """Log-softmax of ``[..., V]`` logits (float64 for stable entropies)."""
    x = np.asarray(logits, dtype=np.float64)
    top = np.max(x, axis=-1, keepdims=True)
    return x - (top + np.log(np.sum(np.exp(x - top), axis=-1, keepdims=True)))


def filter_top_p(logprobs: np.ndarray, top_p: float) -> np.ndarray:
    """Nucleus filter with mlx-lm's semantics (keep the smallest set with mass ≥ top_p)."""
    ordered = np.sort(logprobs, axis=-1)  # ascending
    probs = np.exp(ordered)
    mass_above = np.cumsum(probs[..., ::-1], axis=-1)[..., ::-1] - probs  # exclusive, from the top
    total = mass_above[..., :1] + probs[..., :1]
    dropped = np.sum(mass_above >= top_p * total, axis=-1, keepdims=True)
    threshold = np.take_along_axis(ordered, dropped, axis=-1)
    return np.where(logprobs < threshold, -np.inf, logprobs)


def filter_min_p(logprobs: np.ndarray, min_p: float) -> np.ndarray:
    """Drop tokens below ``min_p`` × the top token's probability."""
    cutoff = np.max(logprobs, axis=-1, keepdims=True) + math.log(min_p)
    return np.where(logprobs < cutoff, -np.inf, logprobs)


def filter_top_k(logprobs: np.ndarray, top_k: int) -> np.ndarray:
    """Keep the ``top_k`` most likely tokens."""
    if top_k >= logprobs.shape[-1]:
        return logprobs
    dropped = np.argpartition(-logprobs, top_k - 1, axis=-1)[..., top_k:]
    out = np.array(logprobs, copy=True)
    np.put_along_axis(out, dropped, -np.inf, axis=-1)
    return out


def sampling_logprobs(logprobs, temp: float, top_p: float = 0.0, min_p: float = 0.0, top_k: int = 0) -> np.ndarray:
    """Normalised log-probabilities the sampler draws from; greedy (temp 0) is a point mass."""
    lp = np.asarray(logprobs, dtype=np.float64)
    if temp == 0:
        out = np.full_like(lp, -np.inf)
        np.put_along_axis(out, np.argmax(lp, axis=-1)[..., None], 0.0, axis=-1)
        return out
    if 0 < top_p < 1.0:
        lp = filter_top_p(lp, top_p)
    if min_p != 0.0:
        lp = filter_min_p(lp, min_p)
    if top_k > 0:
        lp = filter_top_k(lp, top_k)
    return normalise(lp / temp)


def entropy_bits(logprobs) -> np.ndarray:
    """Shannon entropy in bits of normalised log-probabilities ``[..., V] -> [...]``.

    float32 input stays float32 (numpy's pairwise summation keeps the error near 1e-6 relative
    even over a 256k vocabulary; a float64 pass over it cost ~2 ms per generated token); any
    other input is computed in float64."""
    lp = np.asarray(logprobs)
    if lp.dtype != np.float32:
        lp = lp.astype(np.float64)
    p = np.exp(lp)
    if lp.ndim == 1:
        # One dot product (BLAS) instead of three vocabulary-sized temporaries: ~3x faster, and this
        # runs on the host for every generated token. A -inf log-probability (a masked token) gives
        # 0 * -inf = nan, so that case takes the general path (and numpy's warning about it is expected).
        with np.errstate(invalid="ignore"):
            h = -np.dot(p, lp)
        if np.isfinite(h):
            return h * LOG2E
    return -np.sum(p * np.where(p > 0, lp, 0.0), axis=-1) * LOG2E  # 0·log 0 = 0 (lp may be -inf)


def top_indices(values: np.ndarray, k: int, block: int = 256) -> np.ndarray:
    """Indices of the ``k`` largest entries of a 1-D array, largest first, equal values by index
    (which of several values tied at the k-th place are kept is unspecified, as with ``np.argpartition``).

    Hand-written because ``np.argpartition`` over a whole vocabulary costs 0.4 ms (32k) to 3.3 ms
    (256k) per generated token; the ``k`` largest entries always lie in the ``k`` blocks with the
    largest maxima, so partitioning the block maxima and then those blocks finds them 10-20x faster.
    """
    n = values.shape[-1]
    k = max(0, min(k, n))
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    if n < 8 * block or k * block * 4 > n:
        ids = np.argpartition(values, n - k)[n - k:]
    else:
        rows = -(-n // block)
        padded = values
        if rows * block != n:
            padded = np.full(rows * block, -np.inf, dtype=values.dtype)
            padded[:n] = values
        best_rows = np.argpartition(padded.reshape(rows, block).max(axis=1), rows - k)[rows - k:]
        candidates = (best_rows[:, None] * block + np.arange(block)).reshape(-1)  # [k * block]
        picked = np.argpartition(padded[candidates], candidates.size - k)[candidates.size - k:]
        ids = candidates[picked]
    order = np.lexsort((ids, -values[ids]))  # by value descending, then index ascending
    return ids[order].astype(np.int64)


def effective_choices(logprobs) -> np.ndarray:
    """2^entropy: how many equally likely tokens the distribution is worth."""
    return np.exp2(entropy_bits(logprobs))
