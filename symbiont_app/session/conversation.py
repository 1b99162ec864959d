"""The conversation as the window shows it: turns, generated tokens with their statistics.

Memory bound for the temperature view: every token keeps its scalar statistics and its
top alternatives (a few dozen bytes + 20 alternatives); the full next-token
log-probability vector (float32 ``[V]``, 196 KB for SmolLM2's 49,152-token vocabulary)
is kept only for the last :attr:`Conversation.keep_full` generated positions (64 by
default: ~12.6 MB for SmolLM2). That is what re-drawing the distribution at another
temperature / top-p / min-p needs exactly (the normaliser and entropy need every
logit); older positions still show their stored statistics and alternatives.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..engine.protocol import ChatReset, Failed, Finished, ModelLoaded, ReplyStarted, SendMessage, TokenStep
from .observable import Observable


@dataclass(frozen=True)
class TokenRecord:
    position: int
    """Absolute position of the token in the conversation's token sequence."""
    token: int
    text: str
    prob: float
    """Raw probability the model gave this token."""
    sampling_prob: float
    entropy: float
    """Entropy (bits) of the distribution actually sampled."""
    raw_entropy: float
    """Entropy (bits) of the raw (temperature 1) distribution."""
    top_k: tuple = ()
    """``(token, prob, text)`` alternatives by raw probability, strongest first."""
    readings: dict = field(default_factory=dict)
    """Reader outputs (``"sae"``: the meter's ``MeterReading``)."""
    turn: int = 0


@dataclass
class Turn:
    role: str
    """``user`` or ``assistant``."""
    text: str = ""
    tokens: list[TokenRecord] = field(default_factory=list)
    request_id: int = 0
    finish_reason: str | None = None


class Conversation(Observable):
    """Notifies ``turns`` (a turn began/ended), ``token`` (one streamed), ``selected_position``, ``reset``."""

    keep_full = 64

    def __init__(self, session: Any = None):
        super().__init__()
        self.session = session
        self.turns: list[Turn] = []
        self.tokens: list[TokenRecord] = []
        """Every generated token of the conversation, in order."""
        self._selected: int | None = None
        self._logprobs: OrderedDict[int, np.ndarray] = OrderedDict()
        self.streaming_request: int | None = None

    # -- selection ---------------------------------------------------------------------------------
    @property
    def selected_position(self) -> int | None:
        """The token the user hovered/clicked (the lens and temperature panels follow it)."""
        return self._selected

    @selected_position.setter
    def selected_position(self, position: int | None) -> None:
        if position != self._selected:
            self._selected = position
            self.notify("selected_position")

    def token_at(self, position: int | None) -> TokenRecord | None:
        if position is None:
            return None
        for record in reversed(self.tokens):
            if record.position == position:
                return record
        return None

    def focus_position(self) -> int | None:
        """The selected token's position, else the last generated one."""
        if self._selected is not None:
            return self._selected
        return self.tokens[-1].position if self.tokens else None

    def logprobs_at(self, position: int | None) -> np.ndarray | None:
        """The raw next-token log-probabilities that chose the token at ``position`` (if still kept)."""
        return None if position is None else self._logprobs.get(position)

    @property
    def text(self) -> str:
        return "\n".join(f"{t.role}: {t.text}" for t in self.turns)

    # -- events ---------------------------------------------------------------------------------------
    def handle_event(self, event) -> None:
        if isinstance(event, ReplyStarted):
            self.turns.append(Turn("user", event.user_text, request_id=event.request_id))
            self.turns.append(Turn("assistant", request_id=event.request_id))
            self.streaming_request = event.request_id
            self.notify("turns")
        elif isinstance(event, TokenStep) and event.request_id == self.streaming_request:
            self._add_step(event)
        elif isinstance(event, (Finished, Failed)) and event.request_id == self.streaming_request:
            self.streaming_request = None
            self.turns[-1].finish_reason = event.reason if isinstance(event, Finished) else "failed"
            self.notify("turns")
        elif isinstance(event, (ChatReset, ModelLoaded)):  # a new model starts a new conversation
            self.clear()

    def _add_step(self, event: TokenStep) -> None:
        step = event.step
        record = TokenRecord(
            step.position, step.token, step.text, step.prob, step.sampling_prob, step.entropy, step.raw_entropy,
            tuple((a.token, a.prob, a.text) for a in step.top_k), dict(step.readings), len(self.turns) - 1,
        )
        turn = self.turns[-1]
        turn.tokens.append(record)
        turn.text += step.text
        self.tokens.append(record)
        if event.logprobs is not None:
            self._logprobs[step.position] = event.logprobs
            while len(self._logprobs) > self.keep_full:
                self._logprobs.popitem(last=False)
        self.notify("token")

    def clear(self) -> None:
        self.turns.clear()
        self.tokens.clear()
        self._logprobs.clear()
        self._selected = None
        self.streaming_request = None
        self.notify("reset")

    # -- actions (go through the session) ---------------------------------------------------------
    def send(self, text: str, sampling, max_tokens: int, system_prompt: str | None) -> int | None:
        """Submit a user message; None when one is streaming already or the text is empty."""
        text = text.strip()
        if not text or self.session is None or self.session.busy(SendMessage):
            return None
        request = SendMessage(self.session.new_id(), text, max_tokens, sampling, system_prompt or None)
        return self.session.submit(request, channel="chat")

    def stop(self) -> None:
        if self.session is not None:
            for rid, request in list(self.session.active.items()):
                if isinstance(request, SendMessage):
                    self.session.cancel(rid)

    def reset(self) -> None:
        from ..engine.protocol import ResetChat

        self.stop()
        self.session.submit(ResetChat(self.session.new_id()), channel="chat-reset")
