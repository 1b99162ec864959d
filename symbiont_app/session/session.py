"""The app's Qt-free state: requests in flight, and sub-models fed by engine events.

The bridge calls :meth:`AppSession.handle_event` on the GUI thread for every event the
engine emits. Events of cancelled or superseded requests are dropped (their terminal
``Finished``/``Failed`` still passes, so sub-models can settle), then every event is
handed to each registered sub-model. Widgets subscribe to the sub-models; they never
hold engine state.
"""

from __future__ import annotations

from typing import Any

from ..engine.protocol import Event, Failed, Finished, Request, STATE_CHANGES, TERMINAL
from .conversation import Conversation
from .models import ModelPicker
from .observable import Observable
from .settings import Settings
from .temperature import TemperatureView


class AppSession(Observable):
    """``worker_like`` needs ``new_id()``, ``submit(request)``, ``cancel(id)`` and ``post_live(request)``."""

    def __init__(self, worker_like: Any, settings: Settings | None = None):
        super().__init__()
        self.worker = worker_like
        self.settings = settings if settings is not None else Settings.load()
        self.active: dict[int, Request] = {}
        """Requests submitted and not finished yet."""
        self._cancelled: set[int] = set()
        self._channels: dict[str, int] = {}
        self.last_error: Failed | None = None
        self.sub_models: list[Observable] = []
        self.models = self.add_model(ModelPicker(self))
        self.conversation = self.add_model(Conversation(self))
        prefs = self.settings.data.sampling
        self.temperature = self.add_model(TemperatureView(self.conversation, temp=prefs.temp or 1.0,
                                                          top_p=prefs.top_p, min_p=prefs.min_p, bars=12))
        from .first_run import AutoAttachSae

        self.first_run = self.add_model(AutoAttachSae(self))
        """Attaches the SAE trained on the loaded model, so the meters are live on the first reply."""

    # -- sub-models -----------------------------------------------------------------------------------
    def add_model(self, sub_model):
        """Register an Observable with ``handle_event(event)``; returns it (``self.x = add_model(...)``)."""
        self.sub_models.append(sub_model)
        return sub_model

    @property
    def model_info(self):
        """``ModelInfo`` of the loaded model, or None."""
        return self.models.info

    # -- requests ------------------------------------------------------------------------------------
    def new_id(self) -> int:
        return self.worker.new_id()

    def submit(self, request: Request, channel: str | None = None) -> int:
        """Send ``request``; with a ``channel``, an unfinished earlier request on it is cancelled (superseded)."""
        if channel is not None:
            previous = self._channels.get(channel)
            if previous is not None and previous in self.active:
                self.cancel(previous)
            self._channels[channel] = request.request_id
        self.active[request.request_id] = request
        self.worker.submit(request)
        self.notify("busy")
        return request.request_id

    def cancel(self, request_id: int) -> None:
        if request_id in self.active and request_id not in self._cancelled:
            self._cancelled.add(request_id)
            self.worker.cancel(request_id)

    def post_live(self, request: Request) -> None:
        """A live control change (applied between generation steps); not tracked as active."""
        self.worker.post_live(request)

    def is_active(self, request_id: int | None) -> bool:
        return request_id is not None and request_id in self.active and request_id not in self._cancelled

    def busy(self, kind: type | None = None) -> bool:
        return any(kind is None or isinstance(r, kind) for rid, r in self.active.items() if rid not in self._cancelled)

    def request(self, request_id: int) -> Request | None:
        return self.active.get(request_id)

    # -- events (GUI thread) ---------------------------------------------------------------------------
    def handle_event(self, event: Event) -> None:
        rid = getattr(event, "request_id", None)
        terminal = isinstance(event, TERMINAL)
        if rid in self._cancelled and not terminal and not isinstance(event, STATE_CHANGES):
            return  # a stale answer of a cancelled / superseded request (a state change is a fact: kept)
        if terminal:
            cancelled = rid in self._cancelled
            self.active.pop(rid, None)
            self._cancelled.discard(rid)
            if cancelled and isinstance(event, Finished) and event.reason != "cancelled":
                event = Finished(request_id=rid, reason="cancelled")  # it ran to its end before the cancel arrived
        for sub_model in list(self.sub_models):
            sub_model.handle_event(event)
        if isinstance(event, Failed):
            self.report_error(event)
        if terminal:
            self.notify("busy")

    def report_error(self, failed: Failed) -> None:
        self.last_error = failed
        self.notify("error")

    def error(self, message: str, details: str = "") -> None:
        """Report a GUI-side problem (bad input in a field) the same way as an engine failure."""
        self.report_error(Failed(request_id=0, message=message, details=details))
