"""The chat: streaming transcript with tokens coloured by probability or entropy,
alternatives of the hovered/clicked token, system prompt, sampling settings, send/stop."""

from __future__ import annotations

import html

from PySide6.QtCore import QEvent, Qt, QUrl
from PySide6.QtGui import QKeySequence, QPalette, QShortcut, QTextCursor
from PySide6.QtWidgets import (
    QComboBox, QDoubleSpinBox, QFormLayout, QHBoxLayout, QLabel, QLineEdit, QPushButton, QSpinBox, QTextBrowser,
    QVBoxLayout, QWidget,
)

from ..session.settings import SamplingPrefs

ENTROPY_SCALE_BITS = 8.0
"""Entropy that gets the fullest colour (a 256-way even choice)."""
SEND_KEYS = ("Ctrl+Return", "Ctrl+Enter")
"""Send shortcuts (Qt shows Ctrl as ⌘ on a Mac); the first is the one the hint names."""
STOP_KEY = "Escape"
TEXT_ON_TOKEN_COLOUR = "black"
"""Text on the light token backgrounds (82% lightness): readable in light and dark mode alike."""


def key_hint(keys: str) -> str:
    """How this platform writes a shortcut (``⌘↩``-style on a Mac, ``Ctrl+Return`` elsewhere)."""
    return QKeySequence(keys).toString(QKeySequence.NativeText)


def token_colour(record, mode: str) -> str | None:
    """Background colour for a token: green (confident) to red (unlikely / uncertain)."""
    if mode == "probability":
        badness = 1.0 - max(0.0, min(1.0, record.prob))
    elif mode == "entropy":
        badness = max(0.0, min(1.0, record.raw_entropy / ENTROPY_SCALE_BITS))
    else:
        return None
    hue = int(120 * (1.0 - badness))  # 120 = green, 0 = red
    return f"hsl({hue}, 70%, 82%)"


def token_html(record, mode: str, text_colour: str = TEXT_ON_TOKEN_COLOUR) -> str:
    """A token as a link (hover/click selects it); ``text_colour`` is used where it has no
    background (colour mode "none"): the view's palette text colour, so Dark Mode reads."""
    text = html.escape(record.text).replace("\n", "<br>") or "&#8203;"
    colour = token_colour(record, mode)
    foreground = TEXT_ON_TOKEN_COLOUR if colour else text_colour
    style = (f"text-decoration:none;color:{foreground};white-space:pre-wrap;"
             + (f"background-color:{colour};" if colour else ""))
    return f'<a href="tok:{record.position}" style="{style}">{text}</a>'


