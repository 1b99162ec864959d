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

from ..engine.handlers.chat.messages import ChatReset, ChatRewound, ReplyStarted, RewindChat, SendMessage, TokenStep
from ..engine.handlers.model.messages import ModelLoaded, ModelUnloaded
from ..engine.protocol import Failed, Finished
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
    generation_tps: float = 0.0
    """Tokens per second of the reply so far, as mlx-lm measures it (from its first token)."""


@dataclass
class Turn:
    role: str
    """``user`` or ``assistant``."""
    text: str = ""
    tokens: list[TokenRecord] = field(default_factory=list)
    request_id: int = 0
    finish_reason: str | None = None
    """``stop`` (end of text), ``length`` (max tokens: truncated), ``cancelled`` (stopped),
    ``failed``, or None while streaming."""
    error: str = ""
    """Why the reply failed (``finish_reason == "failed"``)."""

    @property
    def tokens_per_second(self) -> float:
        return self.tokens[-1].generation_tps if self.tokens else 0.0


class Conversation(Observable):
    """Notifies ``turns`` (a turn began/ended, or turns were rewound), ``token`` (one streamed),
    ``selected_position``, ``reset``, ``returned`` (a message the engine never took: its text
    is in :attr:`returned_text` for the entry)."""

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
        self._pinned: int | None = None
        self._unstarted: dict[int, SendMessage] = {}
        """Messages sent whose reply has not started: their text goes back to the entry if it never does."""
        self.last_message: SendMessage | None = None
        """The last message whose reply started (regenerate sends it again)."""
        self.returned_text = ""

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

    @property
    def pinned_position(self) -> int | None:
        """The token the user clicked: the selection returns to it when a hover ends."""
        return self._pinned

    def preview(self, position: int | None) -> None:
        """Hovering a token selects it for as long as the hover lasts (None: hover ended)."""
        self.selected_position = position if position is not None else self._pinned

    def pin(self, position: int | None) -> None:
        """Clicking a token pins it; clicking the pinned token again unpins it."""
        self._pinned = None if position == self._pinned else position
        self.selected_position = self._pinned if self._pinned is not None else position

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
            self.last_message = self._unstarted.pop(event.request_id, self.last_message)
            self.turns.append(Turn("user", event.user_text, request_id=event.request_id))
            self.turns.append(Turn("assistant", request_id=event.request_id))
            self.streaming_request = event.request_id
            self.notify("turns")
        elif isinstance(event, TokenStep) and event.request_id == self.streaming_request:
            self._add_step(event)
        elif isinstance(event, (Finished, Failed)) and event.request_id == self.streaming_request:
            self.streaming_request = None
            turn = self.turns[-1]
            turn.finish_reason = event.reason if isinstance(event, Finished) else "failed"
            turn.error = event.message if isinstance(event, Failed) else ""
            self.notify("turns")
        elif isinstance(event, (Finished, Failed)) and event.request_id in self._unstarted:
            # Refused, failed or stopped before its reply began: the engine never took the turn.
            self.returned_text = self._unstarted.pop(event.request_id).text
            self.notify("returned")
        elif isinstance(event, ChatRewound):
            self._drop_exchanges(event.exchanges)
        elif isinstance(event, (ChatReset, ModelLoaded, ModelUnloaded)):  # a new model starts a new conversation
            self.clear()

    def _drop_exchanges(self, exchanges: int) -> None:
        for _ in range(exchanges):
            while self.turns and self.turns[-1].role != "user":
                self.turns.pop()
            if self.turns:
                self.turns.pop()
        kept = len(self.turns)
        self.tokens = [t for t in self.tokens if t.turn < kept]
        for position in [p for p in self._logprobs if self.token_at(p) is None]:
            del self._logprobs[position]
        if self.token_at(self._pinned) is None:
            self._pinned = None
        if self.token_at(self._selected) is None:
            self.selected_position = None
        self.notify("rewound")

    def _add_step(self, event: TokenStep) -> None:
        step = event.step
        record = TokenRecord(
            step.position, step.token, step.text, step.prob, step.sampling_prob, step.entropy, step.raw_entropy,
            tuple((a.token, a.prob, a.text) for a in step.top_k), dict(step.readings), len(self.turns) - 1,
            float(step.generation_tps),
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
        self._selected = self._pinned = None
        self.streaming_request = None
        self.notify("reset")

    # -- actions (go through the session) ---------------------------------------------------------
    def send(self, text: str, sampling, max_tokens: int, system_prompt: str | None) -> int | None:
        """Submit a user message; None when one is streaming already or the text is empty."""
        text = text.strip()
        if not text or self.session is None or self.busy:
            return None
        request = SendMessage(request_id=self.session.new_id(), text=text, max_tokens=max_tokens, sampling=sampling,
                              system_prompt=system_prompt or None)
        self._unstarted[request.request_id] = request
        return self.session.submit(request, channel="chat")

    @property
    def busy(self) -> bool:
        """A message is on its way or streaming (or turns are being rewound)."""
        return self.session is not None and self.session.busy((SendMessage, RewindChat))

    def last_user_text(self) -> str | None:
        users = [t for t in self.turns if t.role == "user"]
        return users[-1].text if users else None

    def regenerate(self) -> int | None:
        """Forget the last reply and its message, then send that message again (same settings)."""
        if self.busy or self.last_message is None or self.last_user_text() is None:
            return None
        self.session.submit(RewindChat(request_id=self.session.new_id(), exchanges=1))
        last = self.last_message
        request = SendMessage(request_id=self.session.new_id(), text=self.last_user_text(), max_tokens=last.max_tokens,
                              sampling=last.sampling,
                              system_prompt=last.system_prompt)
        self._unstarted[request.request_id] = request
        return self.session.submit(request, channel="chat")

    def edit_last(self) -> str | None:
        """Forget the last exchange and return its message's text (for the entry to edit and resend)."""
        text = self.last_user_text()
        if self.busy or text is None:
            return None
        self.session.submit(RewindChat(request_id=self.session.new_id(), exchanges=1))
        return text

    def stop(self) -> None:
        if self.session is not None:
            for rid, request in list(self.session.active.items()):
                if isinstance(request, SendMessage):
                    self.session.cancel(rid)

    def reset(self) -> None:
        from ..engine.handlers.chat.messages import ResetChat

        self.stop()
        self.session.submit(ResetChat(request_id=self.session.new_id()), channel="chat-reset")
