"""The main window: the chat in the middle, one dock per ``PANELS`` spec, an error bar, the
menu bar, a title and status line that say which model is loaded (or that none is), and the
layout / settings saved between runs."""

from __future__ import annotations

from PySide6.QtCore import QByteArray, Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QDockWidget, QHBoxLayout, QLabel, QMainWindow, QMessageBox, QPushButton, QTabBar, QVBoxLayout, QWidget,
)

from .bridge import EngineBridge
from .chat import ChatPanel
from .panels import PANELS
from .throttle import Coalescer

AREAS = {"right": Qt.RightDockWidgetArea, "bottom": Qt.BottomDockWidgetArea}
FRONT_PANELS = {"dock-model": "meters"}
"""Which tab is in front at first start (by the first dock of the area): the meters, once a model is up."""


class ErrorBar(QWidget):
    """Shows the session's last error in the window (with its details on demand)."""

    def __init__(self, session, parent=None):
        super().__init__(parent)
        self.session = session
        self.label = QLabel("")
        self.label.setWordWrap(True)
        self.label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.label.setStyleSheet("color: #8b0000;")
        self.details_button = QPushButton("Details")
        self.details_button.setToolTip("Show the full error (with the traceback)")
        self.close_button = QPushButton("Dismiss")
        self.close_button.setToolTip("Hide this message")
        self.details_button.clicked.connect(self._details)
        self.close_button.clicked.connect(self.hide)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(4, 2, 4, 2)
        layout.addWidget(self.label, 1)
        layout.addWidget(self.details_button)
        layout.addWidget(self.close_button)
        # Both colours fixed (this sheet reaches the buttons too): the palette's text is light in Dark Mode.
        self.setStyleSheet("background: #ffe4e1; color: #8b0000;")
        self.hide()
        self._unsubscribe = session.subscribe(self._on_session)

    def _on_session(self, what: str) -> None:
        if what == "error" and self.session.last_error is not None:
            self.label.setText(f"⚠ {self.session.last_error.message}")
            self.details_button.setVisible(bool(self.session.last_error.details))
            self.show()

    def _details(self) -> None:
        error = self.session.last_error
        if error is not None:
            box = QMessageBox(QMessageBox.Warning, "Error details", error.message, parent=self)
            box.setDetailedText(error.details)
            box.open()


