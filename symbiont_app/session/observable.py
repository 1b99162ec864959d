"""A minimal observer: widgets subscribe to Qt-free models and re-read them on notify."""

from __future__ import annotations

from typing import Callable

Callback = Callable[[str], None]


class Observable:
    """``subscribe(cb) -> unsubscribe``; ``notify(what)`` calls every subscriber with ``what``.

    ``what`` names what changed (e.g. ``"tokens"``, ``"selected_position"``) so a widget
    can skip redraws it does not need. Callbacks run on the caller's thread (the GUI
    thread: the bridge delivers engine events there).
    """

    def __init__(self):
        self._subscribers: list[Callback] = []

    def subscribe(self, callback: Callback) -> Callable[[], None]:
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)
        return unsubscribe

    def notify(self, what: str) -> None:
        for callback in list(self._subscribers):
            callback(what)

    def handle_event(self, event) -> None:
        """Sub-models override: called with every (non-stale) engine event."""
