"""Requests the GUI sends to the engine thread and the events it gets back.

Every message is a frozen dataclass carrying plain Python / numpy values (never
``mx.array``: MLX arrays belong to the engine thread). Each request has an id; every
event names the request it answers, so the session can drop stale answers.

Order of events for one request (the worker guarantees it): zero or more result
events (``Progress`` included), then exactly one terminal event — ``Finished`` or
``Failed``. A cancelled request emits nothing after its cancellation except
``Finished(id, "cancelled")``. Live requests (``EngineWorker.post_live``) emit only
what their handler emits, plus ``Failed`` if it raises.

APP-PANELS and LAB-PANEL define their own request/event types (in their handler
modules or next to them) by subclassing :class:`Request` / :class:`Event`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlx_hooks.generate import GenerationStep
from mlx_hooks.hub_progress import DownloadProgress
from mlx_hooks.sampling import SamplingSettings


# -- bases --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Request:
    request_id: int


@dataclass(frozen=True)
class Event:
    request_id: int


# -- generic events -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Progress(Event):
    done: float
    total: float
    message: str = ""
    metrics: dict = field(default_factory=dict)
    """Live numbers (e.g. a training loss); plain floats."""


@dataclass(frozen=True)
class Finished(Event):
    reason: str
    """``done``, ``stop`` (end-of-sequence token), ``length`` (max tokens) or ``cancelled``."""


@dataclass(frozen=True)
class Failed(Event):
    message: str
    details: str = field(default="", repr=False)
    """Traceback, for a "details" disclosure in the window."""


TERMINAL = (Finished, Failed)


# -- model --------------------------------------------------------------------------------------
@dataclass(frozen=True)
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
    slow_blas_warning: str | None = None
    memory_bytes: int = 0
    """The memory estimate the load was checked against."""
    budget_bytes: int = 0
    """The memory budget it was checked against."""


@dataclass(frozen=True)
class EstimateModel(Request):
    """Memory a load would take, checked against the budget, without loading."""

    spec: str = "default"
    runtime_dtype: str = "auto"


@dataclass(frozen=True)
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


@dataclass(frozen=True)
class LoadModel(Request):
    """Load (converting a GGUF first if needed); emits ``Progress`` then ``ModelLoaded``."""

    spec: str = "default"
    runtime_dtype: str = "auto"


@dataclass(frozen=True)
class ModelLoaded(Event):
    info: ModelInfo


@dataclass(frozen=True)
class ModelUnloaded(Event):
    """The engine let go of its model (a new load began: if that load fails, none is loaded)."""

    name: str
    """The model that was released."""


@dataclass(frozen=True)
class DownloadModel(Request):
    """Bring a hub repo into the local cache beside the engine thread (chat keeps working):
    ``DownloadPlanned`` (the estimate and verdict, before any weight byte), ``DownloadStep``s,
    then ``ModelDownloaded``; over the budget it fails before fetching. A spec that is not an
    uncached hub repo answers ``ModelDownloaded(cached=True)`` at once."""

    spec: str = ""
    runtime_dtype: str = "auto"


@dataclass(frozen=True)
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


@dataclass(frozen=True)
class DownloadStep(Event):
    progress: DownloadProgress
    """Bytes done/total, rate, ETA (plain numbers)."""


@dataclass(frozen=True)
class ModelDownloaded(Event):
    spec: str
    folder: str
    cached: bool
    """Nothing had to be fetched."""


# -- chat ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SendMessage(Request):
    """Add a user turn and stream the reply: ``ReplyStarted``, ``TokenStep``s, ``Finished``."""

    text: str = ""
    max_tokens: int = 256
    sampling: SamplingSettings = SamplingSettings()
    system_prompt: str | None = None


@dataclass(frozen=True)
class ReplyStarted(Event):
    prompt_tokens: int
    """Tokens in the rendered conversation before the reply (positions of the reply start here)."""
    user_text: str


@dataclass(frozen=True)
class TokenStep(Event):
    """One generated token. ``step.readings`` holds the SAE meter's reading when one is set."""

    step: GenerationStep
    logprobs: np.ndarray | None = field(default=None, repr=False, compare=False)
    """The raw next-token log-probabilities (float32 ``[V]``) at the position that chose this
    token, so the temperature panel can re-draw the distribution for any temperature / top-p /
    min-p in numpy without re-running the model. ~V*4 bytes per step (196 KB for SmolLM2); the
    session keeps only the last few (see ``session.conversation``)."""


@dataclass(frozen=True)
class ResetChat(Request):
    """Forget the conversation (the KV cache too)."""


@dataclass(frozen=True)
class ChatReset(Event):
    pass


@dataclass(frozen=True)
class RewindChat(Request):
    """Forget the last ``exchanges`` user/assistant exchanges (regenerate, edit and resend);
    the KV cache keeps the prefix they shared with what remains."""

    exchanges: int = 1


@dataclass(frozen=True)
class ChatRewound(Event):
    exchanges: int
    """How many exchanges were forgotten (fewer than asked when the conversation is shorter)."""


STATE_CHANGES = (ModelLoaded, ModelUnloaded, ReplyStarted)
"""Events that report a change of engine state (a model came or went, a user turn joined the
chat): sent and delivered even when their request was cancelled. The change happened; a
window that dropped them would contradict the engine."""


def describe_event(event: Any) -> str:
    """Short text for logs and error panels."""
    return f"{type(event).__name__}#{getattr(event, 'request_id', '?')}"
