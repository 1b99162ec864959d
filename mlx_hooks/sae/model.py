"""One sparse autoencoder class for the architectures the community ships.

Weights follow SAELens' layout (``W_enc [d_in, d_sae]``, ``W_dec [d_sae, d_in]``,
``b_enc [d_sae]``, ``b_dec [d_in]``, ``threshold [d_sae]`` for JumpReLU/BatchTopK), so
SAELens, Gemma Scope and sparsify files map onto it with at most a transpose.

    f = act(W_encᵀ·(n(x) − b_dec·[apply_b_dec_to_input]) + b_enc)     # [.., d_sae]
    x̂ = n⁻¹(f·W_dec + b_dec)                                          # [.., d_in]

where ``n`` is the input normalisation the format specifies (none, a constant scale,
a per-token rescale to norm √d_in, or per-token layer norm; SAELens' definitions) and
``act`` is ReLU, TopK, BatchTopK (at inference: a global threshold) or JumpReLU (a
per-latent threshold).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, field, fields
from typing import NamedTuple, Sequence

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from ..interventions import ForwardContext, FunctionIntervention, PositionSpec, position_mask
from .top_k import kth_largest

ARCHITECTURES = ("standard", "topk", "batchtopk", "jumprelu")
NORMALISATIONS = ("none", "constant_scale", "constant_norm_rescale", "layer_norm")
LAYER_NORM_EPS = 1e-5


@dataclass
class SAEConfig:
    """What an SAE is and where it reads the model."""

    d_in: int
    """Width of the activations it encodes: the model's d_model at residual, attn_out and
    mlp_out points, n_heads × head_dim at ``attn_z``, d_mlp at ``mlp_hidden``."""
    d_sae: int
    """Number of latents."""
    architecture: str = "topk"
    """``standard`` (ReLU), ``topk``, ``batchtopk`` or ``jumprelu``."""
    k: int | None = None
    """Active latents per token for ``topk`` (and the training k of ``batchtopk``)."""
    hook_point: str = "resid_post.0"
    """Symbiont hook point name (``resid_post.15``), see :mod:`mlx_hooks.points`."""
    apply_b_dec_to_input: bool = True
    """Subtract ``b_dec`` from the input before encoding."""
    normalisation: str = "none"
    """``none``, ``constant_scale`` (x·scale before encoding, ÷scale after decoding),
    ``constant_norm_rescale`` (each token rescaled to norm √d_in, undone after decoding) or
    ``layer_norm`` (each token centred and divided by its std, undone after decoding)."""
    input_scale: float = 1.0
    """The scale of ``constant_scale`` (SAELens' expected-average-norm scaling factor)."""
    sae_id: str = "sae"
    """Stable identifier presets refer to (e.g. ``smollm2-135m/resid_post.15/topk-4608``)."""
    model_name: str | None = None
    """Name of the model it was trained on."""
    model_fingerprint: dict | None = None
    """:class:`~mlx_hooks.fingerprint.ModelFingerprint` as a dict, when the file records one."""
    dtype: str = "float32"
    """Storage dtype of the weights."""
    source_format: str = "saelens"
    """Format it was loaded from: ``saelens``, ``gemma_scope``, ``llama_scope``, ``sparsify`` or ``symbiont``."""
    extra: dict = field(default_factory=dict)
    """Format-specific fields kept for round-trips (training metadata, dataset...)."""

    def __post_init__(self):
        # Types are checked, not coerced: a config saying d_in "576" (a string) or k past d_sae was
        # accepted and failed later, far from the file that was wrong.
        for name in ("d_in", "d_sae"):
            value = getattr(self, name)
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
        if self.k is not None:
            if not isinstance(self.k, numbers.Integral) or isinstance(self.k, bool) or not 1 <= self.k <= self.d_sae:
                raise ValueError(f"k must be a whole number from 1 to d_sae ({self.d_sae}), got {self.k!r}")
        if not (isinstance(self.input_scale, numbers.Real) and math.isfinite(self.input_scale) and self.input_scale > 0):
            raise ValueError(f"input_scale must be a finite number > 0, got {self.input_scale!r}")
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"unknown SAE architecture {self.architecture!r}; known: {', '.join(ARCHITECTURES)}")
        if self.normalisation not in NORMALISATIONS:
            raise ValueError(f"unknown SAE input normalisation {self.normalisation!r}; known: {', '.join(NORMALISATIONS)}")
        if self.architecture == "topk" and not self.k:
            raise ValueError("a topk SAE needs k")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "SAEConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


