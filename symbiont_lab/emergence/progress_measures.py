"""Progress measures of the grokking network: weight norm, Fourier sparsity, restricted and excluded loss.

- **Fourier sparsity of the embedding**: the p residue embeddings ``W_E[:p]`` ``[p, D]`` as a
  function of the residue a, in the discrete Fourier basis over a. Frequency k (1 … (p−1)/2)
  has power ``‖Σ_a cos(2πka/p)·W_E[a]‖² + ‖Σ_a sin(2πka/p)·W_E[a]‖²``; the sparsity is the share
  of the non-constant power in the ``top`` strongest frequencies (about top/((p−1)/2) for a
  random embedding, near 1 once the network uses a few frequencies, as Nanda et al. found).
- **Key frequencies** (Nanda et al. 2023): of the final network, the frequencies k whose
  directions ``cos(2πk(a+b)/p)`` and ``sin(2πk(a+b)/p)`` over the p² inputs carry the most of
  the MLP neurons' variance.
- **Restricted loss**: the loss on the test pairs when the neurons keep only their mean and
  their components along the key frequencies' ``cos/sin(2πk(a+b)/p)`` directions (the logits
  recomputed through ``W_out`` and ``W_U``, with the logits' mean over inputs restored).
  It falls when the Fourier circuit can do the task alone.
- **Excluded loss**: the loss on the *training* pairs when exactly those components are
  removed from the neurons. It rises when the network starts relying on the circuit
  rather than on memorisation.

(These follow the paper's definitions, computed here from our own arrays.)
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten


def weight_norm(model) -> float:
    """L2 norm of all parameters together."""
    return float(np.sqrt(sum(float(mx.sum(v.astype(mx.float32) ** 2)) for _, v in tree_flatten(model.parameters()))))


def fourier_basis(p: int) -> tuple[np.ndarray, np.ndarray]:
    """``cos`` and ``sin`` ``[K, p]`` rows for frequencies k = 1 … (p−1)/2 over a = 0 … p−1."""
    k = np.arange(1, (p - 1) // 2 + 1)[:, None]
    angle = 2 * np.pi * k * np.arange(p)[None] / p
    return np.cos(angle), np.sin(angle)


def embedding_power(model) -> np.ndarray:
    """Power of the residue embeddings at each frequency k = 1 … (p−1)/2, ``[K]``."""
    p = model.shape.p
    w = np.array(model.W_E[:p], dtype=np.float64)  # [p, D]
    cos, sin = fourier_basis(p)
    return ((cos @ w) ** 2).sum(axis=1) + ((sin @ w) ** 2).sum(axis=1)


def fourier_sparsity(model, top: int) -> float:
    """Share of the embedding's non-constant Fourier power in its ``top`` strongest frequencies."""
    power = embedding_power(model)
    total = power.sum()
    return float(np.sort(power)[::-1][:top].sum() / total) if total > 0 else float("nan")


def sum_directions(p: int, frequencies) -> np.ndarray:
    """Unit vectors over the p² inputs (row a·p + b): cos then sin of 2πk(a+b)/p for each k, ``[2F, p²]``."""
    a, b = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
    total = (a + b).ravel()
    rows = []
    for k in frequencies:
        for fn in (np.cos, np.sin):
            v = fn(2 * np.pi * k * total / p)
            rows.append(v / np.linalg.norm(v))
    return np.array(rows)


def neuron_activations(model, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """MLP neurons at ``=`` ``[p², d_mlp]`` and logits ``[p², p]`` for every pair (float64)."""
    sites = model.sites(mx.array(tokens))
    return np.array(sites["mlp_hidden"], dtype=np.float64), np.array(sites["logits"], dtype=np.float64)


def key_frequencies(model, tokens: np.ndarray, count: int) -> list[int]:
    """The ``count`` frequencies whose cos/sin(2πk(a+b)/p) directions carry the most neuron variance."""
    p = model.shape.p
    hidden, _ = neuron_activations(model, tokens)
    centred = hidden - hidden.mean(axis=0)
    ks = np.arange(1, (p - 1) // 2 + 1)
    power = [float(((sum_directions(p, [k]) @ centred) ** 2).sum()) for k in ks]
    return sorted(int(k) for k in ks[np.argsort(power)[::-1][:count]])


def _cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(len(labels)), labels].mean())


def restricted_and_excluded(model, tokens: np.ndarray, labels: np.ndarray, train: np.ndarray, test: np.ndarray,
                            frequencies) -> dict:
    """Restricted loss (test pairs, neurons at the key frequencies only) and excluded loss (train pairs,
    key-frequency components removed), with the plain train and test losses beside them."""
    p = model.shape.p
    hidden, logits = neuron_activations(model, tokens)  # [p², d_mlp], [p², p]
    directions = sum_directions(p, frequencies)  # [2F, p²]
    mean = hidden.mean(axis=0, keepdims=True)
    key_part = directions.T @ (directions @ (hidden - mean))  # [p², d_mlp]
    to_logits = np.array(model.W_out, np.float64) @ np.array(model.W_U, np.float64)  # [d_mlp, p]
    restricted = (mean + key_part) @ to_logits
    restricted += logits.mean(axis=0, keepdims=True) - restricted.mean(axis=0, keepdims=True)
    excluded = logits - key_part @ to_logits
    return {"restricted_loss": _cross_entropy(restricted[test], labels[test]),
            "excluded_loss": _cross_entropy(excluded[train], labels[train]),
            "train_loss": _cross_entropy(logits[train], labels[train]),
            "test_loss": _cross_entropy(logits[test], labels[test])}


__all__ = ["embedding_power", "fourier_basis", "fourier_sparsity", "key_frequencies", "neuron_activations",
           "restricted_and_excluded", "sum_directions", "weight_norm"]