class MainWindow(QMainWindow):
    def __init__(self, model_spec: str | None = "default", worker_factory=None, panels=None):
        super().__init__()
        self.setWindowTitle("Symbiont — no model loaded")
        self.setObjectName("SymbiontMainWindow")
        self.bridge = EngineBridge(worker_factory=worker_factory, parent=self)
        self.session = self.bridge.session
        self.worker = self.bridge.worker
        self.settings = self.session.settings
        self.errors = ErrorBar(self.session)
        self.chat = ChatPanel(self.session)
        self.status = QLabel("no model loaded")
        self.status.setWordWrap(True)
        self.status.setToolTip("The loaded model (name, dtype, fingerprint), or the load in progress")
        central = QWidget()
        layout = QVBoxLayout(central)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addWidget(self.errors)
        layout.addWidget(self.chat, 1)
        self.setCentralWidget(central)
        self.statusBar().addWidget(self.status, 1)
        self.panels: dict[str, QWidget] = {}
        self.docks: dict[str, QDockWidget] = {}
        specs = list(panels if panels is not None else PANELS)
        for spec in specs:
            self._add_panel(spec)
        # ⌘W on a Mac (Ctrl+W, Ctrl+F4 elsewhere): closing the only window quits the app.
        self.close_action = QAction("Close Window", self)
        self.close_action.setShortcuts(QKeySequence.keyBindings(QKeySequence.StandardKey.Close))
        self.close_action.setToolTip("Close the window (quits the app; settings and layout are saved)")
        self.close_action.triggered.connect(self.close)
        self.addAction(self.close_action)
        self.resize(1400, 900)
        self._default_layout(specs)
        self._first_start_state = self.saveState()
        from .menus import build_menus

        self.actions_by_name = build_menus(self)
        self._restore_layout()
        self._hide_stale_tab_bars()
        # Recent models/files are written soon after they change, not only at exit (a crash keeps them).
        self._save_soon = Coalescer(self.save_settings, 1000, self)
        self._unsubscribe = [self.session.models.subscribe(self._on_models), self.session.subscribe(self._on_session),
                             self.settings.subscribe(self._save_soon.request)]
        if self.settings.problem:
            self.session.error(self.settings.problem)
        self.bridge.start()
        if model_spec:
            self.session.models.load(model_spec)

    def _add_panel(self, spec) -> None:
        dock = QDockWidget(spec.title, self)
        dock.setObjectName(f"dock-{spec.name}")
        try:
            widget = spec.factory(self.session, dock)
        except Exception as exc:  # noqa: BLE001 - one broken panel must not take the window down
            import traceback

            widget = QLabel(f"panel {spec.title!r} could not be built: {exc}")
            self.session.error(f"panel {spec.title!r} could not be built: {exc}", traceback.format_exc())
        dock.setWidget(widget)
        self.addDockWidget(AREAS[spec.area], dock)
        self.panels[spec.name] = widget
        self.docks[spec.name] = dock

    def _default_layout(self, specs) -> None:
        """Panels of one area share it as tabs (the saved layout, if any, replaces this)."""
        by_area: dict[str, list] = {}
        for spec in specs:
            if spec.name in self.docks:
                by_area.setdefault(spec.area, []).append(self.docks[spec.name])
        for docks in by_area.values():
            for dock in docks[1:]:
                self.tabifyDockWidget(docks[0], dock)
            front = self.docks.get(FRONT_PANELS.get(docks[0].objectName(), ""), docks[0])
            front.raise_()
        if "right" in by_area:
            self.resizeDocks([by_area["right"][0]], [560], Qt.Horizontal)
        if "bottom" in by_area:
            self.resizeDocks([by_area["bottom"][0]], [330], Qt.Vertical)

    def reset_layout(self) -> None:
        """Every panel shown and docked where it was at first start."""
        for dock in self.docks.values():
            dock.setFloating(False)
            dock.show()
        self.restoreState(self._first_start_state)
        self._hide_stale_tab_bars()

    def _hide_stale_tab_bars(self) -> None:
        """Hide dock tab bars that no group of tabbed docks uses any more.

        Qt (seen with PySide6 6.x) can leave the tab bar of an earlier tabbing state behind
        when a third dock joins a group: the layout stops managing it, but it is still a
        child of the window and shows up on ``show()`` as a second, stale row of tabs.
        A tab bar in use shows exactly the titles of one group; any other is stale.
        """
        groups = [{dock.windowTitle()} | {other.windowTitle() for other in self.tabifiedDockWidgets(dock)}
                  for dock in self.docks.values()]
        for bar in self.findChildren(QTabBar):
            if bar.parent() is self and {bar.tabText(i) for i in range(bar.count())} not in groups:
                bar.hide()

    def export_conversation(self, path):
        """Write the conversation (``.md`` or ``.json``); a problem goes to the error bar. Returns the path or None."""
        from ..session.conversation_export import ExportError, export_conversation

        try:
            written = export_conversation(path, self.session.conversation, self.session.model_info,
                                          self.chat.system_prompt.text())
        except ExportError as exc:
            self.session.error(str(exc))
            return None
        self.statusBar().showMessage(f"conversation saved to {written}", 8000)
        return written

    # -- status -------------------------------------------------------------------------------------------
    def _on_models(self, what: str) -> None:
        """The status line and title say what the engine holds: the model, a load in progress, or none."""
        models = self.session.models
        if models.loading_request is not None and what in ("loading", "progress"):
            message = models.progress.message if models.progress else "…"
            self.status.setText(f"loading {models.loading_spec}: {message}")
        elif what == "download" and models.download_request is not None:
            progress = models.download_progress
            self.status.setText(f"downloading {models.loading_spec}: {progress.describe() if progress else '…'}")
        elif models.info is not None:
            info = models.info
            warning = f"  ⚠ {info.slow_blas_warning}" if info.slow_blas_warning else ""
            self.status.setText(f"{info.name} ({info.runtime_dtype}, {info.fingerprint}){warning}")
        elif models.loading_request is None and models.download_request is None:
            failed = f" (the load of {models.loading_spec} failed: {models.last_load_error})" if models.last_load_error else ""
            self.status.setText(f"no model loaded{failed}")
        self._update_title()

    def _update_title(self) -> None:
        models = self.session.models
        if models.info is not None:
            self.setWindowTitle(f"Symbiont — {models.info.name}")
        elif models.loading_request is not None or models.download_request is not None:
            self.setWindowTitle(f"Symbiont — loading {models.loading_spec}")
        else:
            self.setWindowTitle("Symbiont — no model loaded")

    def _on_session(self, what: str) -> None:
        if what == "busy":
            self.statusBar().showMessage("working…" if self.session.active else "", 0)

    # -- persistence --------------------------------------------------------------------------------------
    def _restore_layout(self) -> None:
        data = self.settings.data
        if data.window_geometry:
            self.restoreGeometry(QByteArray.fromBase64(data.window_geometry.encode("ascii")))
        if data.window_state:
            self.restoreState(QByteArray.fromBase64(data.window_state.encode("ascii")))

    def save_settings(self) -> None:
        data = self.settings.data
        data.window_geometry = bytes(self.saveGeometry().toBase64()).decode("ascii")
        data.window_state = bytes(self.saveState().toBase64()).decode("ascii")
        data.sampling = self.chat.sampling_prefs()
        data.system_prompt = self.chat.system_prompt.text()
        from .chat import DRAFT_KEY

        data.extras[DRAFT_KEY] = self.chat.entry.text()  # unsent text survives a restart
        try:
            self.settings.save()
        except OSError as exc:
            self.session.error(f"{self.settings.path}: settings could not be saved ({exc})")

    def shutdown(self) -> None:
        self._save_soon.flush()
        self.save_settings()
        self.chat.stop()
        # Ask the engine to stop without waiting here: a model load is one MLX call that cannot
        # be interrupted; the GUI must not freeze on it (gui.exit_after waits a little, then leaves).
        self.bridge.stop(timeout=0)

    def wait_for_engine(self, timeout: float = 120.0) -> bool:
        """After closing: wait for the engine thread to end (a request that does not poll for
        cancellation finishes its current MLX call first). False if it is still running."""
        self.bridge.stop(timeout=timeout)
        return not self.worker.running

    def closeEvent(self, event):
        self.shutdown()
        super().closeEvent(event)
