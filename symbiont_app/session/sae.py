"""The SAE panel's Qt-free state: the loaded SAE, browsing/search, latent records, training.

Notifies ``sae`` (loaded/unloaded), ``available`` (SAEs found on disk), ``record`` (a
latent's record arrived), ``training`` (progress/metrics), ``status`` (a message).
Label search runs here on the labels the engine sent with :class:`SaeLoaded` (plain
strings: no MLX involved); everything that touches weights goes to the engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..engine.handlers.sae.messages import (
    ContrastFound, ContrastSearch, GetLatentRecord, LatentRecord, LoadSae, SaeLoaded, SaeTrained, SaeUnloaded, TrainSae,
    UnloadSae,
)
from ..engine.handlers.model.messages import ModelLoaded, ModelUnloaded
from ..engine.protocol import Failed, Finished, Progress
from .observable import Observable

METRICS = ("mse", "variance_explained", "l0", "dead_fraction")


@dataclass(frozen=True)
class AvailableSae:
    sae_id: str
    path: str


def attach(session, name: str, factory):
    """The session's sub-model ``name``, made (and registered) on first use."""
    model = getattr(session, name, None)
    if model is None:
        model = session.add_model(factory(session))
        setattr(session, name, model)
    return model


class SaeModel(Observable):
    def __init__(self, session: Any = None):
        super().__init__()
        self.session = session
        self.info: SaeLoaded | None = None
        self.available: list[AvailableSae] = []
        self.record: LatentRecord | None = None
        self.status = ""
        self.load_request: int | None = None
        self.train_request: int | None = None
        self.train_progress: tuple[float, float, str] = (0.0, 0.0, "")
        self.train_metrics: dict[str, list[float]] = {"step": [], **{m: [] for m in METRICS}}
        self.train_result: SaeTrained | None = None
        self.contrast_results: tuple = ()
        """``(latent, mean A, mean B, difference, label)`` of the last contrast search."""

    @classmethod
    def of(cls, session) -> "SaeModel":
        return attach(session, "sae", cls)

    # -- queries -----------------------------------------------------------------------------------
    def refresh_available(self) -> list[AvailableSae]:
        """SAEs found by the registry (``cfg.json`` files only are read: fast, no weights)."""
        from mlx_hooks.sae.registry import find_saes

        self.available = [AvailableSae(sae_id, str(path)) for sae_id, path in sorted(find_saes().items())]
        self.notify("available")
        return self.available

    def label(self, latent: int) -> str:
        if self.info is None or not 0 <= latent < len(self.info.labels):
            return ""
        return self.info.labels[latent]

    def search(self, query: str, limit: int = 50) -> list[tuple[int, str, float]]:
        """``(latent, label, score)`` best first; an integer query finds that latent."""
        if self.info is None:
            return []
        query = query.strip()
        if not query:
            return self.browse(0, limit)
        if query.isdigit():
            latent = int(query)
            return [(latent, self.label(latent), 100.0)] if 0 <= latent < self.info.d_sae else []
        from mlx_hooks.sae.search import search_labels  # string matching only

        return [(m.index, m.label, m.score) for m in search_labels(self.info.labels, query, limit)]

    def browse(self, start: int = 0, count: int = 50, by_frequency: bool = False) -> list[tuple[int, str, float]]:
        """``(latent, label, frequency)`` for a page of latents (most frequent first with ``by_frequency``)."""
        if self.info is None:
            return []
        freq = self.info.frequencies
        order = np.argsort(-freq, kind="stable") if by_frequency and freq is not None else np.arange(self.info.d_sae)
        return [(int(i), self.info.labels[int(i)], float(freq[int(i)]) if freq is not None else 0.0)
                for i in order[start:start + count]]

    # -- actions -----------------------------------------------------------------------------------------
    def load(self, source: str, top_n: int = 8) -> int:
        self.status = f"loading {source}…"
        self.notify("status")
        self.load_request = self.session.submit(LoadSae(request_id=self.session.new_id(), source=source,
                                                        top_n=top_n), channel="sae-load")
        return self.load_request

    def unload(self) -> int:
        return self.session.submit(UnloadSae(request_id=self.session.new_id()))

    def contrast(self, texts_a, texts_b, top_n: int = 20) -> int:
        """Ask for the latents more active on prompts A than on B (answer: ``contrast``)."""
        request = ContrastSearch(request_id=self.session.new_id(), texts_a=tuple(texts_a), texts_b=tuple(texts_b),
                                 top_n=top_n)
        return self.session.submit(request, channel="sae-contrast")

    def request_record(self, latent: int) -> int:
        # Live: a read of the records already in memory, answered between generation steps
        # rather than after the reply that is streaming.
        request = GetLatentRecord(request_id=self.session.new_id(), latent=int(latent))
        self.session.post_live(request)
        return request.request_id

    def train(self, **settings) -> int:
        """Submit a :class:`TrainSae` (same ``run_dir`` resumes); progress arrives as ``training``."""
        self.train_metrics = {"step": [], **{m: [] for m in METRICS}}
        self.train_result = None
        self.train_progress = (0.0, 1.0, "starting")
        self.train_request = self.session.submit(TrainSae(request_id=self.session.new_id(),
                                                          **settings), channel="sae-train")
        self.notify("training")
        return self.train_request

    def cancel_training(self) -> None:
        if self.train_request is not None:
            self.session.cancel(self.train_request)

    @property
    def training(self) -> bool:
        return self.train_request is not None

    # -- events --------------------------------------------------------------------------------------------
    def handle_event(self, event) -> None:
        if isinstance(event, SaeLoaded):
            self.info, self.record = event, None
            notes = f" ({'; '.join(event.messages)})" if event.messages else ""
            self.status = f"loaded {event.sae_id}: {event.d_sae} latents at {event.hook_point}{notes}"
            self.notify("sae")
            self.notify("status")
        elif isinstance(event, (SaeUnloaded, ModelLoaded, ModelUnloaded)):
            if self.info is not None:
                self.info, self.record = None, None
                self.status = "no SAE loaded"
                self.notify("sae")
                self.notify("status")
        elif isinstance(event, ContrastFound):
            self.contrast_results = event.latents
            self.notify("contrast")
        elif isinstance(event, LatentRecord):
            self.record = event
            self.notify("record")
        elif isinstance(event, Progress) and event.request_id == self.train_request:
            self.train_progress = (event.done, event.total, event.message)
            if event.metrics.get("stage") == "training" and "mse" in event.metrics:
                self.train_metrics["step"].append(float(event.metrics["step"]))
                for m in METRICS:
                    self.train_metrics[m].append(float(event.metrics[m]))
            self.notify("training")
        elif isinstance(event, SaeTrained) and event.request_id == self.train_request:
            self.train_result = event
            ve = event.evaluation.get("variance_explained")
            self.status = (f"trained and saved to {event.out}" + (f" (variance explained {ve:.3f})" if ve is not None else "")
                           if event.finished else f"stopped; submit again with run folder {event.run_dir} to resume")
            self.notify("status")
        elif isinstance(event, (Finished, Failed)):
            if event.request_id == self.train_request:
                self.train_request = None
                if isinstance(event, Finished) and event.reason == "cancelled":
                    self.status = "training cancelled: start it again with the same run folder to resume"
                elif isinstance(event, Failed):
                    self.status = f"training failed: {event.message}"
                self.notify("training")
                self.notify("status")
            elif event.request_id == self.load_request:
                self.load_request = None
                if isinstance(event, Failed):
                    self.status = f"could not load the SAE: {event.message}"
                    self.notify("status")
