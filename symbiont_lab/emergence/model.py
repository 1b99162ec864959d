"""The grokking network: a one-layer transformer that reads ``a b =`` and predicts (a + b) mod p.

Nanda et al. (2023)'s architecture: token and position embeddings, one attention layer
(4 heads, no biases), a ReLU MLP (with biases), no LayerNorm, an unembedding without bias.
The vocabulary is the p residues plus the ``=`` token (index p).

One change for speed, not for behaviour: with a single layer, the logits at ``=`` depend
on the other positions only through their keys and values, so only the ``=`` position's
query, attention output, MLP and unembedding are computed (a third of the MLP work of
running every position, the part the loss never reads). The result is the same function.

Two named sites accept an edit (the experiments' interventions), each a function of the
activation at ``=``:

- ``resid_mid``: the residual stream after attention, the MLP's input  # [B, D]
- ``mlp_hidden``: the MLP's ReLU activations ("neurons"), input of ``W_out``  # [B, d_mlp]

Initial weights come from a NumPy stream named by the seed (``N(0, 1/fan_in)``), so a run
does not depend on MLX's global random state or the device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import mlx.core as mx
import mlx.nn as nn
import numpy as np

SITES = ("resid_mid", "mlp_hidden")
"""Where :meth:`ModularTransformer.__call__` accepts an edit."""

Edit = Callable[[mx.array], mx.array]


@dataclass(frozen=True)
class ModelShape:
    """Widths of the grokking network."""

    p: int = 113
    """The modulus: p residue tokens (and p output classes)."""
    d_model: int = 128
    """Residual stream width."""
    n_heads: int = 4
    """Attention heads (head width d_model / n_heads)."""
    d_mlp: int = 512
    """MLP hidden width (the neurons)."""

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads


class ModularTransformer(nn.Module):
    """One attention layer and one ReLU MLP over ``[a, b, =]`` (see the module docstring)."""

    def __init__(self, shape: ModelShape, seed: int = 0):
        super().__init__()
        if shape.d_model % shape.n_heads:
            raise ValueError(f"d_model {shape.d_model} is not a multiple of n_heads {shape.n_heads}")
        self.shape = shape
        rng = np.random.default_rng([seed, *b"grokking-init"])
        d, m = shape.d_model, shape.d_mlp

        def normal(*dims, fan_in):
            return mx.array((rng.standard_normal(dims) / np.sqrt(fan_in)).astype(np.float32))

        self.W_E = normal(shape.p + 1, d, fan_in=d)  # [p+1, D]
        self.W_pos = normal(3, d, fan_in=d)  # [3, D]
        self.W_Q = normal(d, d, fan_in=d)  # [D, H·Dh]
        self.W_K = normal(d, d, fan_in=d)
        self.W_V = normal(d, d, fan_in=d)
        self.W_O = normal(d, d, fan_in=d)  # [H·Dh, D]
        self.W_in = normal(d, m, fan_in=d)  # [D, d_mlp]
        self.b_in = mx.zeros((m,))
        self.W_out = normal(m, d, fan_in=m)  # [d_mlp, D]
        self.b_out = mx.zeros((d,))
        self.W_U = normal(d, shape.p, fan_in=d)  # [D, p]

    def sites(self, tokens: mx.array, edits: Mapping[str, Edit] | None = None) -> dict[str, mx.array]:
        """Activations at ``=`` of every site, plus ``logits`` (edits applied where given)."""
        edits = edits or {}
        s = self.shape
        x = self.W_E[tokens] + self.W_pos  # [B, 3, D]
        batch = x.shape[0]
        q = (x[:, -1] @ self.W_Q).reshape(batch, s.n_heads, 1, s.d_head)  # [B, H, 1, Dh]
        k = (x @ self.W_K).reshape(batch, 3, s.n_heads, s.d_head).transpose(0, 2, 1, 3)  # [B, H, 3, Dh]
        v = (x @ self.W_V).reshape(batch, 3, s.n_heads, s.d_head).transpose(0, 2, 1, 3)  # [B, H, 3, Dh]
        weights = mx.softmax((q @ k.transpose(0, 1, 3, 2)) / np.sqrt(s.d_head), axis=-1)  # [B, H, 1, 3]
        z = (weights @ v).reshape(batch, s.d_model)  # [B, H·Dh]
        resid_mid = x[:, -1] + z @ self.W_O  # [B, D]
        if "resid_mid" in edits:
            resid_mid = edits["resid_mid"](resid_mid)
        hidden = nn.relu(resid_mid @ self.W_in + self.b_in)  # [B, d_mlp]
        if "mlp_hidden" in edits:
            hidden = edits["mlp_hidden"](hidden)
        resid_post = resid_mid + hidden @ self.W_out + self.b_out  # [B, D]
        return {"resid_mid": resid_mid, "mlp_hidden": hidden, "logits": resid_post @ self.W_U}  # logits [B, p]

    def __call__(self, tokens: mx.array, edits: Mapping[str, Edit] | None = None) -> mx.array:
        """Logits at ``=``, ``[B, p]``, for ``tokens`` ``[B, 3]``."""
        unknown = set(edits or ()) - set(SITES)
        if unknown:
            raise ValueError(f"no site {sorted(unknown)} in the grokking network (sites: {', '.join(SITES)})")
        return self.sites(tokens, edits)["logits"]


__all__ = ["SITES", "ModelShape", "ModularTransformer"]
