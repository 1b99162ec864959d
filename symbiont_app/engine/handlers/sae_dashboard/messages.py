"""Requests and events of the feature dashboard: one SAE latent's density and label (Qt-free,
MLX-free: see :mod:`symbiont_app.engine.handlers`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ...protocol import Event, Request

LABEL_SOURCES = ("user", "auto", "none")


@dataclass(frozen=True, kw_only=True)
class GetLatentDensity(Request):
    """A latent's activation histogram over held-out text (the whole SAE's values are computed once, then kept)."""

    latent: int
    bins: int = 40


@dataclass(frozen=True, kw_only=True)
class LatentDensity(Event):
    latent: int
    edges: np.ndarray = field(repr=False)
    """``[bins + 1]`` activation values bounding the bins (0 .. the latent's largest value seen)."""
    counts: np.ndarray = field(repr=False)
    """``[bins]`` tokens whose activation fell in each bin (active tokens only: value > 0)."""
    n_tokens: int
    """Tokens the SAE read."""
    n_active: int
    """Tokens on which the latent was > 0."""
    corpus: str
    """What text it read (shown with the histogram)."""

    @property
    def frequency(self) -> float:
        return self.n_active / self.n_tokens if self.n_tokens else 0.0


@dataclass(frozen=True, kw_only=True)
class SetLatentLabel(Request):
    """The user's own label of a latent (empty text removes it: the automatic label shows again)."""

    latent: int
    text: str


@dataclass(frozen=True, kw_only=True)
class LatentLabelChanged(Event):
    latent: int
    label: str
    """The label shown now (the user's, else the automatic one, else empty)."""
    source: str
    """One of :data:`LABEL_SOURCES`."""
    path: str
    """The ``labels.json`` the user's labels of this SAE are kept in."""
