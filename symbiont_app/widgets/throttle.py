"""Coalesce redraws: a panel asks to redraw on every token; it redraws at most every N ms.

Tokens stream at tens per second while a redraw of a plot (axes re-laid out, text
re-rendered) costs milliseconds to tens of milliseconds on a slow CPU; redrawing once per
frame-ish interval keeps the GUI thread's event loop free (see benchmarks/gui_stall.py).

Redraws triggered by the same token would otherwise fire together and be painted in one
paint pass (measured: meters + temperature plots together stalled the loop for 50–80 ms on
2 cores), so coalescers made with ``spaced=True`` also keep :data:`SPACING_MS` between any
two of their redraws: each panel is painted in an event-loop iteration of its own.
"""

from __future__ import annotations

import time
from typing import Callable

from PySide6.QtCore import QObject, QTimer

SPACING_MS = 40
"""Least time between two spaced redraws (of any panels)."""

_last_spaced_fire = [float("-inf")]  # monotonic seconds of the latest spaced redraw, GUI thread only


class Coalescer(QObject):
    """``request()`` schedules ``fn`` to run once, ``interval_ms`` later; requests in between merge."""

    def __init__(self, fn: Callable[[], None], interval_ms: int = 100, parent: QObject | None = None,
                 spaced: bool = False):
        super().__init__(parent)
        self._fn = fn
        self._interval_ms = interval_ms
        self._spaced = spaced
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self._fire)

    def request(self, *_args) -> None:
        if not self._timer.isActive():
            self._timer.start(self._interval_ms)

    def flush(self) -> None:
        """Run now if a call is pending (e.g. before a screenshot)."""
        if self._timer.isActive():
            self._timer.stop()
            self._run()

    @property
    def pending(self) -> bool:
        return self._timer.isActive()

    def _fire(self) -> None:
        if self._spaced:
            wait_ms = (_last_spaced_fire[0] - time.monotonic()) * 1000.0 + SPACING_MS
            if wait_ms > 0:  # another panel just redrew: let its paint pass go first
                self._timer.start(int(wait_ms) + 1)
                return
        self._run()

    def _run(self) -> None:
        if self._spaced:
            _last_spaced_fire[0] = time.monotonic()
        self._fn()
