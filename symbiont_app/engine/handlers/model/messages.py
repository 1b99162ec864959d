"""Requests and events of loading a model (Qt-free, MLX-free: see :mod:`symbiont_app.engine.handlers`)."""

from __future__ import annotations

from dataclasses import dataclass

from ...protocol import Event, Request, StateChange


@dataclass(frozen=True, kw_only=True)
class ModelInfo:
    """What the window knows about the loaded model (no engine objects)."""

    name: str
    spec: str
    """What was asked for (``default``, a repo id, a folder, a ``.gguf``)."""
    fingerprint: str
    """Short fingerprint (presets and SAEs are checked against it)."""
    n_layers: int
    d_model: int
    vocab_size: int
    hook_points: tuple[str, ...]
    runtime_dtype: str
    backend: str
    """One-line backend summary (device, BLAS)."""
    slow_blas_warning: str | None
    """Why the BLAS is slow and what to do, or None when it is not."""
    memory_bytes: int
    """The memory estimate the load was checked against."""
    budget_bytes: int
    """The memory budget it was checked against."""


@dataclass(frozen=True, kw_only=True)
class EstimateModel(Request):
    """Memory a load would take, checked against the budget, without loading."""

    spec: str
    """``default``, a repo id, a folder or a ``.gguf``."""
    runtime_dtype: str = "auto"


@dataclass(frozen=True, kw_only=True)
class ModelEstimate(Event):
    spec: str
    total_bytes: int
    budget_bytes: int
    description: str
    """``MemoryEstimate.describe()``: weights, KV cache, activations."""
    runtime_dtype: str

    @property
    def fits(self) -> bool:
        return self.total_bytes <= self.budget_bytes


@dataclass(frozen=True, kw_only=True)
class LoadModel(Request):
    """Load (converting a GGUF first if needed); emits ``Progress`` then ``ModelLoaded``."""

    spec: str
    """``default``, a repo id, a folder or a ``.gguf``."""
    runtime_dtype: str = "auto"


@dataclass(frozen=True, kw_only=True)
class ModelLoaded(StateChange):
    info: ModelInfo


@dataclass(frozen=True, kw_only=True)
class ModelUnloaded(StateChange):
    """The engine let go of its model (a new load began: if that load fails, none is loaded)."""

    name: str
    """The model that was released."""
