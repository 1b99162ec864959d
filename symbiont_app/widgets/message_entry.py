"""The chat's message entry: several lines, Enter sends, Shift+Enter starts a new line."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QFontMetrics
from PySide6.QtWidgets import QPlainTextEdit

VISIBLE_LINES = 3
"""Height of the entry, in lines of text (longer messages scroll)."""


class MessageEntry(QPlainTextEdit):
    """A plain-text box with the line edit's ``text()`` / ``setText()``; emits ``submitted`` on Enter."""

    submitted = Signal()

    def __init__(self, placeholder: str = "", parent=None):
        super().__init__(parent)
        self.setPlaceholderText(placeholder)
        self.setTabChangesFocus(True)  # Tab moves on to Send, as in a line edit
        lines = QFontMetrics(self.font()).lineSpacing() * VISIBLE_LINES
        self.setFixedHeight(lines + 2 * int(self.document().documentMargin()) + 2 * self.frameWidth() + 4)

    def text(self) -> str:
        return self.toPlainText()

    def setText(self, text: str) -> None:  # noqa: N802 - Qt's naming, as QLineEdit has it
        self.setPlainText(text)
        self.moveCursor(self.textCursor().MoveOperation.End)

    def append_text(self, text: str) -> None:
        """Put ``text`` back without losing what is there (a returned message goes above new typing)."""
        current = self.text()
        self.setText(text if not current.strip() else f"{text}\n{current}")

    def keyPressEvent(self, event) -> None:  # noqa: N802 - Qt override
        if event.key() in (Qt.Key_Return, Qt.Key_Enter):
            if event.modifiers() & Qt.ShiftModifier:
                self.insertPlainText("\n")
            else:
                self.submitted.emit()
            event.accept()
            return
        super().keyPressEvent(event)
