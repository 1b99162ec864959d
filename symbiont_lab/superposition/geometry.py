"""What a trained toy model's W says about superposition (numbers from ``W [m, n]``; NumPy only).

- feature norm ‖W_i‖: a feature is *represented* when its norm is above :data:`REPRESENTED_NORM`
  (a trained model puts norms near 0 or near/above 1, so the threshold is not delicate);
- superposition of feature i: Σ_{j≠i} (Ŵ_i·W_j)², how much of the other features lands on i's
  direction (0 for an orthogonal feature) — the colour of the published norm bars;
- feature dimensionality D_i = ‖W_i‖² / Σ_j (Ŵ_i·W_j)² — the fraction of a dimension feature i
  gets (1: a dimension of its own; 1/2: an antipodal pair; 2/3: a triangle; 3/4: a tetrahedron;
  2/5: a pentagon; 3/8: a square antiprism); 0 for a feature that is not there;
- features per dimension ‖W‖_F² / m (the inverse of the published "dimensions per feature").
"""

from __future__ import annotations

import numpy as np

REPRESENTED_NORM = 0.5
"""A feature with ‖W_i‖ above this counts as represented."""
PUBLISHED_FRACTIONS = {"1": 1.0, "3/4": 3 / 4, "2/3": 2 / 3, "1/2": 1 / 2, "2/5": 2 / 5, "3/8": 3 / 8}
"""Where the feature dimensionalities cluster in the published sparse models, with their names."""
FRACTION_TOLERANCE = 0.03
"""A dimensionality within this of a published fraction counts as "at" it."""


def feature_norms(w: np.ndarray) -> np.ndarray:
    """``[n]``: ‖W_i‖ of each feature (column of ``w [m, n]``)."""
    return np.linalg.norm(w, axis=0)


def _overlaps(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(norms ``[n]``, ``[n, n]`` matrix of Ŵ_i·W_j); rows of features with norm ~0 are 0."""
    norms = feature_norms(w)
    unit = w / np.where(norms > 1e-8, norms, np.inf)  # [m, n]
    return norms, unit.T @ w


def superposition(w: np.ndarray) -> np.ndarray:
    """``[n]``: Σ_{j≠i} (Ŵ_i·W_j)²."""
    norms, dots = _overlaps(w)
    return (dots**2).sum(axis=1) - np.where(norms > 1e-8, norms**2, 0.0)


def dimensionality(w: np.ndarray) -> np.ndarray:
    """``[n]``: D_i = ‖W_i‖² / Σ_j (Ŵ_i·W_j)² (0 where ‖W_i‖ ≈ 0)."""
    norms, dots = _overlaps(w)
    total = (dots**2).sum(axis=1)  # includes j = i: ‖W_i‖²
    return np.where(total > 1e-12, norms**2 / np.maximum(total, 1e-12), 0.0)


def features_per_dimension(w: np.ndarray) -> float:
    """‖W‖_F² / m: about the number of features each hidden dimension holds."""
    return float((w**2).sum() / w.shape[0])


def represented(w: np.ndarray) -> np.ndarray:
    """``[n]`` bool: ‖W_i‖ > :data:`REPRESENTED_NORM`."""
    return feature_norms(w) > REPRESENTED_NORM


def nearest_fraction(values) -> list[str | None]:
    """Per value, the name of the published fraction within :data:`FRACTION_TOLERANCE`, or None."""
    out = []
    for v in np.asarray(values, dtype=np.float64).ravel():
        name, target = min(PUBLISHED_FRACTIONS.items(), key=lambda kv: abs(kv[1] - v))
        out.append(name if abs(target - v) <= FRACTION_TOLERANCE else None)
    return out


def chance_coverage() -> float:
    """The fraction of [0, 1] within :data:`FRACTION_TOLERANCE` of some published fraction: how
    often a dimensionality drawn uniformly from [0, 1] would land "at" one by chance."""
    grid = np.linspace(0.0, 1.0, 100_001)
    near = np.zeros_like(grid, dtype=bool)
    for target in PUBLISHED_FRACTIONS.values():
        near |= np.abs(grid - target) <= FRACTION_TOLERANCE
    return float(near.mean())


def summarize_copy(w: np.ndarray, b: np.ndarray) -> dict:
    """Everything the report and plots read about one trained copy (JSON-ready)."""
    norms = feature_norms(w)
    rep = norms > REPRESENTED_NORM
    dims = dimensionality(w)
    return {
        "norms": norms.tolist(), "superposition": superposition(w).tolist(), "dimensionality": dims.tolist(),
        "bias": np.asarray(b).tolist(), "represented": int(rep.sum()),
        "features_per_dimension": features_per_dimension(w),
        "fractions": nearest_fraction(dims[rep]),
    }


def dense_orthogonality(w: np.ndarray, m: int) -> float:
    """Largest |off-diagonal| of the m most important features' Gram matrix Ŵᵀ Ŵ (0: exactly orthogonal)."""
    top = w[:, :m]
    unit = top / np.maximum(np.linalg.norm(top, axis=0), 1e-12)
    gram = unit.T @ unit
    return float(np.abs(gram - np.diag(np.diag(gram))).max())


__all__ = ["FRACTION_TOLERANCE", "PUBLISHED_FRACTIONS", "REPRESENTED_NORM", "chance_coverage", "dense_orthogonality",
           "dimensionality", "feature_norms", "features_per_dimension", "nearest_fraction", "represented",
           "summarize_copy", "superposition"]