class ChatPanel(QWidget):
    def __init__(self, session, parent=None):
        super().__init__(parent)
        self.session = session
        self.conversation = session.conversation
        prefs = session.settings.data
        self.transcript = QTextBrowser(openLinks=False, openExternalLinks=False)
        self.transcript.setMouseTracking(True)
        self.transcript.anchorClicked.connect(self._clicked)
        self.transcript.highlighted.connect(self._hovered)
        self.details = QLabel("Hover or click a token to see its alternatives.")
        self.details.setWordWrap(True)
        self.details.setTextFormat(Qt.PlainText)
        self.system_prompt = QLineEdit(prefs.system_prompt, placeholderText="System prompt (optional)")
        self.temp = _spin(0.0, 3.0, 0.05, prefs.sampling.temp)
        self.top_p = _spin(0.0, 1.0, 0.05, prefs.sampling.top_p)
        self.min_p = _spin(0.0, 1.0, 0.01, prefs.sampling.min_p)
        self.top_k = QSpinBox(minimum=0, maximum=1000, value=prefs.sampling.top_k)
        self.max_tokens = QSpinBox(minimum=1, maximum=8192, value=prefs.sampling.max_tokens)
        self.colour = QComboBox()
        self.colour.addItems(["probability", "entropy", "none"])
        self.colour.setCurrentText(prefs.color_mode if prefs.color_mode in ("probability", "entropy", "none") else "probability")
        self.colour.currentTextChanged.connect(self._colour_changed)
        self.entry = QLineEdit(
            placeholderText=f"Message ({key_hint(SEND_KEYS[0])} to send, {key_hint(STOP_KEY)} to stop)")
        self.send_button = QPushButton("Send")
        self.stop_button = QPushButton("Stop")
        self.reset_button = QPushButton("New conversation")
        self.send_button.clicked.connect(self.send)
        self.entry.returnPressed.connect(self.send)
        self.stop_button.clicked.connect(self.stop)
        self.reset_button.clicked.connect(self.reset)
        for keys in SEND_KEYS:
            QShortcut(QKeySequence(keys), self, activated=self.send, context=Qt.WindowShortcut)
        QShortcut(QKeySequence(STOP_KEY), self, activated=self.stop, context=Qt.WindowShortcut)

        sampling = QHBoxLayout()
        for label, widget in (("temp", self.temp), ("top-p", self.top_p), ("min-p", self.min_p),
                              ("top-k", self.top_k), ("max tokens", self.max_tokens), ("colour by", self.colour)):
            sampling.addWidget(QLabel(label))
            sampling.addWidget(widget)
        sampling.addStretch(1)
        form = QFormLayout()
        form.addRow("System", self.system_prompt)
        row = QHBoxLayout()
        row.addWidget(self.entry, 1)
        row.addWidget(self.send_button)
        row.addWidget(self.stop_button)
        row.addWidget(self.reset_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(sampling)
        layout.addWidget(self.transcript, 1)
        layout.addWidget(self.details)
        layout.addLayout(row)
        self._rendered_turns = 0
        self._unsubscribe = [self.conversation.subscribe(self._on_conversation), session.subscribe(self._on_session)]
        self._refresh_buttons()

    # -- actions --------------------------------------------------------------------------------------
    def sampling_prefs(self) -> SamplingPrefs:
        return SamplingPrefs(self.temp.value(), self.top_p.value(), self.min_p.value(), self.top_k.value(),
                             self.max_tokens.value())

    def send(self) -> int | None:
        prefs = self.sampling_prefs()
        data = self.session.settings.data
        data.sampling, data.system_prompt = prefs, self.system_prompt.text()
        if self.session.model_info is None:
            self.session.error("no model loaded yet: pick one in the Model panel")
            return None
        rid = self.conversation.send(self.entry.text(), prefs.sampling(), prefs.max_tokens, self.system_prompt.text())
        if rid is not None:
            self.entry.clear()
        self._refresh_buttons()
        return rid

    def stop(self) -> None:
        self.conversation.stop()

    def reset(self) -> None:
        self.conversation.reset()

    # -- rendering -------------------------------------------------------------------------------------
    def _on_session(self, what: str) -> None:
        if what == "busy":
            self._refresh_buttons()

    def _refresh_buttons(self) -> None:
        from ..engine.protocol import SendMessage

        streaming = self.session.busy(SendMessage)
        self.stop_button.setEnabled(streaming)
        self.send_button.setEnabled(not streaming)

    def _on_conversation(self, what: str) -> None:
        if what == "token":
            record = self.conversation.tokens[-1]
            self._append(token_html(record, self.colour.currentText(), self.text_colour()))
        elif what == "turns":
            self._render_new_turns()
        elif what == "reset":
            self.rerender()
        elif what == "selected_position":
            self._show_details(self.conversation.selected_position)

    def _append(self, fragment: str) -> None:
        cursor = self.transcript.textCursor()
        cursor.movePosition(QTextCursor.End)
        cursor.insertHtml(fragment)
        self.transcript.setTextCursor(cursor)
        self.transcript.ensureCursorVisible()

    def _render_new_turns(self) -> None:
        turns = self.conversation.turns
        # A turn header is written when the turn starts; the assistant's tokens follow as they stream.
        while self._rendered_turns < len(turns):
            turn = turns[self._rendered_turns]
            self._append(self._turn_header(turn))
            if turn.role == "user":
                self._append(html.escape(turn.text).replace("\n", "<br>"))
            self._rendered_turns += 1
        last = turns[-1] if turns else None
        if last is not None and last.finish_reason == "cancelled":
            self._append(' <i style="color:gray">[stopped]</i>')

    @staticmethod
    def _turn_header(turn) -> str:
        return f'<br><b>{"you" if turn.role == "user" else "model"}:</b> '

    def rerender(self) -> None:
        """Redraw the whole transcript (colour mode changed, or reset)."""
        mode, text_colour = self.colour.currentText(), self.text_colour()
        parts = []
        for turn in self.conversation.turns:
            parts.append(self._turn_header(turn))
            if turn.role == "user":
                parts.append(html.escape(turn.text).replace("\n", "<br>"))
            else:
                parts.extend(token_html(r, mode, text_colour) for r in turn.tokens)
        self.transcript.setHtml("".join(parts))
        self._rendered_turns = len(self.conversation.turns)

    def text_colour(self) -> str:
        """The text colour of the panel's palette (follows Light / Dark Mode). The panel's own: on a
        palette change it is updated before the transcript (its child) hears of it."""
        return self.palette().color(QPalette.Text).name()

    def changeEvent(self, event) -> None:
        # macOS switches appearance while the app runs: tokens drawn in the old text colour are redrawn.
        if event.type() == QEvent.PaletteChange and hasattr(self, "_rendered_turns"):
            self.rerender()
        super().changeEvent(event)

    def _colour_changed(self, mode: str) -> None:
        self.session.settings.data.color_mode = mode
        self.rerender()

    def _position(self, url: QUrl) -> int | None:
        text = url.toString()
        return int(text[4:]) if text.startswith("tok:") and text[4:].isdigit() else None

    def _hovered(self, url: QUrl) -> None:
        position = self._position(url)
        if position is not None:
            self.conversation.selected_position = position

    def _clicked(self, url: QUrl) -> None:
        self._hovered(url)

    def _mark(self, position: int | None) -> None:
        """Outline the selected token in the transcript (an extra selection: the HTML stays as is)."""
        from PySide6.QtGui import QColor, QTextCharFormat
        from PySide6.QtWidgets import QTextEdit

        selections = []
        href = f"tok:{position}"
        block = self.transcript.document().begin()
        while position is not None and block.isValid() and not selections:
            it = block.begin()
            while not it.atEnd():
                fragment = it.fragment()
                if fragment.charFormat().anchorHref() == href:
                    cursor = QTextCursor(self.transcript.document())
                    cursor.setPosition(fragment.position())
                    cursor.setPosition(fragment.position() + fragment.length(), QTextCursor.KeepAnchor)
                    selection = QTextEdit.ExtraSelection()
                    selection.cursor = cursor
                    fmt = QTextCharFormat()
                    fmt.setUnderlineStyle(QTextCharFormat.SingleUnderline)
                    fmt.setUnderlineColor(QColor("#1f3fbf"))
                    fmt.setFontWeight(700)
                    selection.format = fmt
                    selections.append(selection)
                    break
                it += 1
            block = block.next()
        self.transcript.setExtraSelections(selections)

    def _show_details(self, position: int | None) -> None:
        self._mark(position)
        record = self.conversation.token_at(position)
        if record is None:
            return
        alternatives = ", ".join(f"{text!r} {prob:.1%}" for _, prob, text in record.top_k[:8])
        self.details.setText(
            f"position {record.position}: {record.text!r}  p={record.prob:.1%}  entropy {record.raw_entropy:.2f} bits"
            f"\nalternatives: {alternatives}"
        )


def _spin(low: float, high: float, step: float, value: float) -> QDoubleSpinBox:
    box = QDoubleSpinBox(minimum=low, maximum=high, singleStep=step, decimals=2)
    box.setValue(value)
    return box
