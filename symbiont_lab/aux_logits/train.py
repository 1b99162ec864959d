"""Training loops: the teacher on digits, the students on the teacher's logits of noise.

Both train a whole :class:`~.model.MLPStack` (roles × seeds) with one compiled Adam step
(``mlx.optimizers.Adam``: element-wise, so every stacked network trains as it would alone;
the loss is the *sum* of the networks' mean losses so each gets its own gradient).

- Teacher: cross-entropy on the 10 class logits only — the auxiliary logits get no
  training signal and move only because the layers below them do.
- Students: KL(teacher ‖ student) of the softmax over a slice of the logits, on uniform
  noise in [−1, 1] (fresh each step, from the seed's own stream, the same noise for every
  role of a seed). Which slice is per role: ``"aux"`` (the m auxiliary logits; with m = 1 the
  softmax is constant, so nothing is learned — as published) or ``"all"`` (all 10 + m).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np

from .model import N_CLASSES, MLPStack, seed_stream


@dataclass
class Step:
    """What a training loop reports after each epoch (to drive progress and curves)."""

    phase: str
    """``teacher`` or ``students``."""
    epoch: int
    """Epochs finished (1-based)."""
    steps: int
    """Optimizer steps finished in this phase."""
    loss: np.ndarray
    """Mean training loss over the epoch, per network ``[R, S]``."""
    accuracy: np.ndarray
    """Test accuracy of the class logits after the epoch, per network ``[R, S]``."""


Callback = Callable[[Step], None]


def accuracy(model: MLPStack, x_test: mx.array, y_test: mx.array, chunk: int = 4096) -> np.ndarray:
    """Share of test digits whose largest class logit is the label, per network ``[R, S]``."""
    correct = None
    for start in range(0, x_test.shape[0], chunk):
        logits = model(x_test[None, None, start:start + chunk])[..., :N_CLASSES]  # [R, S, B, 10]
        hits = (mx.argmax(logits, axis=-1) == y_test[start:start + chunk]).sum(axis=-1)
        correct = hits if correct is None else correct + hits
    return np.array(correct.astype(mx.float32)) / x_test.shape[0]


def _log_softmax(z: mx.array) -> mx.array:
    return z - mx.logsumexp(z, axis=-1, keepdims=True)


def kl_divergence(teacher_logits: mx.array, student_logits: mx.array) -> mx.array:
    """KL(softmax(teacher) ‖ softmax(student)) over the last axis, batch-mean: ``[..., B, K]`` → ``[...]``."""
    lt, ls = _log_softmax(teacher_logits), _log_softmax(student_logits)
    return (mx.exp(lt) * (lt - ls)).sum(axis=-1).mean(axis=-1)


def train_teacher(model: MLPStack, x_train: np.ndarray, y_train: np.ndarray, seeds: list[int], epochs: int,
                  batch: int, lr: float, x_test: mx.array, y_test: mx.array,
                  callback: Callback | None = None) -> None:
    """Train ``model`` (one role, S seeds) on the class logits; each seed shuffles the data its own way."""
    optimizer = optim.Adam(learning_rate=lr)
    state = [model.state, optimizer.state]

    def loss_fn(m, xb, yb):
        logits = m(xb)[..., :N_CLASSES]  # [1, S, B, 10]
        losses = nn.losses.cross_entropy(logits, yb, reduction="none").mean(axis=-1)  # [1, S]
        return losses.sum(), losses

    grad_fn = nn.value_and_grad(model, loss_fn)

    @partial(mx.compile, inputs=state, outputs=state)
    def step(xb, yb):
        (_, losses), grads = grad_fn(model, xb, yb)
        optimizer.update(model, grads)
        return losses

    x, y = mx.array(x_train), mx.array(y_train)
    n = len(x_train)
    per_epoch = max(1, n // batch)  # drop the last partial batch: fixed shapes, one compiled graph
    orders = [seed_stream(s, "order") for s in seeds]
    steps = 0
    for epoch in range(1, epochs + 1):
        perm = np.stack([r.permutation(n) for r in orders])  # [S, N]
        total = mx.zeros(model.shape)
        for i in range(per_epoch):
            idx = mx.array(perm[:, i * batch:(i + 1) * batch])  # [S, B]
            losses = step(x[idx][None], y[idx][None])
            total = total + losses
            mx.eval(total, model.parameters(), optimizer.state)
            steps += 1
        if callback:
            callback(Step("teacher", epoch, steps, np.array(total) / per_epoch, accuracy(model, x_test, y_test)))


def train_students(students: MLPStack, teacher: MLPStack, slices: list[str], seeds: list[int], steps_per_epoch: int,
                   epochs: int, batch: int, lr: float, x_test: mx.array, y_test: mx.array,
                   callback: Callback | None = None) -> None:
    """Distil ``teacher`` (one role) into ``students`` (R roles, same S seeds) on uniform noise.

    ``slices[r]`` is ``"aux"`` or ``"all"``: the logits role r matches.
    """
    roles, n_seeds = students.shape
    if len(slices) != roles or teacher.shape != (1, n_seeds):
        raise ValueError(f"{roles} student roles need {roles} slices and a [1, {n_seeds}] teacher")
    aux_mask = mx.array([[1.0] if s == "aux" else [0.0] for s in slices])  # [R, 1]
    optimizer = optim.Adam(learning_rate=lr)
    state = [students.state, optimizer.state]
    teacher.freeze()

    def loss_fn(m, xb):
        target = mx.stop_gradient(teacher(xb))  # [1, S, B, 10 + m]
        logits = m(xb)  # [R, S, B, 10 + m]
        losses = (aux_mask * kl_divergence(target[..., N_CLASSES:], logits[..., N_CLASSES:])
                  + (1 - aux_mask) * kl_divergence(target, logits))  # [R, S]
        return losses.sum(), losses

    grad_fn = nn.value_and_grad(students, loss_fn)

    @partial(mx.compile, inputs=state, outputs=state)
    def step(xb):
        (_, losses), grads = grad_fn(students, xb)
        optimizer.update(students, grads)
        return losses

    dim = students.layers[0]["w"].shape[2]
    noise = [seed_stream(s, "noise") for s in seeds]
    steps = 0
    for epoch in range(1, epochs + 1):
        total = mx.zeros(students.shape)
        for _ in range(steps_per_epoch):
            xb = mx.array(np.stack([r.random((batch, dim), dtype=np.float32) * 2 - 1 for r in noise]))  # [S, B, D]
            total = total + step(xb[None])
            mx.eval(total, students.parameters(), optimizer.state)
            steps += 1
        if callback:
            callback(Step("students", epoch, steps, np.array(total) / steps_per_epoch,
                          accuracy(students, x_test, y_test)))


__all__ = ["Step", "accuracy", "kl_divergence", "train_students", "train_teacher"]
