"""Coalesce redraws: a panel asks to redraw on every token; it redraws at most every N ms.

Tokens stream at tens per second while a redraw of a plot (axes re-laid out, text
re-rendered) costs milliseconds to tens of milliseconds on a slow CPU; redrawing once per
frame-ish interval keeps the GUI thread's event loop free (see benchmarks/gui_stall.py).
"""

from __future__ import annotations

from typing import Callable

from PySide6.QtCore import QObject, QTimer


class Coalescer(QObject):
    """``request()`` schedules ``fn`` to run once, ``interval_ms`` later; requests in between merge."""

    def __init__(self, fn: Callable[[], None], interval_ms: int = 100, parent: QObject | None = None):
        super().__init__(parent)
        self._fn = fn
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self._fire)

    def request(self, *_args) -> None:
        if not self._timer.isActive():
            self._timer.start()

    def flush(self) -> None:
        """Run now if a call is pending (e.g. before a screenshot)."""
        if self._timer.isActive():
            self._timer.stop()
            self._fire()

    @property
    def pending(self) -> bool:
        return self._timer.isActive()

    def _fire(self) -> None:
        self._fn()
