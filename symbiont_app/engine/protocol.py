"""The bases of every request the GUI sends to the engine thread and every event it gets back,
and the generic events every request may answer with.

Each feature's own requests and events live beside its handler
(``engine/handlers/<feature>/messages.py``). Every message is a frozen, keyword-only dataclass
carrying plain Python / numpy values (never ``mx.array``: MLX arrays belong to the engine
thread); a field without a default is one the sender must give. Each request has an id; every
event names the request it answers, so the session can drop stale answers.

Order of events for one request (the worker guarantees it): zero or more result
events (``Progress`` included), then exactly one terminal event — ``Finished`` or
``Failed``. A cancelled request emits nothing after its cancellation except
``Finished(reason="cancelled")``. Live requests (``EngineWorker.post_live``) emit only
what their handler emits, plus ``Failed`` if it raises.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


# -- bases --------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class Request:
    request_id: int


@dataclass(frozen=True, kw_only=True)
class Event:
    request_id: int


@dataclass(frozen=True, kw_only=True)
class StateChange(Event):
    """An event that reports a change of engine state (a model came or went, a user turn joined
    the chat): see :data:`STATE_CHANGES`."""


# -- generic events -----------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class Progress(Event):
    done: float
    total: float
    message: str = ""
    """What is being done, in words (none for a bare fraction)."""
    metrics: dict = field(default_factory=dict)
    """Live numbers (e.g. a training loss); plain floats. Empty when the stage has none."""


@dataclass(frozen=True, kw_only=True)
class Finished(Event):
    reason: str
    """``done``, ``stop`` (end-of-sequence token), ``length`` (max tokens) or ``cancelled``."""


@dataclass(frozen=True, kw_only=True)
class Failed(Event):
    message: str
    details: str = field(default="", repr=False)
    """Traceback, for a "details" disclosure in the window (empty when there is none to show)."""


TERMINAL = (Finished, Failed)

STATE_CHANGES = (StateChange,)
"""Events that report a change of engine state (subclasses of :class:`StateChange`: a model
loaded or unloaded, a reply started): sent and delivered even when their request was
cancelled. The change happened; a window that dropped them would contradict the engine."""


def describe_event(event: Any) -> str:
    """Short text for logs and error panels."""
    return f"{type(event).__name__}#{getattr(event, 'request_id', '?')}"
