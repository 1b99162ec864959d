"""The temperature / entropy view: per-token statistics, and the next-token distribution
re-drawn in numpy for any temperature / top-p / min-p (no model run, no MLX).

It reads the full raw log-probabilities the conversation keeps for recent positions
(see :mod:`.conversation`); the bars are the token's stored top alternatives, which are
the top tokens at any setting (tempering and the filters never reorder tokens).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from mlx_hooks.distribution import entropy_bits, sampling_logprobs

from .observable import Observable


@dataclass(frozen=True)
class DistributionView:
    position: int
    labels: tuple[str, ...]
    """Token texts of the bars, most likely first."""
    probs: np.ndarray
    """Probability of each bar's token at the view's settings, ``[N]``."""
    raw_probs: np.ndarray
    """The same tokens at temperature 1, no filters, ``[N]``."""
    entropy: float
    """Bits, at the view's settings."""
    kept: int
    """Tokens left with non-zero probability after the filters."""

    @property
    def effective_choices(self) -> float:
        return float(2.0 ** self.entropy)


class TemperatureView(Observable):
    """Notifies ``series`` (the per-token curves changed) and ``distribution``."""

    def __init__(self, conversation: Any, temp: float = 1.0, top_p: float = 0.0, min_p: float = 0.0, bars: int = 20):
        super().__init__()
        self.conversation = conversation
        self.temp, self.top_p, self.min_p, self.bars = float(temp), float(top_p), float(min_p), bars
        self._distribution: DistributionView | None = None
        self._missing: str | None = None
        self._dirty = True
        conversation.subscribe(self._on_conversation)

    @property
    def distribution(self) -> DistributionView | None:
        """The focused token's distribution at the view's settings (computed on first read after a change:
        while tokens stream, only the redraws the window actually makes pay for it)."""
        if self._dirty:
            self._compute()
        return self._distribution

    @property
    def missing(self) -> str | None:
        """Why there is no distribution to show (nothing yet / position too old)."""
        if self._dirty:
            self._compute()
        return self._missing

    def handle_event(self, event) -> None:  # driven by the conversation, not by events directly
        pass

    def set_params(self, temp: float | None = None, top_p: float | None = None, min_p: float | None = None) -> None:
        if temp is not None:
            self.temp = max(0.0, float(temp))
        if top_p is not None:
            self.top_p = float(top_p)
        if min_p is not None:
            self.min_p = float(min_p)
        self.recompute()

    def apply_to_chat(self, settings) -> None:
        """Make the what-if settings the chat's sampling settings (its top-k and max tokens stay).

        ``settings`` is the session's :class:`~.settings.Settings`; it notifies ``sampling``
        (the chat's controls take the new values) and ``settings`` (saved soon).
        """
        top_p = 0.0 if self.top_p >= 1.0 else self.top_p  # 1.0 keeps every token: the chat's "off"
        settings.data.sampling = replace(settings.data.sampling, temp=self.temp, top_p=top_p, min_p=self.min_p)
        settings.notify("sampling")
        settings.changed()

    # -- the per-token curves ---------------------------------------------------------------------
    def series(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(positions, raw entropy in bits, chosen-token probability)``, one entry per generated token."""
        tokens = self.conversation.tokens
        positions = np.fromiter((t.position for t in tokens), dtype=np.float64, count=len(tokens))
        entropy = np.fromiter((t.raw_entropy for t in tokens), dtype=np.float64, count=len(tokens))
        prob = np.fromiter((t.prob for t in tokens), dtype=np.float64, count=len(tokens))
        return positions, entropy, prob

    # -- the distribution ----------------------------------------------------------------------------
    def recompute(self) -> None:
        """Mark the distribution stale and tell the subscribers."""
        self._dirty = True
        self.notify("distribution")

    def _compute(self) -> None:
        self._dirty = False
        position = self.conversation.focus_position()
        record = self.conversation.token_at(position)
        logprobs = self.conversation.logprobs_at(position)
        if record is None:
            self._distribution, self._missing = None, "no token yet"
        elif logprobs is None:
            self._distribution = None
            self._missing = (f"position {position}: its full distribution is no longer kept "
                            f"(only the last {self.conversation.keep_full} tokens')")
        else:
            sampled = sampling_logprobs(logprobs, self.temp, self.top_p, self.min_p)  # [V]
            alternatives = record.top_k[: self.bars]
            ids = np.array([a[0] for a in alternatives], dtype=np.int64)
            self._distribution = DistributionView(
                position, tuple(a[2] for a in alternatives), np.exp(sampled[ids]),
                np.exp(logprobs[ids].astype(np.float64)), max(float(entropy_bits(sampled)), 0.0),
                int(np.isfinite(sampled).sum()),
            )
            self._missing = None

    def _on_conversation(self, what: str) -> None:
        if what in ("token", "reset", "turns"):
            self.notify("series")
        if what in ("token", "reset", "selected_position"):
            self.recompute()
