"""The model picker's state: what is loaded, what is loading or downloading, the memory estimate.

A hub repo id is loaded in two requests: ``DownloadModel`` (runs beside the engine thread:
the chat keeps working; its estimate and verdict come before any weight byte) and, once
``ModelDownloaded`` arrives, ``LoadModel`` (on the engine thread, from the cache).
"""

from __future__ import annotations

from typing import Any

from mlx_hooks.hub import looks_like_repo_id
from mlx_hooks.hub_progress import DownloadProgress

from ..engine.handlers.download.messages import DownloadModel, DownloadPlanned, DownloadStep, ModelDownloaded
from ..engine.handlers.model.messages import (
    EstimateModel, LoadModel, ModelEstimate, ModelInfo, ModelLoaded, ModelUnloaded,
)
from ..engine.protocol import Failed, Finished, Progress
from .observable import Observable


class ModelPicker(Observable):
    """Notifies ``estimate``, ``progress``, ``loaded`` (a model came or went: ``info`` says
    which, None for none), ``loading`` (started/ended), ``download``."""

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
        self.download_request: int | None = None
        self.download_plan: DownloadPlanned | None = None
        """What the download fetches and the memory verdict (before any weight byte)."""
        self.download_progress: DownloadProgress | None = None
        self._load_dtype = "auto"
        self.last_load_error: str | None = None
        """Why the last load failed (shown beside "no model loaded" when it left none), else None."""

    @property
    def recent(self) -> list[str]:
        return list(self.session.settings.data.recent_models) if self.session else []

    # -- actions -----------------------------------------------------------------------------------
    def request_estimate(self, spec: str, runtime_dtype: str = "auto") -> int:
        self.estimate, self.estimate_error = None, None
        self.estimate_request = self.session.submit(
            EstimateModel(request_id=self.session.new_id(), spec=spec, runtime_dtype=runtime_dtype), channel="estimate")
        self.notify("estimate")
        return self.estimate_request

    def load(self, spec: str, runtime_dtype: str = "auto") -> int:
        """Load ``spec``; a hub repo id is downloaded first (if not cached) beside the engine."""
        self.cancel_download()  # a new choice supersedes a download in flight
        self.loading_spec = spec
        self.last_load_error = None
        self.progress = None
        if looks_like_repo_id(spec):
            self._load_dtype = runtime_dtype
            self.download_plan = self.download_progress = None
            self.download_request = self.session.submit(
                DownloadModel(request_id=self.session.new_id(), spec=spec,
                              runtime_dtype=runtime_dtype), channel="download")
            self.notify("download")
            return self.download_request
        return self._submit_load(spec, runtime_dtype)

    def _submit_load(self, spec: str, runtime_dtype: str) -> int:
        self.loading_request = self.session.submit(LoadModel(request_id=self.session.new_id(), spec=spec,
                                                             runtime_dtype=runtime_dtype), channel="load")
        self.notify("loading")
        return self.loading_request

    def cancel_download(self) -> None:
        """Stop the download (at its next chunk); the files already complete stay in the cache."""
        if self.download_request is not None:
            self.session.cancel(self.download_request)
            self.download_request = None
            self.download_plan = self.download_progress = None
            self.notify("download")

    def cancel_load(self) -> None:
        self.cancel_download()
        if self.loading_request is not None:
            self.session.cancel(self.loading_request)

    # -- events ----------------------------------------------------------------------------------------
    def handle_event(self, event) -> None:
        rid = event.request_id
        if rid is not None and rid == self.download_request:
            self._download_event(event)
        elif isinstance(event, ModelEstimate) and rid == self.estimate_request:
            self.estimate = event
            self.notify("estimate")
        elif isinstance(event, Progress) and rid == self.loading_request:
            self.progress = event
            self.notify("progress")
        elif isinstance(event, ModelLoaded):
            self.info = event.info
            self.last_load_error = None
            if self.session is not None:
                self.session.settings.add_recent_model(event.info.spec)
            self.notify("loaded")
        elif isinstance(event, ModelUnloaded):
            self.info = None  # the engine let go of it for a new load; that load may yet fail
            self.notify("loaded")
        elif isinstance(event, Failed) and rid == self.estimate_request:
            self.estimate_error = event.message
            self.estimate_request = None
            self.notify("estimate")
        elif isinstance(event, (Finished, Failed)):
            if rid == self.loading_request:
                self.loading_request = None
                self.progress = None
                if isinstance(event, Failed):
                    self.last_load_error = event.message
                self.notify("loading")
            elif rid == self.estimate_request:
                self.estimate_request = None

    def _download_event(self, event) -> None:
        if isinstance(event, DownloadPlanned):
            self.download_plan = event
        elif isinstance(event, DownloadStep):
            self.download_progress = event.progress
        elif isinstance(event, ModelDownloaded):
            self.download_request = None  # its Finished follows; the load is queued now
            self.download_plan = self.download_progress = None
            self.notify("download")
            self._submit_load(event.spec, self._load_dtype)
            return
        elif isinstance(event, (Finished, Failed)):  # cancelled, refused over the budget, or failed
            self.download_request = None
            self.download_plan = self.download_progress = None
        self.notify("download")
