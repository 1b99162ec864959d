"""The lens panel's Qt-free state: logit lens over the conversation, activation patching.

The lens is a re-run of the conversation's tokens on the engine (see
``engine/handlers/lens/handler.py``); with ``auto_update`` it is requested again after each
reply. :meth:`column` gives the lens column of the chat's selected token
(``session.conversation.selected_position``).

Notifies ``lens``, ``patching``, ``selected`` and ``status``.
"""

from __future__ import annotations

from typing import Any

from ..engine.handlers.lens.messages import LensComputed, PatchingComputed, RunLens, RunPatching
from ..engine.handlers.chat.messages import ChatReset
from ..engine.handlers.model.messages import ModelLoaded, ModelUnloaded
from ..engine.protocol import Failed, Finished
from .observable import Observable
from .sae import attach


class LensModel(Observable):
    def __init__(self, session: Any = None):
        super().__init__()
        self.session = session
        self.lens: LensComputed | None = None
        self.patching: PatchingComputed | None = None
        self.status = ""
        self.max_positions = 32
        self.auto_update = True
        """Re-run the lens when a reply finishes."""
        self.lens_request: int | None = None
        self.patch_request: int | None = None
        if getattr(session, "conversation", None) is not None:
            session.conversation.subscribe(self._on_conversation)

    @classmethod
    def of(cls, session) -> "LensModel":
        return attach(session, "lens", cls)

    # -- actions ----------------------------------------------------------------------------------
    def run_lens(self, max_positions: int | None = None) -> int:
        if max_positions is not None:
            self.max_positions = int(max_positions)
        self.lens_request = self.session.submit(RunLens(request_id=self.session.new_id(),
                                                        max_positions=self.max_positions), channel="lens")
        self.status = "running the logit lens…"
        self.notify("status")
        return self.lens_request

    def run_patching(self, clean: str, corrupted: str, clean_answer: str, corrupted_answer: str,
                     kind: str = "resid_pre") -> int:
        request = RunPatching(request_id=self.session.new_id(), clean=clean, corrupted=corrupted,
                              clean_answer=clean_answer, corrupted_answer=corrupted_answer, kind=kind)
        self.patch_request = self.session.submit(request, channel="patching")
        self.status = "patching every layer and position…"
        self.notify("status")
        return self.patch_request

    # -- queries ------------------------------------------------------------------------------------
    def column_index(self, position: int | None) -> int | None:
        if self.lens is None or position is None:
            return None
        hits = [i for i, p in enumerate(self.lens.positions) if int(p) == int(position)]
        return hits[0] if hits else None

    def selected_column(self) -> int | None:
        """Column of the chat's selected token, else the last column."""
        if self.lens is None:
            return None
        conversation = getattr(self.session, "conversation", None)
        index = self.column_index(conversation.selected_position if conversation is not None else None)
        return index if index is not None else len(self.lens.positions) - 1

    def column(self, index: int | None = None) -> list[tuple[str, list[tuple[str, float]]]]:
        """``[(hook point, [(token text, prob), ...top-k])]`` for one column, first layer first."""
        if self.lens is None:
            return []
        index = self.selected_column() if index is None else index
        return [(point, [(self.lens.top_texts[p][index][j], float(self.lens.top_probs[p, index, j]))
                         for j in range(self.lens.top_probs.shape[2])])
                for p, point in enumerate(self.lens.points)]

    # -- events -------------------------------------------------------------------------------------
    def _on_conversation(self, what: str) -> None:
        if what == "selected_position":
            self.notify("selected")

    def handle_event(self, event) -> None:
        if isinstance(event, LensComputed) and event.request_id == self.lens_request:
            self.lens = event
            self.status = f"logit lens: {event.source}"
            self.notify("lens")
            self.notify("status")
        elif isinstance(event, PatchingComputed) and event.request_id == self.patch_request:
            self.patching = event
            notes = "".join(f"; {n}" for n in event.notes)
            self.status = (f"patching {event.kind}: clean logit diff {event.clean_logit_diff:+.3f}, corrupted "
                           f"{event.corrupted_logit_diff:+.3f}{notes}")
            self.notify("patching")
            self.notify("status")
        elif isinstance(event, Failed) and event.request_id in (self.lens_request, self.patch_request):
            what = "lens" if event.request_id == self.lens_request else "patching"
            self.status = f"{what} failed: {event.message}"
            self.notify("status")
        elif (isinstance(event, Finished) and self.auto_update and event.reason != "cancelled"
              and self._finished_a_reply(event)):
            self.run_lens()
        elif isinstance(event, (ChatReset, ModelLoaded, ModelUnloaded)):
            self.lens = None
            self.notify("lens")

    def _finished_a_reply(self, event) -> bool:
        """Whether ``event`` ends a reply (a ``SendMessage``) of the conversation."""
        conversation = getattr(self.session, "conversation", None)
        # The session pops the request before routing the terminal event; the conversation still knows it.
        turns = getattr(conversation, "turns", [])
        return bool(turns) and turns[-1].request_id == event.request_id and turns[-1].role == "assistant"
