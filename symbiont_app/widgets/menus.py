"""The main window's menu bar: File (open a model or GGUF, presets, export the conversation),
View (every dock, reset layout), Help (keyboard shortcuts, About)."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QFileDialog, QMessageBox

from ..bundle import dialog_folder
from .chat import REGENERATE_KEY, SEND_KEYS, STOP_KEY, key_hint

CHAT_KEYS = (
    ("Return", "Send the message (in the entry)"),
    ("Shift+Return", "New line in the message"),
    (SEND_KEYS[0], "Send the message (anywhere in the window)"),
    (STOP_KEY, "Stop the reply"),
    (REGENERATE_KEY, "Regenerate the last reply"),
)
"""The chat's keys (its shortcuts live in the chat panel; the menus' are read from their actions)."""
CONVERSATION_FILTERS = "Markdown (*.md);;JSON with per-token statistics (*.json)"


def _action(window, text: str, tooltip: str, slot, keys=None) -> QAction:
    action = QAction(text, window)
    action.setToolTip(tooltip)
    action.setStatusTip(tooltip)
    if keys is not None:
        action.setShortcuts(QKeySequence.keyBindings(keys) if isinstance(keys, QKeySequence.StandardKey)
                            else [QKeySequence(keys)])
    action.triggered.connect(slot)
    return action


def build_menus(window) -> dict[str, QAction]:
    """Fill ``window.menuBar()``; returns the actions by name (tests and the shortcuts list use them)."""
    actions = {
        "open_folder": _action(window, "Open Model Folder…", "Load a model folder (config.json + safetensors)",
                               lambda: open_model(window, gguf=False), QKeySequence.StandardKey.Open),
        "open_gguf": _action(window, "Open GGUF File…", "Load a .gguf model (converted once, into the cache)",
                             lambda: open_model(window, gguf=True), "Ctrl+Shift+O"),
        "import_preset": _action(window, "Import Preset…", "Import a steering / clamp preset (Steering panel)",
                                 lambda: _steering(window, "_import")),
        "export_preset": _action(window, "Export Preset…", "Export the steering vectors and clamps as a preset",
                                 lambda: _steering(window, "_export")),
        "export_conversation": _action(window, "Export Conversation…", "Save the conversation as Markdown, or JSON "
                                       "with every token's probability and entropy",
                                       lambda: export_conversation_dialog(window), "Ctrl+E"),
        "close": window.close_action,
        "quit": _action(window, "Quit", "Close the window and quit", window.close, QKeySequence.StandardKey.Quit),
        "reset_layout": _action(window, "Reset Layout", "Put every panel back where it was at first start",
                                window.reset_layout),
        "shortcuts": _action(window, "Keyboard Shortcuts", "List the keyboard shortcuts",
                             lambda: show_shortcuts(window), QKeySequence.StandardKey.HelpContents),
        "about": _action(window, "About Symbiont", "Versions, backend and the loaded model", lambda: show_about(window)),
    }
    bar = window.menuBar()
    file_menu = bar.addMenu("&File")
    for name in ("open_folder", "open_gguf", None, "import_preset", "export_preset", None, "export_conversation",
                 None, "close", "quit"):
        file_menu.addSeparator() if name is None else file_menu.addAction(actions[name])
    view_menu = bar.addMenu("&View")
    for name, dock in window.docks.items():
        toggle = dock.toggleViewAction()
        toggle.setToolTip(f"Show or hide the {dock.windowTitle()} panel")
        view_menu.addAction(toggle)
        actions[f"dock_{name}"] = toggle
    view_menu.addSeparator()
    view_menu.addAction(actions["reset_layout"])
    help_menu = bar.addMenu("&Help")
    help_menu.addAction(actions["shortcuts"])
    help_menu.addAction(actions["about"])
    if "steering" not in window.panels:
        actions["import_preset"].setEnabled(False)
        actions["export_preset"].setEnabled(False)
    return actions


def open_model(window, gguf: bool) -> str | None:
    if gguf:
        path, _ = QFileDialog.getOpenFileName(window, "GGUF model", str(dialog_folder()), "GGUF (*.gguf)")
    else:
        path = QFileDialog.getExistingDirectory(window, "Model folder (config.json + safetensors)", str(dialog_folder()))
    if path:
        picker = window.panels.get("model")
        if picker is not None:
            picker.spec.setEditText(path)
            picker.load()
        else:
            window.session.models.load(path)
    return path or None


def _steering(window, method: str) -> None:
    panel = window.panels.get("steering")
    if panel is not None:
        window.docks["steering"].show()
        window.docks["steering"].raise_()
        getattr(panel, method)()


def export_conversation_dialog(window) -> Path | None:
    if not window.session.conversation.turns:
        window.session.error("nothing to export: the conversation is empty")
        return None
    start = dialog_folder() / "conversation.md"
    path, chosen = QFileDialog.getSaveFileName(window, "Export conversation", str(start), CONVERSATION_FILTERS)
    if not path:
        return None
    if not Path(path).suffix:
        path += ".json" if "json" in chosen.lower() else ".md"
    return window.export_conversation(path)


def shortcut_rows(window, actions: dict[str, QAction]) -> list[tuple[str, str]]:
    """``(keys as this platform writes them, what they do)`` for the chat and every menu action with keys."""
    rows = [(key_hint(keys), what) for keys, what in CHAT_KEYS]
    for action in actions.values():
        if action.shortcut().isEmpty():
            continue
        keys = ", ".join(s.toString(QKeySequence.NativeText) for s in action.shortcuts())
        rows.append((keys, action.text().replace("&", "").rstrip("…")))
    return rows


def show_shortcuts(window) -> QMessageBox:
    import html

    rows = "".join(f"<tr><td><b>{html.escape(k)}</b>&nbsp;&nbsp;</td><td>{html.escape(w)}</td></tr>"
                   for k, w in shortcut_rows(window, window.actions_by_name))
    box = QMessageBox(QMessageBox.Information, "Keyboard shortcuts", f"<table>{rows}</table>", parent=window)
    box.open()
    return box


def show_about(window) -> QMessageBox:
    from ..about import about_text

    backend = None
    if window.session.model_info is None:
        from mlx_hooks.backend import backend_info

        backend = backend_info().summary()
    box = QMessageBox(QMessageBox.Information, "About Symbiont", about_text(window.session.model_info, backend),
                      parent=window)
    box.open()
    return box
