"""The one long-lived engine thread that owns the model (Qt-free).

MLX streams belong to the thread that created them, and MLX is not safe to use from
several threads, so exactly one thread loads the model and runs every MLX call. The
GUI (or a script) submits immutable requests and receives plain event records
(numpy and Python values, never lazy ``mx.array``s) through a callback, which the Qt
layer turns into signals. Cancellation is a flag checked between generation steps.
"""

from __future__ import annotations

import itertools
import queue
import threading
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

from mlx_hooks.generate import GenerationStep
from mlx_hooks.sampling import SamplingSettings


@dataclass(frozen=True)
class LoadModel:
    request_id: int
    spec: str = "default"
    runtime_dtype: str = "auto"


@dataclass(frozen=True)
class SendMessage:
    request_id: int
    text: str
    max_tokens: int = 256
    sampling: SamplingSettings = SamplingSettings()
    system_prompt: str | None = None


@dataclass(frozen=True)
class ResetChat:
    request_id: int


@dataclass(frozen=True)
class ModelLoaded:
    request_id: int
    name: str
    fingerprint: str
    runtime_dtype: str
    backend_summary: str
    slow_blas_warning: str | None


@dataclass(frozen=True)
class StepEvent:
    request_id: int
    step: GenerationStep


@dataclass(frozen=True)
class Finished:
    request_id: int
    reason: str
    """``stop``, ``length``, ``cancelled`` or ``done``."""


@dataclass(frozen=True)
class Failed:
    request_id: int
    message: str
    details: str = field(default="", repr=False)


_STOP = object()


class EngineWorker:
    """Runs requests one at a time on its own thread; reports events via ``on_event``."""

    def __init__(self, on_event: Callable[[Any], None]):
        self._on_event = on_event
        self._requests: queue.Queue = queue.Queue()
        self._cancelled: set[int] = set()
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._thread = threading.Thread(target=self._run, name="symbiont-engine", daemon=True)
        self.loaded = None
        self.chat = None

    def next_id(self) -> int:
        return next(self._ids)

    def start(self) -> None:
        self._thread.start()

    def submit(self, request) -> int:
        self._requests.put(request)
        return request.request_id

    def cancel(self, request_id: int) -> None:
        with self._lock:
            self._cancelled.add(request_id)

    def stop(self, timeout: float = 10.0) -> None:
        self._requests.put(_STOP)
        self._thread.join(timeout)

    def _is_cancelled(self, request_id: int) -> bool:
        with self._lock:
            return request_id in self._cancelled

    def _run(self) -> None:
        while True:
            request = self._requests.get()
            if request is _STOP:
                return
            try:
                if self._is_cancelled(request.request_id):
                    self._on_event(Finished(request.request_id, "cancelled"))
                    continue
                self._handle(request)
            except Exception as exc:  # noqa: BLE001 - every failure reaches the window
                self._on_event(Failed(request.request_id, str(exc) or type(exc).__name__, traceback.format_exc()))

    def _handle(self, request) -> None:
        from mlx_hooks.backend import backend_info
        from mlx_hooks.chat import ChatSession
        from mlx_hooks.loader import load_model

        if isinstance(request, LoadModel):
            self.loaded = load_model(request.spec, runtime_dtype=request.runtime_dtype)
            self.chat = ChatSession(self.loaded.model, self.loaded.tokenizer)
            info = backend_info()
            self._on_event(ModelLoaded(
                request.request_id, self.loaded.name, self.loaded.fingerprint.short, self.loaded.runtime_dtype,
                info.summary(), info.slow_blas_warning,
            ))
        elif isinstance(request, ResetChat):
            if self.chat is not None:
                self.chat.reset()
            self._on_event(Finished(request.request_id, "done"))
        elif isinstance(request, SendMessage):
            if self.chat is None:
                raise RuntimeError("no model loaded")
            self.chat.system_prompt = request.system_prompt
            reason = "done"
            for step in self.chat.send(
                request.text, max_tokens=request.max_tokens, sampling=request.sampling,
                should_stop=lambda: self._is_cancelled(request.request_id),
            ):
                self._on_event(StepEvent(request.request_id, step))
                reason = step.finish_reason or reason
            if self._is_cancelled(request.request_id):
                reason = "cancelled"
            self._on_event(Finished(request.request_id, reason))
        else:
            raise TypeError(f"unknown request {type(request).__name__}")
