"""Sampling settings: mlx-lm's sampler, and the distribution it actually draws from.

Sampling itself is mlx-lm's (``make_sampler``). :meth:`SamplingSettings.sampling_logprobs`
reproduces the distribution that sampler draws from (same filters, then the
temperature; see :mod:`mlx_hooks.distribution`) so the reported entropy is the
entropy of what was really sampled.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from mlx_lm.sample_utils import make_sampler

from . import distribution
from .distribution import entropy_bits  # noqa: F401  (re-exported)


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

    @property
    def greedy(self) -> bool:
        return self.temp == 0

    def make_sampler(self):
        return make_sampler(temp=self.temp, top_p=self.top_p, min_p=self.min_p, top_k=self.top_k)

    def sampling_logprobs(self, logprobs) -> np.ndarray:
        """Normalised log-probabilities ``[..., V]`` the sampler draws from (numpy)."""
        return distribution.sampling_logprobs(np.asarray(logprobs), self.temp, self.top_p, self.min_p, self.top_k)
