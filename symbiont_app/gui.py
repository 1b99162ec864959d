"""`symbiont-app`: the desktop window (a minimal chat until the app issue builds the rest).

The window never calls MLX: it submits requests to the :class:`EngineWorker` thread
and receives its events through a queued Qt signal.
"""

from __future__ import annotations

import argparse
import sys

from mlx_hooks.backend import reexec_with_fast_blas


def build_window(model_spec: str = "default", worker_factory=None):
    from PySide6.QtCore import QObject, Qt, Signal
    from PySide6.QtGui import QKeySequence, QShortcut
    from PySide6.QtWidgets import (
        QHBoxLayout, QLabel, QLineEdit, QMainWindow, QPlainTextEdit, QPushButton, QVBoxLayout, QWidget,
    )

    from .engine_worker import EngineWorker, Failed, Finished, LoadModel, ModelLoaded, SendMessage, StepEvent
    from mlx_hooks.sampling import SamplingSettings

    class Bridge(QObject):
        event = Signal(object)

    class ChatWindow(QMainWindow):
        def __init__(self):
            super().__init__()
            self.setWindowTitle("Symbiont")
            self.bridge = Bridge()
            self.bridge.event.connect(self.on_event, Qt.QueuedConnection)
            self.worker = (worker_factory or EngineWorker)(self.bridge.event.emit)
            self.current_request: int | None = None
            self.status = QLabel("loading the default model…")
            self.status.setWordWrap(True)
            self.transcript = QPlainTextEdit(readOnly=True)
            self.entry = QLineEdit(placeholderText="Message (Ctrl+Enter to send, Esc to stop)")
            self.send_button = QPushButton("Send")
            self.stop_button = QPushButton("Stop")
            self.stop_button.setEnabled(False)
            row = QHBoxLayout()
            row.addWidget(self.entry)
            row.addWidget(self.send_button)
            row.addWidget(self.stop_button)
            layout = QVBoxLayout()
            layout.addWidget(self.status)
            layout.addWidget(self.transcript)
            layout.addLayout(row)
            central = QWidget()
            central.setLayout(layout)
            self.setCentralWidget(central)
            self.resize(800, 600)
            self.send_button.clicked.connect(self.send)
            self.entry.returnPressed.connect(self.send)
            self.stop_button.clicked.connect(self.stop)
            QShortcut(QKeySequence("Ctrl+Return"), self, activated=self.send)
            QShortcut(QKeySequence("Escape"), self, activated=self.stop)
            self.worker.start()
            self.worker.submit(LoadModel(self.worker.next_id(), model_spec))

        def send(self):
            text = self.entry.text().strip()
            if not text or self.current_request is not None or self.worker.chat is None:
                return
            self.entry.clear()
            self.transcript.appendPlainText(f"\nyou: {text}\nmodel: ")
            request = SendMessage(self.worker.next_id(), text, sampling=SamplingSettings(temp=0.7))
            self.current_request = request.request_id
            self.stop_button.setEnabled(True)
            self.worker.submit(request)

        def stop(self):
            if self.current_request is not None:
                self.worker.cancel(self.current_request)

        def on_event(self, event):
            if isinstance(event, ModelLoaded):
                warning = f"\n⚠ {event.slow_blas_warning}" if event.slow_blas_warning else ""
                self.status.setText(f"{event.name} ({event.runtime_dtype}, {event.fingerprint}){warning}")
            elif isinstance(event, StepEvent):
                if event.request_id != self.current_request:
                    return  # stale answer from a cancelled request
                self.transcript.insertPlainText(event.step.text)
            elif isinstance(event, Finished):
                if event.request_id == self.current_request:
                    self.current_request = None
                    self.stop_button.setEnabled(False)
            elif isinstance(event, Failed):
                self.status.setText(f"error: {event.message}")
                if event.request_id == self.current_request:
                    self.current_request = None
                    self.stop_button.setEnabled(False)

        def closeEvent(self, event):
            self.stop()
            self.worker.stop(timeout=5)
            super().closeEvent(event)

    return ChatWindow()


def main(argv=None) -> int:
    if argv is None:
        reexec_with_fast_blas()
    parser = argparse.ArgumentParser(prog="symbiont-app", description="Symbiont desktop app")
    parser.add_argument("--model", default="default", help="model to open: default, a repo id, a folder or a .gguf")
    args = parser.parse_args(argv)
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(sys.argv[:1])
    window = build_window(args.model)
    window.show()
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
