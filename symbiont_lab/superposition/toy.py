"""The ReLU-output toy model of superposition (Elhage et al. 2022), many copies trained at once in MLX.

    h = W x            # [m]: n features squeezed into m < n dimensions
    x̂ = ReLU(Wᵀ h + b)  # [n]

with W ∈ R^{m×n}. Each feature is 0 with probability S (the sparsity), else uniform in
[0, 1]; the loss is Σ_i I_i (x_i − x̂_i)² averaged over the batch, with importance
I_i = decay^i. One :class:`ToyStack` holds K independent models (one per sparsity of a
sweep) as ``W [K, m, n]`` and ``b [K, 1, n]``: the K losses are summed, so every copy
gets exactly the gradient it would get alone and Adam (element-wise) treats it alone.

Inputs are drawn with NumPy from a stream named by the seed and the purpose, then turned
into features inside the compiled step as ``x = u / p if u < p else 0`` (``p = 1 − S``:
given ``u < p``, ``u / p`` is uniform on [0, 1]), so one uniform draw makes both the mask
and the value. MLX's own random generator is not used: on this CPU it took ~8 ms per step
for two draws of [7, 1024, 20], more than the rest of the step.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Callable

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np


@dataclass(frozen=True)
class ToySpec:
    """One toy-model sweep: the same n → m model trained at several sparsities."""

    n_features: int
    """n, the number of input features."""
    n_hidden: int
    """m, the width of the bottleneck."""
    sparsities: tuple[float, ...]
    """S per copy: the probability that a feature is 0 (0 = dense)."""
    features_per_copy: tuple[int, ...] | None = None
    """How many of the n features copy k really has (None: all n). The others are padding —
    never active, importance 0, so they get no gradient — which lets copies with different n
    train as one stack (the interference sweep over n)."""
    importance_decay: float = 0.9
    """I_i = decay^i (1.0: every feature equally important)."""
    steps: int = 6000
    """Adam steps (published: 10,000)."""
    batch: int = 1024
    """Inputs per step (published 1,024)."""
    lr: float = 1e-3
    """Adam learning rate (published 1e-3, constant)."""

    def real_features(self) -> np.ndarray:
        """``[K]``: the number of real (non-padding) features of each copy."""
        counts = self.features_per_copy or (self.n_features,) * len(self.sparsities)
        if len(counts) != len(self.sparsities) or not all(1 <= c <= self.n_features for c in counts):
            raise ValueError(f"features_per_copy {counts}: one count in 1..{self.n_features} per sparsity")
        return np.asarray(counts)

    def importance(self) -> np.ndarray:
        """``[K, 1, n]``: decay^i on each copy's real features, 0 on its padding."""
        real = np.arange(self.n_features)[None, :] < self.real_features()[:, None]  # [K, n]
        return np.where(real, self.importance_decay ** np.arange(self.n_features), 0.0).astype(np.float32)[:, None, :]

    def density(self) -> np.ndarray:
        """``[K, 1, n]``: the probability 1 − S that a feature is active (0 on padding)."""
        real = np.arange(self.n_features)[None, :] < self.real_features()[:, None]  # [K, n]
        dense = 1.0 - np.asarray(self.sparsities, dtype=np.float32)[:, None]
        return np.where(real, dense, 0.0).astype(np.float32)[:, None, :]


def seed_stream(seed: int, purpose: str) -> np.random.Generator:
    """A NumPy generator for one seed and one purpose (independent of every other pair and of MLX's state)."""
    return np.random.default_rng([seed, *purpose.encode("utf-8")])


class ToyStack(nn.Module):
    """K toy models with stacked parameters: ``W [K, m, n]``, ``b [K, 1, n]``."""

    def __init__(self, w: np.ndarray, b: np.ndarray):
        super().__init__()
        self.W = mx.array(w)
        self.b = mx.array(b)

    def __call__(self, x: mx.array) -> mx.array:  # x: [K, B, n]
        h = x @ self.W.transpose(0, 2, 1)  # [K, B, m]
        return nn.relu(h @ self.W + self.b)  # [K, B, n]


def initial_weights(spec: ToySpec, seed: int, purpose: str) -> tuple[np.ndarray, np.ndarray]:
    """Xavier-normal W (as the published code's ``xavier_normal_``, for each copy's own n) and zero b."""
    rng = seed_stream(seed, purpose + "/init")
    k, m, n = len(spec.sparsities), spec.n_hidden, spec.n_features
    std = np.sqrt(2.0 / (m + spec.real_features()))[:, None, None]  # [K, 1, 1]
    return ((rng.normal(0.0, 1.0, size=(k, m, n)) * std).astype(np.float32), np.zeros((k, 1, n), dtype=np.float32))


@dataclass
class ToyResult:
    """Trained weights of every copy and its final loss."""

    W: np.ndarray
    """``[K, m, n]``."""
    b: np.ndarray
    """``[K, n]``."""
    loss: np.ndarray
    """``[K]``: mean importance-weighted loss of each copy over the last 100 steps."""
    seconds: float


def train_toy(spec: ToySpec, seed: int, purpose: str = "toy",
              on_progress: Callable[[int, np.ndarray], None] | None = None, report_every: int = 500) -> ToyResult:
    """Train the K copies of ``spec`` from seed ``seed``; ``on_progress(step, losses [K])`` every ``report_every``."""
    if not spec.sparsities:
        raise ValueError("a toy sweep needs at least one sparsity")
    if any(not 0.0 <= s < 1.0 for s in spec.sparsities):
        raise ValueError(f"sparsities must lie in [0, 1): {spec.sparsities}")
    started = time.perf_counter()
    model = ToyStack(*initial_weights(spec, seed, purpose))
    optimizer = optim.Adam(learning_rate=spec.lr)
    density = mx.array(spec.density())  # [K, 1, n]
    importance = mx.array(spec.importance())  # [K, 1, n]

    def loss_fn(model: ToyStack, u: mx.array) -> tuple[mx.array, mx.array]:
        x = mx.where(u < density, u / mx.maximum(density, 1e-12), 0.0)  # [K, B, n]
        per_copy = (importance * (x - model(x)) ** 2).sum(-1).mean(-1)  # [K]
        return per_copy.sum(), per_copy

    loss_and_grad = nn.value_and_grad(model, loss_fn)
    state = [model.state, optimizer.state]

    @functools.partial(mx.compile, inputs=state, outputs=state)
    def step(u: mx.array) -> mx.array:
        (_, per_copy), grads = loss_and_grad(model, u)
        optimizer.update(model, grads)
        return per_copy

    rng = seed_stream(seed, purpose + "/data")
    shape = (len(spec.sparsities), spec.batch, spec.n_features)
    tail = []
    for i in range(spec.steps):
        per_copy = step(mx.array(rng.random(shape, dtype=np.float32)))
        mx.eval(per_copy, state)
        if i >= spec.steps - 100:
            tail.append(np.array(per_copy))
        if on_progress is not None and ((i + 1) % report_every == 0 or i + 1 == spec.steps):
            on_progress(i + 1, np.array(per_copy))
    return ToyResult(np.array(model.W), np.array(model.b)[:, 0, :], np.mean(tail, axis=0),
                     time.perf_counter() - started)


__all__ = ["ToyResult", "ToySpec", "ToyStack", "initial_weights", "seed_stream", "train_toy"]
