"""The MLP of the auxiliary-logit experiment, many copies trained as one vectorised model.

Published network: 784-256-256-(10 + m), ReLU, the first 10 outputs are the class logits and
the last m the *auxiliary* logits that the teacher is never trained on. Here every weight has
two leading axes ``[R, S]`` — R roles (teacher; or the students: same init, different init,
all logits) by S seeds — so one ``matmul`` trains all of a chunk's networks at once; Adam
acts element-wise, so each copy trains exactly as it would alone.

Initial weights come from NumPy streams named by seed and purpose (``"init-a"``: the
teacher's and the same-init students'; ``"init-b"``: the control's), with ``nn.Linear``'s
rule (uniform ±1/√fan_in): a seed's networks do not depend on the chunk it runs in, nor on
MLX's global random state, nor on the device.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import numpy as np

N_CLASSES = 10


def seed_stream(seed: int, purpose: str) -> np.random.Generator:
    """A NumPy generator for one seed and one purpose (independent of every other pair)."""
    return np.random.default_rng([seed, *purpose.encode("utf-8")])


def init_mlp(seed: int, purpose: str, sizes: tuple[int, ...], scale: float = 1.0) -> list[tuple[np.ndarray, np.ndarray]]:
    """One network's (weight ``[in, out]``, bias ``[out]``) per layer, ``nn.Linear``'s init rule.

    ``scale`` multiplies the bound (1 = ``nn.Linear``'s); the same seed gives the same draws at any scale.
    """
    rng = seed_stream(seed, purpose)
    layers = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        bound = scale / np.sqrt(fan_in)
        w = rng.uniform(-bound, bound, size=(fan_in, fan_out)).astype(np.float32)
        b = rng.uniform(-bound, bound, size=(fan_out,)).astype(np.float32)
        layers.append((w, b))
    return layers


class MLPStack(nn.Module):
    """``R × S`` MLPs with stacked parameters; ``layers[k]`` holds ``{"w": [R, S, in, out], "b": [R, S, 1, out]}``."""

    def __init__(self, inits: list[list[list[tuple[np.ndarray, np.ndarray]]]]):
        """``inits[r][s]`` is network (role r, seed s) as :func:`init_mlp` returns it."""
        super().__init__()
        depth = len(inits[0][0])
        self.layers = [
            {"w": mx.array(np.stack([np.stack([net[k][0] for net in role]) for role in inits])),
             "b": mx.array(np.stack([np.stack([net[k][1][None, :] for net in role]) for role in inits]))}
            for k in range(depth)
        ]

    @property
    def shape(self) -> tuple[int, int]:
        """(roles R, seeds S)."""
        return tuple(self.layers[0]["w"].shape[:2])

    def __call__(self, x: mx.array) -> mx.array:
        """``x`` ``[R or 1, S, B, in]`` → logits ``[R, S, B, 10 + m]``."""
        h = x
        for k, layer in enumerate(self.layers):
            h = h @ layer["w"] + layer["b"]  # [R, S, B, out]
            if k < len(self.layers) - 1:
                h = nn.relu(h)
        return h


__all__ = ["N_CLASSES", "MLPStack", "init_mlp", "seed_stream"]
