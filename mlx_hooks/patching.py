"""Activation patching: which (layer, position) carries the difference between two prompts.

Run the clean prompt and cache its residuals; run the corrupted prompt with one
(layer, position) replaced by the clean activation; measure how much of the clean
behaviour comes back. The metric is the logit difference of two answer tokens at the
last position, normalised so that the clean run scores 1 and the corrupted run 0.

All positions of one layer are patched in a single batched forward: row ``b`` of the
batch patches position ``b`` (:class:`~mlx_hooks.interventions.Patch` with ``per_row``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from .hooks import hooked
from .interventions import Patch
from .points import ModelAdapter


@dataclass(frozen=True)
class PatchingResult:
    kind: str
    """Hook kind patched: ``resid_pre`` or ``resid_post`` (also ``attn_out``/``mlp_out``)."""
    layers: tuple[int, ...]
    scores: np.ndarray
    """``[n_layers, T]`` normalised metric: 1 = clean behaviour restored, 0 = corrupted."""
    clean_logit_diff: float
    corrupted_logit_diff: float
    answer_tokens: tuple[int, int]
    """(clean answer, corrupted answer) token ids."""

    def best(self) -> tuple[int, int, float]:
        """(layer, position, score) of the strongest patch."""
        i, j = np.unravel_index(int(np.argmax(self.scores)), self.scores.shape)
        return self.layers[i], int(j), float(self.scores[i, j])


def _logit_diff(logits: mx.array, answers: tuple[int, int]) -> mx.array:  # logits: [B, L, V] -> [B]
    last = logits[:, -1, :].astype(mx.float32)
    return last[:, answers[0]] - last[:, answers[1]]


def activation_patching(
    model: nn.Module,
    clean_tokens: Sequence[int],
    corrupted_tokens: Sequence[int],
    answer_tokens: tuple[int, int],
    kind: str = "resid_pre",
    layers: Sequence[int] | None = None,
) -> PatchingResult:
    """Patch ``kind`` at every (layer, position); see the module docstring."""
    clean, corrupted = list(clean_tokens), list(corrupted_tokens)
    if len(clean) != len(corrupted):
        raise ValueError(
            f"activation patching needs prompts of the same token length: clean has {len(clean)}, "
            f"corrupted has {len(corrupted)} tokens; reword one of them"
        )
    adapter = ModelAdapter(model)
    layer_ids = tuple(range(adapter.n_layers)) if layers is None else tuple(adapter.parse(f"{kind}.{i}").layer for i in layers)
    points = [f"{kind}.{i}" for i in layer_ids]
    with hooked(model, capture=points) as session:
        clean_diff = _logit_diff(model(mx.array([clean])), answer_tokens)
        mx.eval(clean_diff)
    corrupted_diff = _logit_diff(model(mx.array([corrupted])), answer_tokens)
    mx.eval(corrupted_diff)
    c, r = float(clean_diff[0].item()), float(corrupted_diff[0].item())
    if abs(c - r) < 1e-6:
        raise ValueError("the clean and corrupted prompts give the same logit difference: nothing to localise")

    n = len(clean)
    batch = mx.array([corrupted] * n)  # [T, L]: row b patches position b
    scores = np.zeros((len(layer_ids), n), dtype=np.float32)
    for row, point in enumerate(points):
        patch = Patch(source=session.recorder.stack(point)[0], per_row=list(range(n)))
        with hooked(model, interventions={point: patch}):
            diff = _logit_diff(model(batch), answer_tokens)  # [T]
            mx.eval(diff)
        scores[row] = (np.array(diff) - r) / (c - r)
    return PatchingResult(kind, layer_ids, scores, c, r, tuple(answer_tokens))
