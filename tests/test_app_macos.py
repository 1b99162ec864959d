"""What a Mac user meets that Linux tests can still check: Dark Mode text in the chat, the
send shortcut as the platform writes it, ⌘W, quitting during a long model load, file
dialogs that do not open in ``/`` (a Finder-launched app's working directory), and the
folders settings and lab runs go to. Offscreen Qt, the scripted fake engine."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QKeySequence, QPalette
from PySide6.QtWidgets import QApplication

from symbiont_app.engine.handlers.model.messages import LoadModel, ModelInfo, ModelLoaded
from symbiont_app.engine.protocol import Finished, Progress
from test_app_widgets import VOCAB, FakeEngine

pytestmark = pytest.mark.gui


@pytest.fixture
def user_folders(tmp_path, monkeypatch):
    monkeypatch.setenv("SYMBIONT_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("SYMBIONT_DATA_DIR", str(tmp_path / "data"))
    return tmp_path


def _window(qtbot, panels=("model", "temperature"), worker=FakeEngine, model="fake-model"):
    from symbiont_app.gui import build_window
    from symbiont_app.widgets.panels import PANELS

    window = build_window(model, worker_factory=worker, panels=[p for p in PANELS if p.name in panels])
    qtbot.addWidget(window)
    return window


# -- Dark Mode ------------------------------------------------------------------------------------------
def _dark_palette() -> QPalette:
    palette = QPalette()
    dark, light = QColor(30, 30, 30), QColor(235, 235, 235)
    for role, colour in ((QPalette.Window, dark), (QPalette.Base, dark), (QPalette.AlternateBase, dark),
                         (QPalette.Button, dark), (QPalette.Text, light), (QPalette.WindowText, light),
                         (QPalette.ButtonText, light), (QPalette.Link, QColor(120, 170, 255))):
        palette.setColor(role, colour)
    return palette


def _luminance(rgb) -> float:
    """WCAG relative luminance of an sRGB colour."""
    def channel(c):
        c /= 255.0
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4
    r, g, b = rgb
    return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b)


def _contrast(a, b) -> float:
    high, low = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def test_chat_tokens_stay_readable_when_the_palette_turns_dark(qtbot, user_folders):
    """Colour mode "none" draws tokens without a background: in Dark Mode their text must be light.

    The reply is drawn under the light palette, then the appearance switches (as macOS does
    while the app runs); every pixel of the transcript must then be the background or
    lighter than it (anti-aliased light text never goes darker), and the text must reach
    WCAG AA contrast (4.5) against it. Black tokens (the old style) are darker than the background.
    """
    app = QApplication.instance()
    light = app.palette()
    window = _window(qtbot)
    try:
        qtbot.waitUntil(lambda: window.session.model_info is not None, timeout=10000)
        chat = window.chat
        chat.colour.setCurrentText("none")
        window.worker.tokens_per_reply = 30
        chat.entry.setText("hi")
        chat.send()
        qtbot.waitUntil(lambda: not window.session.active, timeout=10000)
        app.setPalette(_dark_palette())
        qtbot.wait(50)
        assert chat.text_colour() == QColor(235, 235, 235).name()
        chat.transcript.resize(700, 300)
        image = chat.transcript.viewport().grab().toImage()
        background = chat.transcript.palette().color(QPalette.Base)
        bg = (background.red(), background.green(), background.blue())
        pixels = {image.pixelColor(x, y).getRgb()[:3] for x in range(0, image.width()) for y in range(image.height())}
        darker = [p for p in pixels if _luminance(p) < _luminance(bg) - 0.002]
        assert not darker, f"{len(darker)} pixel colours darker than the dark background, e.g. {sorted(darker)[:3]}"
        assert max(_contrast(p, bg) for p in pixels) >= 4.5
    finally:
        app.setPalette(light)
        window.close()


def test_token_backgrounds_keep_dark_text_and_none_uses_the_given_colour():
    from symbiont_app.widgets.chat import token_html

    record = type("R", (), {"text": "a", "position": 3, "prob": 0.9, "raw_entropy": 1.0})()
    assert "color:black" in token_html(record, "probability", "#ebebeb")  # light pastel background
    assert "color:#ebebeb" in token_html(record, "none", "#ebebeb") and "background" not in token_html(record, "none")


def test_fixed_light_backgrounds_carry_their_own_dark_text(qtbot):
    """Where a widget paints a fixed light background, its text colour is fixed too (not the
    palette's, which is light in Dark Mode): the error bar (its buttons included) and the
    highlighted token of a latent's record."""
    from types import SimpleNamespace

    from symbiont_app.widgets.main_window import ErrorBar
    from symbiont_app.widgets.meters import record_html

    app = QApplication.instance()
    light = app.palette()
    app.setPalette(_dark_palette())
    try:
        bar = ErrorBar(SimpleNamespace(last_error=None, subscribe=lambda f: (lambda: None)))
        qtbot.addWidget(bar)
        for button in (bar.details_button, bar.close_button):
            button.ensurePolished()
            palette = button.palette()
            text, back = palette.color(QPalette.ButtonText), palette.color(QPalette.Button)
            assert _contrast(text.getRgb()[:3], back.getRgb()[:3]) >= 4.5, (button.text(), text.name(), back.name())
    finally:
        app.setPalette(light)
    context = SimpleNamespace(value=1.0, before="the ", focus="cat", after=" sat")
    record = SimpleNamespace(latent=7, label="cats", has_record=True, contexts=[context], promoted=[], suppressed=[],
                             frequency=0.01, max_activation=2.0, mean_activation=1.0)
    assert "<b style='background:#ffe08a;color:black'>cat</b>" in record_html(record)


# -- shortcuts ------------------------------------------------------------------------------------------
def test_send_hint_is_written_the_way_this_platform_writes_the_shortcut(qtbot, user_folders):
    from PySide6.QtGui import QShortcut

    window = _window(qtbot)
    try:
        chat = window.chat
        native = QKeySequence("Ctrl+Return").toString(QKeySequence.NativeText)  # "⌘↩"-style on a Mac
        assert f"{native} to send" in chat.entry.placeholderText()
        assert f"{QKeySequence('Escape').toString(QKeySequence.NativeText)} to stop" in chat.entry.placeholderText()
        keys = {s.key() for s in chat.findChildren(QShortcut)}
        assert QKeySequence("Ctrl+Return") in keys  # the hint names a shortcut that exists
    finally:
        window.close()


def test_close_window_shortcut_closes_and_saves(qtbot, user_folders):
    window = _window(qtbot)
    window.show()
    qtbot.waitExposed(window)
    assert window.close_action.shortcuts() == QKeySequence.keyBindings(QKeySequence.StandardKey.Close)
    if sys.platform != "darwin":
        assert QKeySequence("Ctrl+W") in window.close_action.shortcuts()  # ⌘W on a Mac
    window.activateWindow()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is window, timeout=3000)
    qtbot.keyClick(window.chat.entry, Qt.Key_W, Qt.ControlModifier)
    qtbot.waitUntil(lambda: not window.isVisible(), timeout=3000)
    assert (user_folders / "config" / "settings.json").is_file()