class SAEOutput(NamedTuple):
    latents: mx.array
    """``[.., d_sae]`` latent activations (zeros where inactive)."""
    top_indices: mx.array
    """``[.., n]`` indices of the strongest latents, strongest first (n = k, or 32)."""
    top_values: mx.array
    """``[.., n]`` their activations."""
    reconstruction: mx.array
    """``[.., d_in]``."""
    fvu: mx.array
    """Scalar: fraction of variance unexplained over all given positions."""


class SAE(nn.Module):
    """A sparse autoencoder over one hook point (weights are MLX parameters)."""

    def __init__(self, cfg: SAEConfig):
        super().__init__()
        self.cfg = cfg
        scale = 1.0 / np.sqrt(cfg.d_in)
        self.W_enc = mx.random.normal((cfg.d_in, cfg.d_sae)) * scale  # [d_in, d_sae]
        self.W_dec = self.W_enc.T  # [d_sae, d_in]
        self.b_enc = mx.zeros((cfg.d_sae,))
        self.b_dec = mx.zeros((cfg.d_in,))
        if cfg.architecture in ("jumprelu", "batchtopk"):
            self.threshold = mx.zeros((cfg.d_sae,))
        # Per-latent observed maximum (from a feature record), for "λ = c × max" clamps.
        self.max_activations: np.ndarray | None = None
        # [d_sae] str: each latent's label (the user's edit, else the automatic one), from
        # mlx_hooks.sae.features. numpy, like max_activations: an nn.Module would put a
        # list or dict into its parameter tree.
        self.labels: np.ndarray | None = None

    # -- normalisation -------------------------------------------------------------
    def _normalise(self, x: mx.array) -> tuple[mx.array, mx.array | float]:
        """Normalised input and the factor decoding multiplies by (``x̂ = out · factor (+ mean)``).

        The per-token modes follow SAELens (``sae_lens/saes/sae.py``,
        ``_setup_activation_normalization``): ``constant_norm_rescale`` multiplies by
        √d_in/‖x‖; ``layer_norm`` divides the centred input by (std + 1e-5) with torch's
        default unbiased std, and decoding multiplies by std (without the eps) and adds the mean.
        """
        mode = self.cfg.normalisation
        if mode == "constant_scale":
            return x * self.cfg.input_scale, 1.0 / self.cfg.input_scale
        if mode == "constant_norm_rescale":
            coeff = float(np.sqrt(self.cfg.d_in)) / mx.maximum(mx.linalg.norm(x, axis=-1, keepdims=True), 1e-12)  # [.., 1]
            return x * coeff, 1.0 / coeff
        if mode == "layer_norm":
            mean, std = _layer_norm_stats(x)
            return (x - mean) / (std + LAYER_NORM_EPS), std
        return x, 1.0

    # -- encode / decode ---------------------------------------------------------------
    def pre_activations(self, x: mx.array) -> mx.array:  # [.., d_in] -> [.., d_sae]
        x_n, _ = self._normalise(x.astype(self.W_enc.dtype))
        if self.cfg.apply_b_dec_to_input:
            x_n = x_n - self.b_dec
        return x_n @ self.W_enc + self.b_enc

    def activate(self, pre: mx.array) -> mx.array:
        arch = self.cfg.architecture
        if arch == "standard":
            return nn.relu(pre)
        if arch == "jumprelu":
            # relu(pre)·[pre > θ], as SAELens and Gemma Scope define it (a negative θ lets no negative value through).
            return mx.where(pre > self.threshold, nn.relu(pre), 0.0)
        if arch == "batchtopk":
            # Inference form of BatchTopK: a global threshold learned during training.
            return mx.where(pre > self.threshold, nn.relu(pre), 0.0)
        k = self.cfg.k
        kth = kth_largest(pre, k)  # [.., 1]
        return mx.where(pre >= kth, nn.relu(pre), 0.0)

    def encode(self, x: mx.array) -> mx.array:
        return self.activate(self.pre_activations(x))

    def decode(self, latents: mx.array, like: mx.array | None = None) -> mx.array:
        """Reconstruction; ``like`` is the input when normalisation depends on it (per-token modes)."""
        out = latents @ self.W_dec + self.b_dec  # [.., d_in]
        mode = self.cfg.normalisation
        if mode == "constant_scale":
            return out / self.cfg.input_scale
        if mode in ("constant_norm_rescale", "layer_norm"):
            if like is None:
                raise ValueError(f"an SAE with {mode} input normalisation needs the input to decode")
            x = like.astype(out.dtype)
            _, factor = self._normalise(x)
            return out * factor + (_layer_norm_stats(x)[0] if mode == "layer_norm" else 0.0)
        return out

    def __call__(self, x: mx.array, top_n: int | None = None) -> SAEOutput:
        latents = self.encode(x)
        reconstruction = self.decode(latents, like=x)
        n = min(top_n or self.cfg.k or 32, self.cfg.d_sae)
        top = mx.argpartition(-latents, n - 1, axis=-1)[..., :n]
        values = mx.take_along_axis(latents, top, axis=-1)
        order = mx.argsort(-values, axis=-1)
        top, values = mx.take_along_axis(top, order, axis=-1), mx.take_along_axis(values, order, axis=-1)
        return SAEOutput(latents, top, values, reconstruction, fraction_unexplained(x, reconstruction))

    # -- clamping -------------------------------------------------------------------------
    def clamp_intervention(
        self, latents: Sequence[int], values: Sequence[float], positions: PositionSpec = "all"
    ) -> FunctionIntervention:
        """Pin latents to values on every forward pass: ``x ← x + Σ dᵢ·(λᵢ − fᵢ(x))``.

        Only the clamped latents' decoder directions are added, so the SAE's
        reconstruction error stays in the residual (the Golden Gate recipe). A value
        of 0 ablates the latent.
        """
        index = mx.array(np.asarray(latents, dtype=np.int32))  # [n]
        target = mx.array(np.asarray(values, dtype=np.float32))  # [n]
        if len(latents) != len(values):
            raise ValueError("clamp: one value per latent")
        if len(latents) and (int(mx.max(index).item()) >= self.cfg.d_sae or int(mx.min(index).item()) < 0):
            raise ValueError(f"clamp: latent index out of range for an SAE with {self.cfg.d_sae} latents")

        def clamp(x: mx.array, ctx: ForwardContext) -> mx.array:  # x: [B, L, d_in]
            current = self.encode(x)[..., index]  # [B, L, n]
            delta = (target - current) @ self.W_dec[index]  # [B, L, d_in] in normalised units
            # Decoding maps a change Δ of the normalised output to Δ·factor in the residual.
            _, factor = self._normalise(x.astype(delta.dtype))
            edited = x + (delta * factor).astype(x.dtype)
            return mx.where(position_mask(positions, ctx), edited, x)

        return FunctionIntervention(clamp, name=f"clamp {self.cfg.sae_id} {list(latents)}")


def _layer_norm_stats(x: mx.array) -> tuple[mx.array, mx.array]:
    """Per-token mean and unbiased std (torch's ``x.std(dim=-1)``), ``[.., 1]`` each."""
    n = x.shape[-1]
    mean = x.mean(axis=-1, keepdims=True)
    std = mx.sqrt(((x - mean) ** 2).sum(axis=-1, keepdims=True) / max(n - 1, 1))
    return mean, std


def fraction_unexplained(x: mx.array, reconstruction: mx.array) -> mx.array:
    """FVU = Σ‖x − x̂‖² / Σ‖x − mean(x)‖² over all positions (1 − variance explained)."""
    x = x.astype(mx.float32).reshape(-1, x.shape[-1])
    r = reconstruction.astype(mx.float32).reshape(-1, x.shape[-1])
    residual = ((x - r) ** 2).sum()
    total = ((x - x.mean(axis=0)) ** 2).sum()
    return residual / mx.maximum(total, 1e-12)
