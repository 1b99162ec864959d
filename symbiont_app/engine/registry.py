"""Request handlers: ``@handles(RequestType)`` registers ``fn(state, request, ctx)``.

Handler modules live in ``symbiont_app.engine.handlers.<feature>.handler``, beside their
feature's messages; :func:`handler_for` imports them all on first use, which registers
their handlers. A handler runs on the engine thread, may call MLX, and reports through
``ctx`` only.
"""

from __future__ import annotations

from typing import Any, Callable

from .protocol import Event, Progress

Handler = Callable[..., None]
_HANDLERS: dict[type, Handler] = {}


def handles(request_type: type) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        if request_type in _HANDLERS and _HANDLERS[request_type] is not fn:
            raise ValueError(f"{request_type.__name__} already handled by {_HANDLERS[request_type].__qualname__}")
        _HANDLERS[request_type] = fn
        return fn
    return register


def handler_for(request) -> Handler:
    from .handlers import import_all

    import_all()  # registers every handler module (the first time)

    for cls in type(request).__mro__:
        if cls in _HANDLERS:
            return _HANDLERS[cls]
    raise TypeError(f"no handler for {type(request).__name__}")


class HandlerContext:
    """A handler's line back to the GUI, for one request."""

    def __init__(self, request_id: int, emit: Callable[[Event], None], cancelled: Callable[[], bool],
                 apply_live: Callable[[], None] = lambda: None,
                 on_engine: Callable[[Callable[[], Any], Callable[[], bool]], Any] | None = None):
        self.request_id = request_id
        self._emit = emit
        self._cancelled = cancelled
        self._apply_live = apply_live
        self._on_engine = on_engine
        self.reason = "done"
        """The ``Finished`` reason the worker sends when the handler returns (``done|stop|length``)."""
        self.continuation: Callable[[HandlerContext], None] | None = None
        """Set by :meth:`continue_off_thread`: the rest of the request, run beside the engine thread."""

    def emit(self, event: Event) -> None:
        """Send a result event (dropped once the request is cancelled: cancelled requests emit no results)."""
        if not self._cancelled():
            self._emit(event)

    def emit_change(self, event: Event) -> None:
        """Send an event that reports a change of engine state (``protocol.STATE_CHANGES``) even
        after a cancel: the change happened, and the window must not be left believing otherwise."""
        self._emit(event)

    def is_cancelled(self) -> bool:
        """Poll between steps. Also applies pending live requests (slider moves) on this thread."""
        self._apply_live()
        return self._cancelled()

    def progress(self, done: float, total: float, message: str = "", **metrics) -> None:
        self.emit(Progress(request_id=self.request_id, done=float(done), total=float(total), message=message,
                           metrics=dict(metrics)))

    def continue_off_thread(self, fn: Callable[[HandlerContext], None]) -> None:
        """Finish this request on a plain thread of its own once the handler returns.

        For waiting that is not computing (a download): the engine thread goes on serving
        other requests meanwhile. ``fn(ctx)`` must not call MLX; it reports through its
        ``ctx`` like a handler, and the request's terminal event comes when ``fn`` returns.
        """
        self.continuation = fn

    def on_engine_thread(self, call: Callable[[], Any]) -> Any:
        """From a continuation: run ``call`` on the engine thread (between generation steps, or
        when it is idle) and return its result. Raises ``RuntimeError`` if the request is
        cancelled or the engine stops while waiting."""
        if self._on_engine is None:
            return call()  # already on the engine thread
        return self._on_engine(call, self._cancelled)