# -- quitting during a long load --------------------------------------------------------------------------
class SlowLoadEngine(FakeEngine):
    """A model load that, like one MLX call, does not look at cancellation for ``load_s`` seconds."""

    load_s = 8.0

    def __init__(self, on_event):
        super().__init__(on_event)
        self.release = threading.Event()

    def _run(self):
        while (request := self.requests.get()) is not None:
            if isinstance(request, LoadModel):
                self.emit(Progress(request_id=request.request_id, done=2, total=4, message="loading weights"))
                self.release.wait(self.load_s)
                self.emit(ModelLoaded(request_id=request.request_id, info=ModelInfo(
                    name="slow", spec=request.spec, fingerprint="fp", n_layers=2, d_model=8, vocab_size=VOCAB,
                    hook_points=("resid_post.0",), runtime_dtype="float32", backend="fake", slow_blas_warning=None,
                    memory_bytes=0, budget_bytes=0)))
            self.emit(Finished(request_id=request.request_id, reason="done"))

    @property
    def running(self):
        return self.thread.is_alive()

    def stop(self, timeout=5):
        self.requests.put(None)
        self.thread.join(timeout)


def test_quitting_during_a_long_load_neither_freezes_the_window_nor_lingers(qtbot, user_folders, monkeypatch):
    from symbiont_app import gui

    window = _window(qtbot, worker=SlowLoadEngine)
    window.show()
    qtbot.waitUntil(lambda: window.session.models.loading_request is not None, timeout=5000)
    time.sleep(0.2)  # the load is inside its uninterruptible call
    start = time.perf_counter()
    window.close()
    close_s = time.perf_counter() - start
    exits = []
    monkeypatch.setattr(os, "_exit", exits.append)
    start = time.perf_counter()
    gui.exit_after(window, 0, grace_s=1.0)
    exit_s = time.perf_counter() - start
    window.worker.release.set()  # let the fake load end (a real process would be gone)
    window.worker.thread.join(5)
    # The fake load never ends on its own, so a close or an exit that waited for it would take
    # forever; the bounds leave room for a loaded CI runner, not for a wait on the load.
    assert close_s < 2.0, f"closing blocked the GUI for {close_s:.2f} s"
    assert exits == [0] and exit_s < 4.0, f"the process lingered {exit_s:.2f} s (exits: {exits})"
    assert (user_folders / "config" / "settings.json").is_file()  # saved before leaving


