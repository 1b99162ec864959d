"""Engine thread -> GUI thread: a queued Qt signal carrying each event to the session."""

from __future__ import annotations

from PySide6.QtCore import QObject, Qt, Signal


class EngineBridge(QObject):
    """Owns the worker; ``event`` is emitted on the GUI thread for every engine event.

    The worker calls :meth:`post` on the engine thread; the queued connection hands the
    event to the GUI thread's event loop, where the session routes it. Nothing here
    blocks the GUI: the engine thread never waits for the GUI.
    """

    event = Signal(object)

    def __init__(self, session_factory=None, worker_factory=None, parent=None):
        super().__init__(parent)
        from ..engine.worker import EngineWorker
        from ..session.session import AppSession

        self.worker = (worker_factory or EngineWorker)(self.post)
        self.session = (session_factory or AppSession)(self.worker)
        self.event.connect(self.session.handle_event, Qt.QueuedConnection)

    def post(self, event) -> None:
        """Called on the engine thread."""
        self.event.emit(event)

    def start(self) -> None:
        self.worker.start()

    def stop(self, timeout: float = 10.0) -> None:
        self.worker.stop(timeout)
