"""Requests and events of the chat (Qt-free, MLX-free: see :mod:`symbiont_app.engine.handlers`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ...protocol import Event, Request, StateChange

if TYPE_CHECKING:  # annotations only: importing them would load MLX
    from mlx_hooks.generate import GenerationStep
    from mlx_hooks.sampling import SamplingSettings


@dataclass(frozen=True, kw_only=True)
class SendMessage(Request):
    """Add a user turn and stream the reply: ``ReplyStarted``, ``TokenStep``s, ``Finished``."""

    text: str
    max_tokens: int
    sampling: SamplingSettings
    system_prompt: str | None = None
    """None: no system turn."""


@dataclass(frozen=True, kw_only=True)
class ReplyStarted(StateChange):
    prompt_tokens: int
    """Tokens in the rendered conversation before the reply (positions of the reply start here)."""
    user_text: str


@dataclass(frozen=True, kw_only=True)
class TokenStep(Event):
    """One generated token. ``step.readings`` holds the SAE meter's reading when one is set."""

    step: GenerationStep
    logprobs: np.ndarray | None = field(repr=False, compare=False)
    """The raw next-token log-probabilities (float32 ``[V]``) at the position that chose this
    token, so the temperature panel can re-draw the distribution for any temperature / top-p /
    min-p in numpy without re-running the model. ~V*4 bytes per step (196 KB for SmolLM2); the
    session keeps only the last few (see ``session.conversation``). None: not sent."""


@dataclass(frozen=True, kw_only=True)
class ResetChat(Request):
    """Forget the conversation (the KV cache too)."""


@dataclass(frozen=True, kw_only=True)
class ChatReset(Event):
    pass


@dataclass(frozen=True, kw_only=True)
class RewindChat(Request):
    """Forget the last ``exchanges`` user/assistant exchanges (regenerate, edit and resend);
    the KV cache keeps the prefix they shared with what remains."""

    exchanges: int = 1


@dataclass(frozen=True, kw_only=True)
class ChatRewound(Event):
    exchanges: int
    """How many exchanges were forgotten (fewer than asked when the conversation is shorter)."""