def test_an_idle_engine_ends_cleanly_without_the_hard_exit(qtbot, user_folders, monkeypatch):
    from symbiont_app import gui

    window = _window(qtbot, worker=SlowLoadEngine)  # loads at once when released
    window.worker.release.set()
    qtbot.waitUntil(lambda: window.session.model_info is not None, timeout=10000)
    window.close()
    exits = []
    monkeypatch.setattr(os, "_exit", exits.append)
    assert gui.exit_after(window, 3) == 3 and exits == []


# -- where dialogs open and files go -------------------------------------------------------------------------
def test_file_dialogs_open_in_user_folders_never_the_working_directory(qtbot, user_folders, monkeypatch):
    from PySide6.QtWidgets import QFileDialog

    seen = []

    def record(kind):
        def dialog(parent, caption, folder="", *rest, **kwargs):
            seen.append((caption, folder))
            return "" if kind == "dir" else ("", "")
        return staticmethod(dialog)

    monkeypatch.setattr(QFileDialog, "getExistingDirectory", record("dir"))
    monkeypatch.setattr(QFileDialog, "getOpenFileName", record("file"))
    monkeypatch.setattr(QFileDialog, "getSaveFileName", record("file"))
    monkeypatch.chdir("/")
    window = _window(qtbot, panels=("model", "steering", "sae", "lab"))
    try:
        picker, steering, sae, lab = (window.panels[name] for name in ("model", "steering", "sae", "lab"))
        picker._pick_folder()
        picker._pick_gguf()
        steering._export()
        steering._import()
        sae._open_folder()
        sae._open_file()
        sae._choose_out()
        lab._choose_out()
        lab._choose_config()
    finally:
        window.close()
    assert len(seen) == 9
    data = user_folders / "data"
    for caption, folder in seen:
        assert folder and Path(folder).is_absolute() and Path(folder) != Path("/"), (caption, folder)
        assert Path(folder).parent.is_dir(), (caption, folder)
    by_caption = dict(seen)
    assert Path(by_caption["Export preset"]) == data / "presets" / "steering.symbiont-preset"
    assert Path(by_caption["Import preset"]) == data / "presets"
    assert Path(by_caption["Run folder"]) == data / "lab"


def test_settings_and_lab_runs_go_to_application_support_on_macos(tmp_path, monkeypatch):
    from symbiont_app.bundle import lab_runs_dir, presets_dir, user_data_dir
    from symbiont_app.session.lab import default_out
    from symbiont_app.session.settings import Settings, config_dir

    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("SYMBIONT_CONFIG_DIR", "SYMBIONT_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    support = tmp_path / "Library" / "Application Support" / "Symbiont"
    assert user_data_dir() == config_dir() == support
    assert presets_dir() == support / "presets" and lab_runs_dir() == support / "lab"
    assert Path(default_out("negation")) == support / "lab" / "negation"
    # settings an earlier build wrote to ~/Library/Preferences/Symbiont are read, then saved to the new place
    legacy = tmp_path / "Library" / "Preferences" / "Symbiont" / "settings.json"
    legacy.parent.mkdir(parents=True)
    legacy.write_text('{"system_prompt": "kept", "color_mode": "entropy"}')
    settings = Settings.load()
    assert settings.problem is None and settings.data.system_prompt == "kept"
    assert settings.path == support / "settings.json"
    settings.save()
    again = Settings.load()
    assert again.data.color_mode == "entropy" and (support / "settings.json").is_file()
    assert legacy.is_file()  # never deleted: an older build run again still finds its file
