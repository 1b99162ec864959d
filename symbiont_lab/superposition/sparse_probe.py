"""k-sparse linear probes (Gurnee et al. 2023, "Finding Neurons in a Haystack") on one activation table.

For a table ``X [N texts, U units]`` and binary labels: choose k units, fit a logistic regression on
them, score it on texts it never saw. Cross-validated over folds that keep each group (a sentence
pair) together; the F1 (and accuracy) is computed over the pooled out-of-fold predictions.

Inside each training fold only:

1. units are standardised with the fold's mean and standard deviation (a unit constant on the
   fold reads 0), so a residual dimension with a huge scale does not win by scale alone;
2. units are ranked by ``mean_diff`` — |mean over positives − mean over negatives| of the
   standardised unit (an effect size) — or by ``l1`` — the order in which units enter an
   L1-regularised logistic regression as its penalty is relaxed (scikit-learn's liblinear);
3. for each k, an L2 logistic regression on the top k units; the dense baseline uses all units.

:func:`top_units` ranks units on the whole set (for the report: which neurons/latents carry the
property and with which weights).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

def require_sklearn() -> None:
    """scikit-learn does the fitting; the app bundle leaves it out (with SciPy), so say so plainly there."""
    try:
        import sklearn  # noqa: F401
    except ImportError:
        from .experiments import SuperpositionError

        raise SuperpositionError("this command needs scikit-learn, which is not installed here (the app bundle leaves "
                                 "it out); run it from a source install: pip install -e . (or scikit-learn)") from None


K_VALUES = (1, 2, 4, 8, 16, 32)
"""Published sparsities of the probes."""
SELECTIONS = ("mean_diff", "l1")
L1_GRID = 24
"""Penalties tried along the L1 path (log-spaced over four decades from the smallest useful one)."""


@dataclass(frozen=True)
class ProbeSettings:
    """How the probes are fitted."""

    k_values: tuple[int, ...] = K_VALUES
    """Numbers of units per sparse probe."""
    folds: int = 5
    """Cross-validation folds (grouped and stratified)."""
    selection: str = "mean_diff"
    """``mean_diff`` or ``l1`` (see the module docstring)."""
    C: float = 1.0
    """Inverse L2 strength of the logistic regressions (scikit-learn's default)."""
    seed: int = 0
    """Seed of the fold assignment."""

    def __post_init__(self):
        if self.selection not in SELECTIONS:
            raise ValueError(f"unknown unit selection {self.selection!r} (choose {', '.join(SELECTIONS)})")
        if self.folds < 2 or not self.k_values or min(self.k_values) < 1:
            raise ValueError(f"probes need ≥ 2 folds and k ≥ 1 (got folds={self.folds}, k={self.k_values})")


def standardise(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Scale every array by ``train``'s per-unit mean and sd (sd < 1e-6: the unit reads 0)."""
    mean = train.mean(axis=0)
    sd = train.std(axis=0)
    scale = np.where(sd > 1e-6, 1.0 / np.maximum(sd, 1e-12), 0.0)
    return [(a - mean) * scale for a in (train, *others)]


def mean_difference(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``[U]``: mean over positives − mean over negatives of standardised units."""
    return z[y == 1].mean(axis=0) - z[y == 0].mean(axis=0)


def rank_units(z: np.ndarray, y: np.ndarray, selection: str, k_max: int) -> np.ndarray:
    """Unit indices, best first (at least ``k_max`` of them when there are that many)."""
    diff = np.abs(mean_difference(z, y))
    by_diff = np.argsort(-diff, kind="stable")
    if selection == "mean_diff":
        return by_diff
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import l1_min_c

    entered = np.full(z.shape[1], np.inf)
    for step, c in enumerate(l1_min_c(z, y, loss="log") * np.logspace(0.05, 4, L1_GRID)):
        model = LogisticRegression(penalty="l1", solver="liblinear", C=c, max_iter=500)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(z, y)
        nonzero = np.abs(model.coef_[0]) > 1e-10
        entered[nonzero & np.isinf(entered)] = step
        if np.isfinite(entered).sum() >= k_max:
            break
    # entry order, ties (and units that never entered) broken by the mean difference
    return np.lexsort((-diff, entered))


def _fit_predict(z_train: np.ndarray, y_train: np.ndarray, z_test: np.ndarray, C: float) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=C, max_iter=2000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter on separable folds
        model.fit(z_train, y_train)
    return model.predict(z_test)


def f1_score(y: np.ndarray, predicted: np.ndarray) -> float:
    """F1 of the positive class (0 when nothing is predicted positive and nothing is)."""
    tp = int(((predicted == 1) & (y == 1)).sum())
    fp = int(((predicted == 1) & (y == 0)).sum())
    fn = int(((predicted == 0) & (y == 1)).sum())
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def folds_of(y: np.ndarray, groups: np.ndarray, settings: ProbeSettings) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, test) index arrays: stratified, with every group in one fold."""
    from sklearn.model_selection import StratifiedGroupKFold

    per_class = min(int(y.sum()), int((1 - y).sum()))
    if per_class < settings.folds:
        raise ValueError(f"{settings.folds}-fold probes need at least {settings.folds} texts of each class "
                         f"(have {int(y.sum())} positive, {int((1 - y).sum())} negative)")
    splitter = StratifiedGroupKFold(n_splits=settings.folds, shuffle=True, random_state=settings.seed)
    return list(splitter.split(np.zeros(len(y)), y, groups))


def probe_table(x: np.ndarray, y: np.ndarray, groups: np.ndarray, settings: ProbeSettings) -> dict:
    """Out-of-fold F1 and accuracy of every k-sparse probe and of the dense probe on ``x [N, U]``."""
    x = np.asarray(x, dtype=np.float64)
    ks = [k for k in settings.k_values if k <= x.shape[1]]
    predictions = {k: np.zeros(len(y), dtype=np.int64) for k in ks}
    dense = np.zeros(len(y), dtype=np.int64)
    for train, test in folds_of(y, groups, settings):
        z_train, z_test = standardise(x[train], x[test])
        order = rank_units(z_train, y[train], settings.selection, max(ks))
        for k in ks:
            chosen = order[:k]
            predictions[k][test] = _fit_predict(z_train[:, chosen], y[train], z_test[:, chosen], settings.C)
        dense[test] = _fit_predict(z_train, y[train], z_test, settings.C)
    return {
        "f1": {str(k): f1_score(y, predictions[k]) for k in ks},
        "accuracy": {str(k): float((predictions[k] == y).mean()) for k in ks},
        "dense_f1": f1_score(y, dense), "dense_accuracy": float((dense == y).mean()),
    }


def top_units(x: np.ndarray, y: np.ndarray, settings: ProbeSettings, count: int = 8) -> list[dict]:
    """The ``count`` best units on the whole set: index, effect size (standardised mean difference, signed),
    raw means per class, and their weights in an L2 logistic regression on those ``count`` units."""
    x = np.asarray(x, dtype=np.float64)
    (z,) = standardise(x)
    order = rank_units(z, y, settings.selection, count)[:count]
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=settings.C, max_iter=2000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(z[:, order], y)
    effect = mean_difference(z, y)
    return [{"unit": int(u), "effect": float(effect[u]), "weight": float(w),
             "mean_positive": float(x[y == 1, u].mean()), "mean_negative": float(x[y == 0, u].mean())}
            for u, w in zip(order, model.coef_[0])]


__all__ = ["K_VALUES", "ProbeSettings", "SELECTIONS", "f1_score", "folds_of", "mean_difference", "probe_table",
           "rank_units", "require_sklearn", "standardise", "top_units"]
