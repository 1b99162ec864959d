"""The model picker's state: what is loaded, what is loading, the memory estimate."""

from __future__ import annotations

from typing import Any

from ..engine.protocol import (
    EstimateModel, Failed, Finished, LoadModel, ModelEstimate, ModelInfo, ModelLoaded, Progress,
)
from .observable import Observable


class ModelPicker(Observable):
    """Notifies ``estimate``, ``progress``, ``loaded``, ``loading`` (started/ended)."""

    def __init__(self, session: Any = None):
        super().__init__()
        self.session = session
        self.info: ModelInfo | None = None
        self.estimate: ModelEstimate | None = None
        self.estimate_error: str | None = None
        self.progress: Progress | None = None
        self.loading_request: int | None = None
        self.estimate_request: int | None = None
        self.loading_spec: str | None = None

    @property
    def recent(self) -> list[str]:
        return list(self.session.settings.data.recent_models) if self.session else []

    # -- actions -----------------------------------------------------------------------------------
    def request_estimate(self, spec: str, runtime_dtype: str = "auto") -> int:
        self.estimate, self.estimate_error = None, None
        self.estimate_request = self.session.submit(
            EstimateModel(self.session.new_id(), spec, runtime_dtype), channel="estimate")
        self.notify("estimate")
        return self.estimate_request

    def load(self, spec: str, runtime_dtype: str = "auto") -> int:
        self.loading_spec = spec
        self.progress = None
        self.loading_request = self.session.submit(LoadModel(self.session.new_id(), spec, runtime_dtype), channel="load")
        self.notify("loading")
        return self.loading_request

    def cancel_load(self) -> None:
        if self.loading_request is not None:
            self.session.cancel(self.loading_request)

    # -- events ----------------------------------------------------------------------------------------
    def handle_event(self, event) -> None:
        rid = event.request_id
        if isinstance(event, ModelEstimate) and rid == self.estimate_request:
            self.estimate = event
            self.notify("estimate")
        elif isinstance(event, Progress) and rid == self.loading_request:
            self.progress = event
            self.notify("progress")
        elif isinstance(event, ModelLoaded):
            self.info = event.info
            if self.session is not None:
                self.session.settings.add_recent_model(event.info.spec)
            self.notify("loaded")
        elif isinstance(event, Failed) and rid == self.estimate_request:
            self.estimate_error = event.message
            self.estimate_request = None
            self.notify("estimate")
        elif isinstance(event, (Finished, Failed)):
            if rid == self.loading_request:
                self.loading_request = None
                self.progress = None
                self.notify("loading")
            elif rid == self.estimate_request:
                self.estimate_request = None
