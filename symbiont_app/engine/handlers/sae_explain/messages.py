"""Requests and events of explaining a latent (Qt-free, MLX-free: see :mod:`symbiont_app.engine.handlers`)."""

from __future__ import annotations

from dataclasses import dataclass

from ...protocol import Event, Request


@dataclass(frozen=True, kw_only=True)
class ExplainLatent(Request):
    """The loaded model explains a latent from its top contexts; the explanation is then scored by
    detection on held-out texts (does the model, given the explanation, tell where the latent fires?)."""

    latent: int
    max_tokens: int = 32
    """Longest explanation, in tokens."""
    n_each: int = 8
    """Held-out texts where the latent fires, and as many where it never does."""


@dataclass(frozen=True, kw_only=True)
class ScoredText:
    text: str
    fires: bool
    """True: the latent reaches half its corpus maximum in this text; False: it stays under a tenth of it."""
    margin: float
    """logit("yes") − logit("no") of the model asked whether the text matches the explanation."""


@dataclass(frozen=True, kw_only=True)
class LatentExplained(Event):
    latent: int
    explanation: str
    model: str
    """The model that wrote and judged it."""
    accuracy: float
    """Fraction of the scored texts where the model's yes/no is right (chance 0.5: the set is balanced)."""
    auroc: float
    """Area under the ROC of the margins: how well they rank firing texts first, whatever the threshold."""
    scored: tuple[ScoredText, ...]
    """The held-out texts it was judged on, firing ones first."""
