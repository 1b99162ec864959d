"""Sampling settings, and the distribution a sampler actually draws from.

The sampler itself is mlx-lm's (``make_sampler``); this module only reproduces the
distribution it samples — the same filters (``apply_top_p``, ``apply_min_p``,
``apply_top_k`` from ``mlx_lm.sample_utils``) followed by the temperature — so the
entropy we report is the entropy of what was really sampled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import mlx.core as mx
from mlx_lm.sample_utils import apply_min_p, apply_top_k, apply_top_p, make_sampler

LOG2E = 1.0 / math.log(2.0)


@dataclass(frozen=True)
class SamplingSettings:
    """How the next token is chosen."""

    temp: float = 0.0
    """Temperature; 0 means greedy (argmax)."""
    top_p: float = 0.0
    """Nucleus sampling mass in (0, 1); 0 or 1 disables it."""
    min_p: float = 0.0
    """Drop tokens below ``min_p`` × the top token's probability; 0 disables it."""
    top_k: int = 0
    """Keep only the k most likely tokens; 0 disables it."""
    seed: int | None = None
    """Seed for MLX's random generator at the start of a generation (reproducible runs)."""

    def __post_init__(self):
        if self.temp < 0 or not 0 <= self.top_p <= 1 or not 0 <= self.min_p <= 1 or self.top_k < 0:
            raise ValueError(f"invalid sampling settings: {self}")

    def make_sampler(self):
        return make_sampler(temp=self.temp, top_p=self.top_p, min_p=self.min_p, top_k=self.top_k)

    def sampling_logprobs(self, logprobs: mx.array) -> mx.array:
        """Normalised log-probabilities the sampler draws from, ``[..., V]``.

        Greedy decoding is a point mass on the argmax.
        """
        if self.temp == 0:
            top = mx.argmax(logprobs, axis=-1, keepdims=True)
            hit = mx.arange(logprobs.shape[-1]) == top
            return mx.where(hit, 0.0, -mx.inf).astype(logprobs.dtype)
        filtered = logprobs
        if 0 < self.top_p < 1.0:
            filtered = apply_top_p(filtered, self.top_p)
        if self.min_p != 0.0:
            filtered = apply_min_p(filtered, self.min_p)
        if self.top_k > 0:
            filtered = apply_top_k(filtered, self.top_k)
        scaled = filtered * (1.0 / self.temp)
        return scaled - mx.logsumexp(scaled, axis=-1, keepdims=True)


def entropy_bits(logprobs: mx.array) -> mx.array:
    """Shannon entropy in bits of normalised log-probabilities ``[..., V]`` -> ``[...]``."""
    p = mx.exp(logprobs)
    # 0·log 0 = 0: masked (-inf) entries would otherwise give nan
    terms = mx.where(p > 0, p * logprobs, 0.0)
    return -terms.sum(axis=-1) * LOG2E
