"""Chat basics and app chrome: multi-line entry, regenerate, edit and resend, copy, export
(Markdown / JSON with per-token statistics), pin vs preview, menus, About, shortcuts,
tooltips, ``--version``. Real engine thread on the tiny model where the engine is involved."""

from __future__ import annotations

import json

import pytest
from PySide6.QtCore import Qt, QUrl
from PySide6.QtWidgets import QAbstractButton, QAbstractSpinBox, QComboBox, QLineEdit, QPlainTextEdit

from test_app_widgets import FakeEngine

pytestmark = pytest.mark.gui
TIMEOUT = 60000


@pytest.fixture
def config_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("SYMBIONT_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("SYMBIONT_SAE_PATH", str(tmp_path / "no-saes"))
    return tmp_path / "config"


def _window(qtbot, spec, panels=("model",), **kwargs):
    from symbiont_app.gui import build_window
    from symbiont_app.widgets.panels import PANELS

    window = build_window(spec, panels=[p for p in PANELS if p.name in panels], **kwargs)
    qtbot.addWidget(window)
    qtbot.waitUntil(lambda: window.session.model_info is not None, timeout=TIMEOUT)
    return window


def _idle(qtbot, window):
    qtbot.waitUntil(lambda: not window.session.active, timeout=TIMEOUT)


@pytest.fixture
def tiny_window(qtbot, tiny_folder, config_dir):
    window = _window(qtbot, str(tiny_folder))
    window.chat.max_tokens.setValue(4)
    window.chat.temp.setValue(0.8)
    yield window
    window.close()


def test_regenerate_and_edit_rewind_the_engine_too(qtbot, tiny_window):
    window, chat = tiny_window, tiny_window.chat
    conversation = window.session.conversation
    chat.entry.setText("hello there")
    chat.send()
    _idle(qtbot, window)
    first = conversation.turns[-1]
    assert chat.regenerate_button.isEnabled() and chat.edit_button.isEnabled()
    assert chat.regenerate() is not None
    _idle(qtbot, window)
    assert [t.role for t in conversation.turns] == ["user", "assistant"] and conversation.turns[0].text == "hello there"
    assert conversation.turns[1] is not first and conversation.turns[1].tokens
    assert conversation.last_message.max_tokens == 4  # the same settings as the first time
    messages = window.worker.state.chat.messages
    assert [m["role"] for m in messages] == ["user", "assistant"] and messages[1]["content"] == conversation.turns[1].text
    assert chat.edit_last() == "hello there"
    _idle(qtbot, window)
    assert conversation.turns == [] and window.worker.state.chat.messages == []
    assert chat.entry.text() == "hello there"
    chat.entry.setText("hello again")
    chat.send()
    _idle(qtbot, window)
    assert conversation.turns[0].text == "hello again" and window.worker.state.chat.messages[0]["content"] == "hello again"
    assert "hello there" not in chat.transcript.toPlainText()


def test_export_markdown_and_json_with_per_token_statistics(qtbot, tiny_window, tmp_path):
    window = tiny_window
    window.chat.entry.setText("Count to three.")
    window.chat.send()
    _idle(qtbot, window)
    reply = window.session.conversation.turns[-1]
    markdown = window.export_conversation(tmp_path / "chat.md").read_text()
    assert "## You\n\nCount to three." in markdown and reply.text in markdown
    assert f"{len(reply.tokens)} tokens" in markdown and "tokens/s" in markdown
    data = json.loads(window.export_conversation(tmp_path / "chat.json").read_text())
    assert data["model"]["fingerprint"] == window.session.model_info.fingerprint
    tokens = data["turns"][1]["tokens"]
    assert [t["text"] for t in tokens] == [r.text for r in reply.tokens]
    assert [t["prob"] for t in tokens] == [r.prob for r in reply.tokens]
    assert [t["entropy_bits"] for t in tokens] == [r.raw_entropy for r in reply.tokens]
    assert data["turns"][1]["finish_reason"] == reply.finish_reason and data["turns"][1]["tokens_per_second"] > 0
    assert not list(tmp_path.glob(".*tmp*"))  # written atomically: no temp file left
    assert window.export_conversation(tmp_path / "chat.txt") is None
    assert "chat.txt" in window.session.last_error.message and ".md or .json" in window.session.last_error.message
    from PySide6.QtGui import QGuiApplication

    copied = window.chat.copy()
    assert copied == QGuiApplication.clipboard().text() and "Count to three." in copied and reply.text in copied


def test_enter_sends_and_shift_enter_starts_a_new_line(qtbot, config_dir):
    window = _window(qtbot, "fake-model", panels=(), worker_factory=FakeEngine)
    entry = window.chat.entry
    window.show()
    qtbot.waitExposed(window)
    entry.setFocus()
    qtbot.keyClicks(entry, "first")
    qtbot.keyClick(entry, Qt.Key_Return, Qt.ShiftModifier)
    qtbot.keyClicks(entry, "second")
    assert entry.text() == "first\nsecond" and not window.session.active
    qtbot.keyClick(entry, Qt.Key_Return)
    _idle(qtbot, window)
    assert window.session.conversation.turns[0].text == "first\nsecond" and entry.text() == ""
    window.close()


def test_click_pins_a_token_and_hover_only_previews(qtbot, config_dir):
    window = _window(qtbot, "fake-model", panels=(), worker_factory=FakeEngine)
    window.chat.entry.setText("hello")
    window.chat.send()
    _idle(qtbot, window)
    conversation, transcript = window.session.conversation, window.chat.transcript
    a, b, c = (conversation.tokens[i].position for i in (1, 4, 7))
    transcript.anchorClicked.emit(QUrl(f"tok:{a}"))
    assert conversation.pinned_position == conversation.selected_position == a
    assert "pinned" in window.chat.details.text()
    transcript.highlighted.emit(QUrl(f"tok:{b}"))  # hover: a preview
    assert conversation.selected_position == b and conversation.pinned_position == a
    assert f"position {b}:" in window.chat.details.text()
    transcript.highlighted.emit(QUrl())  # the hover ends: back to the pinned token
    assert conversation.selected_position == a
    transcript.anchorClicked.emit(QUrl(f"tok:{c}"))
    assert conversation.pinned_position == c
    transcript.anchorClicked.emit(QUrl(f"tok:{c}"))  # clicking the pinned token unpins it
    assert conversation.pinned_position is None
    window.close()


def test_menus_title_about_and_shortcuts(qtbot, tiny_folder, config_dir):
    from symbiont_app.about import package_version
    from symbiont_app.widgets.menus import shortcut_rows, show_about

    window = _window(qtbot, str(tiny_folder), panels=("model", "temperature"))
    name = window.session.model_info.name
    assert window.windowTitle() == f"Symbiont — {name}"
    menus = [a.text() for a in window.menuBar().actions()]
    assert menus == ["&File", "&View", "&Help"]
    actions = window.actions_by_name
    file_items = [a.text() for a in window.menuBar().actions()[0].menu().actions() if a.text()]
    assert file_items[:2] == ["Open Model Folder…", "Open GGUF File…"] and "Export Conversation…" in file_items
    assert not actions["import_preset"].isEnabled()  # no Steering panel in this window
    window.show()
    qtbot.waitExposed(window)
    toggle = actions["dock_temperature"]
    toggle.trigger()
    assert not window.docks["temperature"].isVisible()
    actions["reset_layout"].trigger()
    assert window.docks["temperature"].isVisible() and window.docks["model"].isVisible()
    box = show_about(window)
    text = box.text()
    assert f"mlx {package_version('mlx')}" in text and f"mlx-lm {package_version('mlx-lm')}" in text
    assert name in text and window.session.model_info.fingerprint in text and "MLX device" in text
    box.close()
    rows = dict((what, keys) for keys, what in shortcut_rows(window, actions))
    assert "Export Conversation" in rows and "Stop the reply" in rows and "Keyboard Shortcuts" in rows
    window.close()


def test_every_control_of_the_chat_model_and_steering_panels_and_error_bar_has_a_tooltip(qtbot, config_dir):
    window = _window(qtbot, "fake-model", panels=("model", "steering"), worker_factory=FakeEngine)
    kinds = (QAbstractButton, QAbstractSpinBox, QComboBox, QLineEdit, QPlainTextEdit)
    missing = []
    for owner in (window.chat, window.panels["model"], window.panels["steering"], window.errors):
        for kind in kinds:
            for widget in owner.findChildren(kind):
                if isinstance(widget, QLineEdit) and isinstance(widget.parent(), (QComboBox, QAbstractSpinBox)):
                    continue  # the editor inside a combo box or spin box: the box has the tip
                if not widget.toolTip():
                    missing.append(f"{type(owner).__name__}: {type(widget).__name__} {widget.objectName() or widget.property('text')!r}")
    assert missing == []
    for action in window.actions_by_name.values():
        assert action.toolTip() and action.toolTip() != action.text().replace("&", ""), action.text()
    window.close()


def test_version_flag(capsys, monkeypatch):
    from symbiont_app.about import package_version
    from symbiont_app.frozen_main import main as frozen_main
    from symbiont_app.gui import main

    monkeypatch.setenv("COLUMNS", "40")  # one line even on a narrow terminal
    for entry, prog in ((main, "symbiont-app"), (frozen_main, "Symbiont")):
        with pytest.raises(SystemExit) as exit_info:
            entry(["--version"])
        assert exit_info.value.code == 0
        out = capsys.readouterr().out
        assert out.count("\n") == 1
        assert out.startswith(f"{prog} {package_version('symbiont')} (mlx {package_version('mlx')}, mlx-lm ")
