"""Requests and events of the lens and patching panel (Qt-free, MLX-free: see :mod:`symbiont_app.engine.handlers`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...protocol import Event, Request


@dataclass(frozen=True, kw_only=True)
class RunLens(Request):
    """Logit lens over the current conversation (a re-run of its tokens through the model)."""

    max_positions: int = 32
    """Only the last positions (the heatmap stays readable and the lens cheap)."""
    k: int = 5
    kind: str = "resid_post"


@dataclass(frozen=True, kw_only=True)
class LensComputed(Event):
    points: tuple[str, ...]
    positions: np.ndarray
    """``[T]`` absolute positions of the columns."""
    tokens: tuple[str, ...]
    """The conversation's token at each column."""
    top_texts: tuple[tuple[tuple[str, ...], ...], ...]
    """``[P][T][k]`` top tokens as text."""
    top_probs: np.ndarray
    """``[P, T, k]``."""
    target_probs: np.ndarray | None
    """``[P, T]`` probability of the conversation's next token (None when the lens had no targets)."""
    source: str
    """Where the residuals came from, in words."""


@dataclass(frozen=True, kw_only=True)
class RunPatching(Request):
    clean: str
    corrupted: str
    clean_answer: str
    corrupted_answer: str
    kind: str = "resid_pre"


@dataclass(frozen=True, kw_only=True)
class PatchingComputed(Event):
    layers: tuple[int, ...]
    scores: np.ndarray
    """``[n_layers, T]``: 1 = clean behaviour restored by patching there, 0 = corrupted."""
    tokens: tuple[str, ...]
    """Corrupted prompt's tokens (columns)."""
    clean_tokens: tuple[str, ...]
    clean_logit_diff: float
    corrupted_logit_diff: float
    answers: tuple[str, str]
    kind: str
    notes: tuple[str, ...]
