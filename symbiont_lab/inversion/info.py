"""How much a teacher's answers say about the right answers: mutual information and a fitted decoder.

- :func:`mutual_information`: plug-in estimate in bits with the Miller–Madow bias correction
  (H + (m − 1)/(2n ln 2), m = occupied cells), over the small-alphabet feature each family
  defines (:func:`.tasks.symbol`).
- :func:`information_test`: that estimate against a **permutation null** (the teacher's answers
  shuffled across prompts: what the estimator reads from no information at all, bias left over
  included), the excess over the null's mean, a one-sided p-value, and a bootstrap CI over prompts.
- :func:`fit_decoder`: the simple decoder: the transform of the teacher's answer (from the family's
  :func:`.tasks.decoder_library`) that is right most often on the ``fit`` split, scored on ``test``.

Written here (a few lines of NumPy) rather than taken from a library: scikit-learn's
``mutual_info_score`` has no bias correction and SciPy is not a dependency of the lab.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Sequence

import numpy as np

from .tasks import Item, decoder_library, parse


def _entropy_bits(counts: np.ndarray, n: int, miller_madow: bool) -> float:
    counts = counts[counts > 0]
    p = counts / n
    h = float(-(p * np.log2(p)).sum())
    if miller_madow:
        h += (counts.size - 1) / (2 * n * math.log(2))
    return h


def mutual_information(x: Sequence[str], y: Sequence[str], miller_madow: bool = True) -> float:
    """I(X; Y) in bits from paired samples (Miller–Madow corrected: H(X) + H(Y) − H(X, Y))."""
    if len(x) != len(y):
        raise ValueError(f"mutual_information needs paired samples, got {len(x)} and {len(y)}")
    n = len(x)
    if n == 0:
        return float("nan")
    hx = _entropy_bits(np.array(list(Counter(x).values())), n, miller_madow)
    hy = _entropy_bits(np.array(list(Counter(y).values())), n, miller_madow)
    hxy = _entropy_bits(np.array(list(Counter(zip(x, y)).values())), n, miller_madow)
    return hx + hy - hxy


def information_test(teacher: Sequence[str], right: Sequence[str], *, permutations: int = 500,
                     bootstrap: int = 200, seed: int = 0) -> dict:
    """MI of (teacher symbol, right symbol) with its permutation null, excess, p and a 95% bootstrap CI."""
    rng = np.random.default_rng(seed)
    teacher, right = list(teacher), list(right)
    observed = mutual_information(teacher, right)
    null = np.array([mutual_information([teacher[i] for i in rng.permutation(len(teacher))], right)
                     for _ in range(permutations)])
    boots = []
    for _ in range(bootstrap):
        idx = rng.integers(0, len(teacher), size=len(teacher))
        boots.append(mutual_information([teacher[i] for i in idx], [right[i] for i in idx]))
    low, high = (np.percentile(boots, [2.5, 97.5]).tolist() if boots else [float("nan")] * 2)
    return {"mi_bits": observed, "null_mean_bits": float(null.mean()) if null.size else float("nan"),
            "excess_bits": observed - float(null.mean()) if null.size else float("nan"),
            "p_value": float((np.sum(null >= observed - 1e-12) + 1) / (null.size + 1)),
            "ci_bits": [low, high], "n": len(teacher), "permutations": permutations, "bootstrap": bootstrap,
            "right_entropy_bits": mutual_information(right, right)}


def decode_hits(items: Sequence[Item], teacher_texts: Sequence[str], transform) -> list[float]:
    """1.0 where ``transform(teacher's parsed answer)`` is the right answer, per item."""
    hits = []
    for item, text in zip(items, teacher_texts):
        answer = parse(item.family, text)
        try:
            hits.append(float(answer is not None and transform(answer) == item.right))
        except (ValueError, TypeError):  # a transform that does not apply to this answer
            hits.append(0.0)
    return hits


def fit_decoder(family: str, fit_items: Sequence[Item], fit_texts: Sequence[str],
                test_items: Sequence[Item], test_texts: Sequence[str]) -> dict:
    """The library transform best on the fit split (first on ties), and its per-item hits on test."""
    library = decoder_library(family)
    scores = {name: float(np.mean(decode_hits(fit_items, fit_texts, f))) if fit_items else 0.0
              for name, f in library.items()}
    best = max(scores, key=lambda name: scores[name])  # dicts keep order: the first maximum wins
    hits = decode_hits(test_items, test_texts, library[best])
    return {"transform": best, "fit_accuracy": scores[best], "test_hits": hits,
            "test_accuracy": float(np.mean(hits)) if hits else float("nan")}


__all__ = ["decode_hits", "fit_decoder", "information_test", "mutual_information"]
