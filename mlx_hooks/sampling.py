"""Sampling settings: mlx-lm's sampler, and the distribution it actually draws from.

Sampling itself is mlx-lm's (``make_sampler``). :meth:`SamplingSettings.sampling_logprobs`
reproduces the distribution that sampler draws from (same filters, then the
temperature; see :mod:`mlx_hooks.distribution`) so the reported entropy is the
entropy of what was really sampled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from mlx_lm.sample_utils import make_sampler

from . import distribution
from .distribution import entropy_bits  # noqa: F401  (re-exported)


SEED_LIMIT = 2**64
"""MLX's random seed is an unsigned 64-bit integer."""


def sampling_problems(temp, top_p, min_p, top_k, seed) -> list[tuple[str, str]]:
    """``(setting, what is wrong)`` for each invalid setting (empty when all are valid).

    NaN compares false with everything, so each range is written as the condition that must
    hold: ``temp = nan`` sampled garbage and ``temp = inf`` uniform tokens before this check."""
    out = []

    def number(value) -> bool:
        return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)

    if not (number(temp) and math.isfinite(temp) and temp >= 0):
        out.append(("temp", f"must be a finite number >= 0 (0 = greedy), got {temp!r}"))
    if not (number(top_p) and 0 <= top_p <= 1):
        out.append(("top_p", f"must lie in [0, 1] (0 or 1 = off), got {top_p!r}"))
    if not (number(min_p) and 0 <= min_p <= 1):
        out.append(("min_p", f"must lie in [0, 1] (0 = off), got {min_p!r}"))
    if not (isinstance(top_k, (int, np.integer)) and not isinstance(top_k, bool) and top_k >= 0):
        out.append(("top_k", f"must be a whole number >= 0 (0 = off), got {top_k!r}"))
    if seed is not None and not (isinstance(seed, (int, np.integer)) and not isinstance(seed, bool)
                                 and 0 <= seed < SEED_LIMIT):
        out.append(("seed", f"must be a whole number in [0, 2^64), got {seed!r}"))
    return out


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
        problems = sampling_problems(self.temp, self.top_p, self.min_p, self.top_k, self.seed)
        if problems:
            raise ValueError("invalid sampling settings: " + "; ".join(f"{name} {why}" for name, why in problems))

    @property
    def greedy(self) -> bool:
        return self.temp == 0

    def make_sampler(self):
        return make_sampler(temp=self.temp, top_p=self.top_p, min_p=self.min_p, top_k=self.top_k)

    def sampling_logprobs(self, logprobs) -> np.ndarray:
        """Normalised log-probabilities ``[..., V]`` the sampler draws from (numpy)."""
        return distribution.sampling_logprobs(np.asarray(logprobs), self.temp, self.top_p, self.min_p, self.top_k)
