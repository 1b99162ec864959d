"""Live feature meters, Qt-free: the focused token's top latents, watched latents over the conversation.

The readings themselves travel with the chat's token steps (``TokenStep.step.readings
["sae"]``, a ``MeterReading``) and the conversation keeps them per token; this model
reads them from there, keeps the watched list, the selected latent, and sends the
watch / clamp / ablate requests (live: they act from the next token on).

Notifies ``reading`` (a token arrived or the focus moved), ``watched``, ``selected``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..engine.handlers.sae.messages import SaeLoaded, SaeUnloaded, WatchedChanged, WatchLatents
from ..engine.handlers.steering.messages import ClampLatent
from ..engine.handlers.chat.messages import ChatReset, TokenStep
from ..engine.handlers.model.messages import ModelLoaded, ModelUnloaded
from .observable import Observable
from .sae import SaeModel, attach

READER = "sae"
"""Name of the meter's reader in a step's readings (``EngineState.generation_kwargs``)."""


class MetersModel(Observable):
    def __init__(self, session: Any = None, sae: SaeModel | None = None):
        super().__init__()
        self.session = session
        self.sae = sae if sae is not None else SaeModel.of(session)
        self.watched: tuple[int, ...] = ()
        self.selected: int | None = None
        self.sae.subscribe(self._on_sae)
        if getattr(session, "conversation", None) is not None:
            session.conversation.subscribe(self._on_conversation)

    @classmethod
    def of(cls, session) -> "MetersModel":
        return attach(session, "meters", cls)

    # -- readings ------------------------------------------------------------------------------------
    def _tokens(self) -> list:
        conversation = getattr(self.session, "conversation", None)
        return conversation.tokens if conversation is not None else []

    def reading_at(self, position: int | None):
        """The meter's reading for the generated token at ``position`` (None if it has none)."""
        conversation = self.session.conversation
        record = conversation.token_at(position)
        return None if record is None else record.readings.get(READER)

    def focus_position(self) -> int | None:
        """The clicked token if it has a reading, else the newest token with one."""
        conversation = self.session.conversation
        selected = conversation.selected_position
        if selected is not None and self.reading_at(selected) is not None:
            return selected
        for record in reversed(self._tokens()):
            if READER in record.readings:
                return record.position
        return None

    def current(self) -> list[tuple[int, float, str]]:
        """``(latent, value, label)`` of the focused token's strongest latents, strongest first."""
        reading = self.reading_at(self.focus_position())
        if reading is None:
            return []
        return [(lv.index, lv.value, lv.label or self.sae.label(lv.index)) for lv in reading.top]

    def current_l0(self) -> int | None:
        reading = self.reading_at(self.focus_position())
        return None if reading is None else reading.l0

    def watched_history(self) -> tuple[np.ndarray, np.ndarray]:
        """(positions ``[T]``, values ``[W, T]``) of the watched latents over the generated tokens.

        A token generated before the latent was watched shows its value only where the latent
        was among that token's top latents (the only values read then), NaN elsewhere.
        """
        records = [r for r in self._tokens() if READER in r.readings]
        positions = np.array([r.position for r in records], dtype=np.int64)
        values = np.full((len(self.watched), len(records)), np.nan, dtype=np.float32)
        for j, record in enumerate(records):
            reading = record.readings[READER]
            top = {lv.index: lv.value for lv in reading.top}
            for i, latent in enumerate(self.watched):
                if latent in reading.watched:
                    values[i, j] = reading.watched[latent]
                elif latent in top:
                    values[i, j] = top[latent]
        return positions, values

    def frequent_latents(self, n: int = 3) -> list[int]:
        """The latents most often among the generated tokens' top latents, most frequent first."""
        counts: dict[int, int] = {}
        for record in self._tokens():
            reading = record.readings.get(READER)
            for lv in reading.top if reading is not None else ():
                counts[lv.index] = counts.get(lv.index, 0) + 1
        return [latent for latent, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]]

    # -- actions (live: they act from the next token on) ------------------------------------------------
    def watch(self, latent: int, watch: bool = True) -> None:
        self.session.post_live(WatchLatents(request_id=self.session.new_id(), latents=(int(latent),), watch=watch))

    def clamp(self, latent: int, value: float, mode: str = "absolute", positions="all") -> None:
        self.session.post_live(ClampLatent(request_id=self.session.new_id(), latent=int(latent), value=float(value),
                                           mode=mode, positions=positions))

    def ablate(self, latent: int, positions="all") -> None:
        self.clamp(latent, 0.0, "absolute", positions)

    def select(self, latent: int | None) -> None:
        """Show this latent's record (asks the engine for it)."""
        self.selected = latent
        self.notify("selected")
        if latent is not None:
            self.sae.request_record(latent)

    # -- events -------------------------------------------------------------------------------------------
    def _on_conversation(self, what: str) -> None:
        if what in ("selected_position", "reset"):
            self.notify("reading")

    def _on_sae(self, what: str) -> None:
        if what == "record":
            self.notify("selected")

    def handle_event(self, event) -> None:
        if isinstance(event, TokenStep):
            self.notify("reading")
        elif isinstance(event, WatchedChanged):
            self.watched = tuple(event.watched)
            self.notify("watched")
        elif isinstance(event, (SaeLoaded, SaeUnloaded, ModelLoaded, ModelUnloaded, ChatReset)):
            if not isinstance(event, ChatReset):
                self.watched, self.selected = (), None
                self.notify("watched")
            self.notify("reading")
