"""The one long-lived engine thread that owns the model (Qt-free).

MLX streams belong to the thread that created them and MLX is not safe to use from
several threads, so exactly one thread loads the model and runs every MLX call. The
GUI (or a script) submits immutable requests and receives events through a callback
(the Qt bridge turns it into a queued signal). Requests run one at a time in order;
cancellation is a flag handlers poll between steps; "live" requests (a slider move)
jump the queue and are applied between generation steps or as soon as the thread is idle.

A handler that would only wait (a hub download) hands the rest of its request to a
plain thread beside this one (``ctx.continue_off_thread``): no MLX there, and what
needs MLX is sent back here (``ctx.on_engine_thread``), applied like a live request.
"""

from __future__ import annotations

import collections
import concurrent.futures
import itertools
import queue
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable

from mlx_hooks.cpu_kernels import cpu_kernels

from .protocol import Event, Failed, Finished, Request
from .registry import HandlerContext, handler_for
from .state import EngineState

_STOP = object()
_WAKE = object()


@dataclass(frozen=True)
class _EngineCall:
    """A continuation's call to run on the engine thread, with the future its caller waits on."""

    call: Callable[[], Any]
    result: concurrent.futures.Future


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
        self._side_threads: set[threading.Thread] = set()

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
        deadline = time.monotonic() + timeout
        if self._thread.is_alive():
            self._thread.join(timeout)
        for side in list(self._side_threads):  # a cancelled download stops at its next chunk
            side.join(max(0.0, deadline - time.monotonic()))

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
            if isinstance(request, _EngineCall):
                if request.result.set_running_or_notify_cancel():
                    try:
                        request.result.set_result(request.call())
                    except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
                        request.result.set_exception(exc)
                continue
            ctx = HandlerContext(request.request_id, self._on_event, lambda: False)
            try:
                handler_for(request)(self.state, request, ctx)
            except Exception as exc:  # noqa: BLE001 - every failure reaches the window
                self._on_event(Failed(request_id=request.request_id, message=_message(exc),
                                      details=traceback.format_exc()))

    def _run(self) -> None:
        with cpu_kernels():  # the CPU backend's fast attention and SiLU for every request (see there)
            self._serve()

    def _serve(self) -> None:
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
            self._on_event(Finished(request_id=rid, reason="cancelled"))
            return
        self.current = rid
        ctx = HandlerContext(rid, self._on_event, lambda: self._is_cancelled(rid), self._apply_live)
        try:
            handler_for(request)(self.state, request, ctx)
        except Exception as exc:  # noqa: BLE001 - every failure reaches the window
            if self._is_cancelled(rid):
                self._on_event(Finished(request_id=rid, reason="cancelled"))
            else:
                self._on_event(Failed(request_id=rid, message=_message(exc), details=traceback.format_exc()))
            return
        finally:
            self.current = None
        if ctx.continuation is not None and not self._is_cancelled(rid):
            self._start_continuation(rid, ctx.continuation)
            return
        self._finish(rid, ctx.reason)

    def _finish(self, rid: int, reason: str) -> None:
        self._on_event(Finished(request_id=rid, reason="cancelled" if self._is_cancelled(rid) else reason))
        with self._lock:
            self._cancelled.discard(rid)

    # -- continuations (plain threads beside the engine thread) ----------------------------------------
    def _start_continuation(self, rid: int, fn: Callable) -> None:
        thread = threading.Thread(target=self._run_continuation, args=(rid, fn), name=f"symbiont-beside-{rid}",
                                  daemon=True)
        with self._lock:
            self._side_threads.add(thread)
        thread.start()

    def _run_continuation(self, rid: int, fn: Callable) -> None:
        ctx = HandlerContext(rid, self._on_event, lambda: self._is_cancelled(rid), on_engine=self._call_on_engine)
        try:
            fn(ctx)
        except Exception as exc:  # noqa: BLE001 - every failure reaches the window
            if self._is_cancelled(rid):
                self._on_event(Finished(request_id=rid, reason="cancelled"))
            else:
                self._on_event(Failed(request_id=rid, message=_message(exc), details=traceback.format_exc()))
        else:
            self._finish(rid, ctx.reason)
        finally:
            with self._lock:
                self._side_threads.discard(threading.current_thread())
                self._cancelled.discard(rid)

    def _call_on_engine(self, call: Callable[[], Any], cancelled: Callable[[], bool]) -> Any:
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._live.append(_EngineCall(call, future))
        self._requests.put(_WAKE)
        while True:
            try:
                return future.result(timeout=0.1)
            except concurrent.futures.TimeoutError:
                if cancelled() or self._stopping.is_set():
                    future.cancel()  # not run if it has not started
                    raise RuntimeError("cancelled while waiting for the engine thread") from None


def _message(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
