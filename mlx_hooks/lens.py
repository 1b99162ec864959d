"""Logit lens: what each layer's residual would predict if the model stopped there.

For a residual ``x`` at some hook point the lens distribution is the softmax of what
the model's own head makes of it: final norm, unembedding (tied or not) and, where the
family has one, the final-logit soft cap (Gemma 2). Applied to the last block's
``resid_post`` it equals the model's output on every supported architecture.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from .activation_cache import ActivationRecorder
from .hooks import hooked
from .points import ModelAdapter


@dataclass(frozen=True)
class LensResult:
    """Lens predictions, rows = hook points, columns = positions."""

    points: tuple[str, ...]
    positions: np.ndarray
    """Absolute positions of the columns, ``[T]``."""
    top_tokens: np.ndarray
    """``[P, T, k]`` token ids, most likely first."""
    top_probs: np.ndarray
    """``[P, T, k]`` their probabilities."""
    target_tokens: np.ndarray | None = None
    """``[T]`` the token tracked per column (e.g. the next token), if any."""
    target_probs: np.ndarray | None = None
    """``[P, T]`` probability of the target token."""
    target_ranks: np.ndarray | None = None
    """``[P, T]`` rank of the target token (0 = top)."""

    def top_texts(self, tokenizer) -> list[list[str]]:
        """The top-1 token of every cell as text, ``[P][T]``."""
        return [[tokenizer.decode([int(t)]) for t in row[:, 0]] for row in self.top_tokens]


def lens_logprobs(model: nn.Module, residual: mx.array) -> mx.array:
    """Log-probabilities the unembedding gives a residual: ``[..., D] -> [..., V]``."""
    logits = ModelAdapter(model).logits(residual).astype(mx.float32)
    return logits - mx.logsumexp(logits, axis=-1, keepdims=True)


def logit_lens(
    model: nn.Module,
    residuals: Mapping[str, mx.array] | ActivationRecorder,
    k: int = 5,
    target_tokens: Sequence[int] | None = None,
    points: Sequence[str] | None = None,
) -> LensResult:
    """Apply the lens to cached residuals (``[T, D]`` or ``[1, T, D]`` per point).

    One point at a time, so memory stays at ``T × V`` logits whatever the depth.
    """
    if isinstance(residuals, ActivationRecorder):
        names = list(points or residuals.points)
        arrays = {p: residuals.stack(p)[0] for p in names}
        positions = residuals.positions(names[0])
    else:
        names = list(points or residuals.keys())
        arrays = {p: (residuals[p][0] if residuals[p].ndim == 3 else residuals[p]) for p in names}
        positions = np.arange(arrays[names[0]].shape[0])
    target = mx.array(np.asarray(target_tokens, dtype=np.int32)) if target_tokens is not None else None
    tops, probs, t_probs, t_ranks = [], [], [], []
    for name in names:
        logprobs = lens_logprobs(model, arrays[name])  # [T, V]
        top = mx.argsort(-logprobs, axis=-1)[:, :k]  # [T, k]
        row = [top, mx.exp(mx.take_along_axis(logprobs, top, axis=-1))]
        if target is not None:
            chosen = mx.take_along_axis(logprobs, target[:, None], axis=-1)  # [T, 1]
            row += [mx.exp(chosen[:, 0]), (logprobs > chosen).sum(axis=-1)]
        mx.eval(row)
        tops.append(np.array(row[0]))
        probs.append(np.array(row[1]))
        if target is not None:
            t_probs.append(np.array(row[2]))
            t_ranks.append(np.array(row[3]))
    return LensResult(
        points=tuple(names), positions=positions, top_tokens=np.stack(tops), top_probs=np.stack(probs),
        target_tokens=None if target is None else np.asarray(target_tokens),
        target_probs=np.stack(t_probs) if t_probs else None,
        target_ranks=np.stack(t_ranks) if t_ranks else None,
    )


def run_logit_lens(
    model: nn.Module, tokens: Sequence[int], k: int = 5, kind: str = "resid_post", layers: Sequence[int] | None = None
) -> LensResult:
    """One forward pass over ``tokens``; lens every layer's ``kind``; target = the next token."""
    adapter = ModelAdapter(model)
    layer_ids = list(range(adapter.n_layers)) if layers is None else [adapter.parse(f"{kind}.{i}").layer for i in layers]
    points = [f"{kind}.{i}" for i in layer_ids]
    with hooked(model, capture=points) as session:
        mx.eval(model(mx.array([list(tokens)])))
    # The target of column t is token t+1; the last column tracks its own top-1.
    targets = list(tokens[1:]) + [int(tokens[-1])]
    return logit_lens(model, session.recorder, k=k, target_tokens=targets, points=points)
