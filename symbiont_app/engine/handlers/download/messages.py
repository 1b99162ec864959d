"""Requests and events of downloading a model (Qt-free, MLX-free: see :mod:`symbiont_app.engine.handlers`)."""

from __future__ import annotations

from dataclasses import dataclass

from mlx_hooks.hub_progress import DownloadProgress

from ...protocol import Event, Request


@dataclass(frozen=True, kw_only=True)
class DownloadModel(Request):
    """Bring a hub repo into the local cache beside the engine thread (chat keeps working):
    ``DownloadPlanned`` (the estimate and verdict, before any weight byte), ``DownloadStep``s,
    then ``ModelDownloaded``; over the budget it fails before fetching. A spec that is not an
    uncached hub repo answers ``ModelDownloaded(cached=True)`` at once."""

    spec: str
    runtime_dtype: str = "auto"


@dataclass(frozen=True, kw_only=True)
class DownloadPlanned(Event):
    spec: str
    download_bytes: int
    """Bytes to fetch (files not yet in the cache)."""
    n_files: int
    estimate_bytes: int
    """Memory the load will take (the loader's estimate, from the safetensors headers)."""
    budget_bytes: int
    description: str
    """``MemoryEstimate.describe()``."""

    @property
    def fits(self) -> bool:
        return self.estimate_bytes <= self.budget_bytes


@dataclass(frozen=True, kw_only=True)
class DownloadStep(Event):
    progress: DownloadProgress
    """Bytes done/total, rate, ETA (plain numbers)."""


@dataclass(frozen=True, kw_only=True)
class ModelDownloaded(Event):
    spec: str
    folder: str
    cached: bool
    """Nothing had to be fetched."""
