"""Interference between feature directions as more features share the same dimensions (NumPy only).

For a set of N unit directions in d dimensions: the distribution of pairwise cosines, and each
direction's nearest neighbour — its largest |cos| with any other, and its largest *positive*
cos. The sign matters in the toy model: an antipodal partner (cos = −1) pushes the feature's
pre-activation below zero, which the ReLU output removes, so only positive interference costs
anything there; an SAE's decoder directions are read with |cos|. Compared against N random Gaussian directions in the same d
(the baseline a dictionary without any structure would give; for those the pairwise |cos| is
about √(2/(π d)) on average, and the nearest neighbour grows like √(2 ln N / d)).

For a random *subset* of one fixed dictionary (an SAE's decoder), the pairwise distribution does
not depend on the subset size by construction — only the nearest neighbour does; for toy models
trained at each n the whole geometry changes.
"""

from __future__ import annotations

import numpy as np

HIST_BINS = np.linspace(-1.0, 1.0, 81)
"""Bin edges of the signed-cos histograms (0.025 wide)."""
MAX_ROWS = 2048
"""Pairwise statistics read the pairs among at most this many rows (a random subset: its pairs are an
unbiased sample of all pairs, ~2.1 million of them); nearest neighbours use every pair."""


def unit_rows(directions: np.ndarray) -> np.ndarray:
    """``[N, d]`` rows scaled to unit norm (zero rows dropped)."""
    d = np.asarray(directions, dtype=np.float32)
    norms = np.linalg.norm(d, axis=1, keepdims=True)
    keep = norms[:, 0] > 1e-8
    return d[keep] / norms[keep]


def random_directions(n: int, d: int, rng: np.random.Generator) -> np.ndarray:
    """``[n, d]`` Gaussian directions, unit norm (uniform on the sphere)."""
    return unit_rows(rng.standard_normal((n, d)).astype(np.float32))


def nearest_neighbour(unit: np.ndarray, chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """``([N], [N])``: each row's largest |cos| and largest signed cos with another row
    (computed in chunks: N² can be large)."""
    n = unit.shape[0]
    largest_abs, largest = np.empty(n, dtype=np.float32), np.empty(n, dtype=np.float32)
    for start in range(0, n, chunk):
        block = unit[start:start + chunk] @ unit.T  # [c, N]
        rows = np.arange(block.shape[0])
        block[rows, rows + start] = -np.inf  # not itself
        largest[start:start + chunk] = block.max(axis=1)
        block[rows, rows + start] = 0.0
        largest_abs[start:start + chunk] = np.abs(block).max(axis=1)
    return largest_abs, largest


def pair_cosines(unit: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Signed cosines of the pairs i < j among all rows, or among :data:`MAX_ROWS` random rows."""
    if unit.shape[0] > MAX_ROWS:
        unit = unit[np.sort(rng.choice(unit.shape[0], size=MAX_ROWS, replace=False))]
    gram = unit @ unit.T  # [N, N]
    return gram[np.triu_indices(unit.shape[0], k=1)]


def cosine_stats(directions: np.ndarray, rng: np.random.Generator) -> dict:
    """Pairwise cos (mean |cos|, 99th percentile of |cos|, signed histogram) and nearest neighbours
    (mean and max of the largest |cos|; mean of the largest positive cos, 0 when all are ≤ 0)."""
    unit = unit_rows(directions)
    if unit.shape[0] < 2:
        return {"n": int(unit.shape[0]), "d": int(np.shape(directions)[1])}
    cos = pair_cosines(unit, rng)
    nn_abs, nn_signed = nearest_neighbour(unit)
    return {
        "n": int(unit.shape[0]), "d": int(unit.shape[1]),
        "pair_mean_abs": float(np.abs(cos).mean()), "pair_p99_abs": float(np.quantile(np.abs(cos), 0.99)),
        "pair_hist": (np.histogram(cos, bins=HIST_BINS)[0] / cos.size).tolist(),
        "nn_abs_mean": float(nn_abs.mean()), "nn_abs_max": float(nn_abs.max()),
        "nn_positive_mean": float(np.clip(nn_signed, 0.0, None).mean()),
    }


def dictionary_sweep(decoder: np.ndarray, ratios: tuple[float, ...], seed: int) -> list[dict]:
    """For each ratio r: a random subset of r·d rows of ``decoder [N, d]`` (capped at N) and as many
    random directions, each through :func:`cosine_stats`."""
    rng = np.random.default_rng([seed, 17])
    unit = unit_rows(decoder)
    n_all, d = unit.shape
    rows = []
    for ratio in ratios:
        count = min(n_all, max(2, int(round(ratio * d))))
        subset = unit[np.sort(rng.choice(n_all, size=count, replace=False))]
        rows.append({"ratio": float(ratio), "count": count, "features_per_dimension": count / d,
                     "dictionary": cosine_stats(subset, rng),
                     "random": cosine_stats(random_directions(count, d, rng), rng)})
    return rows


__all__ = ["HIST_BINS", "cosine_stats", "dictionary_sweep", "nearest_neighbour", "pair_cosines", "random_directions",
           "unit_rows"]
