"""Test doubles for the app, shared by the app and hub test files (each used to carry its own copy).

- :class:`RecordingEngine`: stands in for the engine thread; records what the session submits,
  cancels and posts live, and answers nothing (the test plays the engine's events).
- :class:`Pump`: the real engine thread with an :class:`AppSession` fed on the test's thread,
  which is what the Qt bridge does in the app.
"""

from __future__ import annotations

import itertools
import queue
import time

from mlx_hooks.sampling import SamplingSettings

GREEDY = SamplingSettings(temp=0)


class RecordingEngine:
    """A fake engine that only records what the session asks for."""

    def __init__(self):
        self.ids = itertools.count(1)
        self.submitted, self.live, self.cancelled = [], [], []

    def new_id(self):
        return next(self.ids)

    def submit(self, request):
        self.submitted.append(request)
        return request.request_id

    def cancel(self, rid):
        self.cancelled.append(rid)

    def post_live(self, request):
        self.live.append(request)


class Pump:
    """A real engine thread and an AppSession fed on this thread (what the Qt bridge does)."""

    def __init__(self, tmp_path, timeout: float = 120.0):
        from symbiont_app.engine.worker import EngineWorker
        from symbiont_app.session.session import AppSession
        from symbiont_app.session.settings import Settings

        self.events: queue.Queue = queue.Queue()
        self.worker = EngineWorker(self.events.put)
        self.session = AppSession(self.worker, Settings(path=tmp_path / "settings.json"))
        self.seen: list = []
        self.timeout = timeout
        """Default wait for :meth:`until` and :meth:`finish`."""
        self.worker.start()

    def until(self, predicate, timeout: float | None = None):
        """Feed events to the session until one satisfies ``predicate``; returns it."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            event = self.events.get(timeout=max(0.1, deadline - time.monotonic()))
            self.seen.append(event)
            self.session.handle_event(event)
            if predicate(event):
                return event

    def finish(self, rid: int, timeout: float | None = None):
        """The request's Finished or Failed event."""
        from symbiont_app.engine.protocol import Failed, Finished

        return self.until(lambda e: isinstance(e, (Finished, Failed)) and e.request_id == rid, timeout)

    def live_done(self, kind=None, timeout: float = 60.0):
        from symbiont_app.engine.handlers.steering.messages import InterventionsChanged
        from symbiont_app.engine.protocol import Failed

        return self.until(lambda e: isinstance(e, (kind or InterventionsChanged, Failed)), timeout)

    def send(self, text: str, max_tokens: int = 6) -> list:
        """A greedy reply's token events."""
        from symbiont_app.engine.handlers.chat.messages import TokenStep
        from symbiont_app.engine.protocol import Finished

        start = len(self.seen)
        rid = self.session.conversation.send(text, GREEDY, max_tokens, None)
        end = self.finish(rid)
        assert isinstance(end, Finished), end
        return [e for e in self.seen[start:] if isinstance(e, TokenStep) and e.request_id == rid]

    def reset(self):
        from symbiont_app.engine.handlers.chat.messages import ResetChat

        self.finish(self.session.submit(ResetChat(request_id=self.session.new_id())))

    def stop(self):
        self.worker.stop()
