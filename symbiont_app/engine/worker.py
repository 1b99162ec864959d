"""The one long-lived engine thread that owns the model (Qt-free).

MLX streams belong to the thread that created them and MLX is not safe to use from
several threads, so exactly one thread loads the model and runs every MLX call. The
GUI (or a script) submits immutable requests and receives events through a callback
(the Qt bridge turns it into a queued signal). Requests run one at a time in order;
cancellation is a flag handlers poll between steps; "live" requests (a slider move)
jump the queue and are applied between generation steps or as soon as the thread is idle.
"""

from __future__ import annotations

import collections
import itertools
import queue
import threading
import traceback
from typing import Callable

from .protocol import Event, Failed, Finished, Request
from .registry import HandlerContext, handler_for
from .state import EngineState

_STOP = object()
_WAKE = object()


class EngineWorker:
    """Runs requests on its own thread; reports events via ``on_event`` (called on that thread)."""

    def __init__(self, on_event: Callable[[Event], None]):
        self._on_event = on_event
        self._requests: queue.Queue = queue.Queue()
        self._live: collections.deque = collections.deque()
        self._cancelled: set[int] = set()
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._thread = threading.Thread(target=self._run, name="symbiont-engine", daemon=True)
        self.state = EngineState()
        """Engine-thread state; tests may read it after a request finished, the GUI never does."""
        self.current: int | None = None
        self._stopping = threading.Event()

    # -- called from any thread ----------------------------------------------------------------
    def new_id(self) -> int:
        with self._lock:
            return next(self._ids)

    next_id = new_id  # older name

    def start(self) -> None:
        self._thread.start()

    def submit(self, request: Request) -> int:
        self._requests.put(request)
        return request.request_id

    def cancel(self, request_id: int) -> None:
        with self._lock:
            self._cancelled.add(request_id)

    def post_live(self, request: Request) -> None:
        """Apply ``request`` as soon as possible: between steps of the running request, or now if idle."""
        self._live.append(request)
        self._requests.put(_WAKE)

    def stop(self, timeout: float = 10.0) -> None:
        """Cancel what runs and everything queued, finish the thread (the model is freed with it).

        The thread must be gone before the interpreter exits: a daemon thread still inside
        MLX at exit aborts the process.
        """
        self._stopping.set()
        self._requests.put(_STOP)
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    # -- engine thread ------------------------------------------------------------------------------
    def _is_cancelled(self, request_id: int) -> bool:
        if self._stopping.is_set():
            return True
        with self._lock:
            return request_id in self._cancelled

    def _apply_live(self) -> None:
        while self._live:
            request = self._live.popleft()
            ctx = HandlerContext(request.request_id, self._on_event, lambda: False)
            try:
                handler_for(request)(self.state, request, ctx)
            except Exception as exc:  # noqa: BLE001 - every failure reaches the window
                self._on_event(Failed(request.request_id, _message(exc), traceback.format_exc()))

    def _run(self) -> None:
        while True:
            request = self._requests.get()
            self._apply_live()
            if request is _STOP:
                return
            if request is _WAKE:
                continue
            self._handle(request)

    def _handle(self, request: Request) -> None:
        rid = request.request_id
        if self._is_cancelled(rid):
            self._on_event(Finished(rid, "cancelled"))
            return
        self.current = rid
        ctx = HandlerContext(rid, self._on_event, lambda: self._is_cancelled(rid), self._apply_live)
        try:
            handler_for(request)(self.state, request, ctx)
        except Exception as exc:  # noqa: BLE001 - every failure reaches the window
            if self._is_cancelled(rid):
                self._on_event(Finished(rid, "cancelled"))
            else:
                self._on_event(Failed(rid, _message(exc), traceback.format_exc()))
            return
        finally:
            self.current = None
        self._on_event(Finished(rid, "cancelled" if self._is_cancelled(rid) else ctx.reason))
        with self._lock:
            self._cancelled.discard(rid)


def _message(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
