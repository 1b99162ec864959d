"""The chat: streaming transcript with tokens coloured by probability or entropy, the
alternatives of the hovered (previewed) or clicked (pinned) token, system prompt, sampling
settings, a multi-line entry, send/stop/regenerate/edit/copy, and each reply's speed and end
(truncated, stopped and failed replies are marked)."""

from __future__ import annotations

import html

from PySide6.QtCore import QEvent, Qt, QUrl
from PySide6.QtGui import QGuiApplication, QKeySequence, QPalette, QShortcut, QTextCursor
from PySide6.QtWidgets import (
    QComboBox, QDoubleSpinBox, QFormLayout, QHBoxLayout, QLabel, QLineEdit, QPushButton, QSpinBox, QTextBrowser,
    QVBoxLayout, QWidget,
)

from ..session.conversation_export import conversation_markdown, finish_note
from ..session.settings import SamplingPrefs
from .message_entry import MessageEntry
from .transcript_html import (  # noqa: F401 - token_colour/token_html re-exported for existing importers
    ENTROPY_SCALE_BITS, TEXT_ON_TOKEN_COLOUR, key_hint, mark_token, token_colour, token_html,
)

SEND_KEYS = ("Ctrl+Return", "Ctrl+Enter")
"""Send shortcuts besides Enter in the entry (Qt shows Ctrl as ⌘ on a Mac)."""
STOP_KEY = "Escape"
REGENERATE_KEY = "Ctrl+R"
EXAMPLES = (
    "What is the capital of France?",
    "Write one short sentence about cats.",
    "Explain in two sentences why the sky is blue.",
)
"""Example messages the empty chat offers (one click sends)."""
MARKER_STYLE = "color:gray"
DRAFT_KEY = "chat_draft"
"""``AppSettings.extras`` key of the unsent text in the entry (kept when the window closes)."""


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
        self.transcript.setToolTip("The conversation. Hover a token to preview its alternatives (the side panels "
                                   "follow); click it to pin it, click again to unpin.")
        self.details = QLabel("Hover a token to preview its alternatives; click it to pin it.")
        self.details.setWordWrap(True)
        self.details.setTextFormat(Qt.PlainText)
        self.rate = QLabel("")
        self.rate.setToolTip("The last reply: tokens generated and decoding speed (mlx-lm's measure, "
                             "from its first token)")
        self.system_prompt = QLineEdit(prefs.system_prompt, placeholderText="System prompt (optional)")
        self.system_prompt.setToolTip("Sent before the conversation as the system message (empty: none)")
        self.temp = _spin(0.0, 3.0, 0.05, prefs.sampling.temp, "Sampling temperature (0: always the most likely token)")
        self.top_p = _spin(0.0, 1.0, 0.05, prefs.sampling.top_p, "Nucleus sampling: keep the smallest set of tokens "
                           "with this much probability (0: off)")
        self.min_p = _spin(0.0, 1.0, 0.01, prefs.sampling.min_p, "Drop tokens below this fraction of the top token's "
                           "probability (0: off)")
        self.top_k = QSpinBox(minimum=0, maximum=1000, value=prefs.sampling.top_k)
        self.top_k.setToolTip("Keep only the k most likely tokens (0: off)")
        self.max_tokens = QSpinBox(minimum=1, maximum=8192, value=prefs.sampling.max_tokens)
        self.max_tokens.setToolTip("Longest reply, in tokens: a reply cut here is marked [truncated]")
        self.colour = QComboBox()
        self.colour.addItems(["probability", "entropy", "none"])
        self.colour.setCurrentText(prefs.color_mode if prefs.color_mode in ("probability", "entropy", "none") else "probability")
        self.colour.setToolTip("Token background: the probability the model gave the token, or the entropy (bits) "
                               "of its next-token distribution; green = confident, red = unlikely / uncertain")
        self.colour.currentTextChanged.connect(self._colour_changed)
        self.entry = MessageEntry(
            f"Message ({key_hint('Return')} or {key_hint(SEND_KEYS[0])} to send, {key_hint('Shift+Return')} "
            f"for a new line, {key_hint(STOP_KEY)} to stop)")
        self.entry.setToolTip(f"Your message: {key_hint('Return')} sends, {key_hint('Shift+Return')} starts a new line")
        self.entry.submitted.connect(self.send)
        draft = prefs.extras.get(DRAFT_KEY)
        if isinstance(draft, str):
            self.entry.setText(draft)  # what was typed when the window last closed
        self.send_button = _button("Send", "Send the message (Enter)", self.send)
        self.stop_button = _button("Stop", f"Stop the reply where it is ({key_hint(STOP_KEY)})", self.stop)
        self.regenerate_button = _button("Regenerate", f"Forget the last reply and generate it again from the same "
                                         f"message ({key_hint(REGENERATE_KEY)})", self.regenerate)
        self.edit_button = _button("Edit last", "Take the last message back into the entry (its reply is "
                                   "forgotten) to change it and send it again", self.edit_last)
        self.copy_button = _button("Copy", "Copy the selected text, or the whole conversation as Markdown", self.copy)
        self.reset_button = _button("New conversation", "Forget the conversation (the model's KV cache too)", self.reset)
        for keys in SEND_KEYS:
            QShortcut(QKeySequence(keys), self, activated=self.send, context=Qt.WindowShortcut)
        QShortcut(QKeySequence(STOP_KEY), self, activated=self.stop, context=Qt.WindowShortcut)
        QShortcut(QKeySequence(REGENERATE_KEY), self, activated=self.regenerate, context=Qt.WindowShortcut)

        sampling = QHBoxLayout()
        for label, widget in (("temp", self.temp), ("top-p", self.top_p), ("min-p", self.min_p),
                              ("top-k", self.top_k), ("max tokens", self.max_tokens), ("colour by", self.colour)):
            caption = QLabel(label)
            caption.setToolTip(widget.toolTip())
            sampling.addWidget(caption)
            sampling.addWidget(widget)
        sampling.addStretch(1)
        form = QFormLayout()
        form.addRow("System", self.system_prompt)
        status = QHBoxLayout()
        status.addWidget(self.details, 1)
        status.addWidget(self.rate)
        row = QHBoxLayout()
        row.addWidget(self.entry, 1)
        buttons = QVBoxLayout()
        for pair in ((self.send_button, self.stop_button), (self.regenerate_button, self.edit_button),
                     (self.copy_button, self.reset_button)):
            line = QHBoxLayout()
            for button in pair:
                line.addWidget(button)
            buttons.addLayout(line)
        row.addLayout(buttons)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(sampling)
        layout.addWidget(self.transcript, 1)
        layout.addLayout(status)
        layout.addLayout(row)
        self._rendered_turns = 0
        self._marked_turns: set[int] = set()
        self._unsubscribe = [self.conversation.subscribe(self._on_conversation), session.subscribe(self._on_session),
                             session.models.subscribe(self._on_models),
                             session.settings.subscribe(self._on_settings)]
        self.rerender()
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
            self.session.error("no model loaded yet: pick one in the Model panel (or File > Open model)")
            return None
        rid = self.conversation.send(self.entry.text(), prefs.sampling(), prefs.max_tokens, self.system_prompt.text())
        if rid is not None:
            self.entry.clear()  # handed back ("returned") if the engine never takes it
        self._refresh_buttons()
        return rid

    def stop(self) -> None:
        self.conversation.stop()

    def reset(self) -> None:
        self.conversation.reset()

    def regenerate(self) -> int | None:
        rid = self.conversation.regenerate()
        self._refresh_buttons()
        return rid

    def edit_last(self) -> str | None:
        text = self.conversation.edit_last()
        if text is not None:
            self.entry.append_text(text)
            self.entry.setFocus()
        self._refresh_buttons()
        return text

    def copy(self) -> str:
        """Copy the transcript's selection, else the conversation as Markdown; returns what was copied."""
        text = self.transcript.textCursor().selectedText().replace("\u2029", "\n")
        if not text:
            text = conversation_markdown(self.conversation, self.session.model_info, self.system_prompt.text())
        QGuiApplication.clipboard().setText(text)
        return text

    # -- rendering -------------------------------------------------------------------------------------
    def _on_settings(self, what: str) -> None:
        if what == "sampling":  # another panel set the sampling settings (the what-if view's "Apply")
            prefs = self.session.settings.data.sampling
            self.temp.setValue(prefs.temp)
            self.top_p.setValue(prefs.top_p)
            self.min_p.setValue(prefs.min_p)

    def _on_session(self, what: str) -> None:
        if what == "busy":
            self._refresh_buttons()

    def _on_models(self, what: str) -> None:
        if what in ("loaded", "loading") and not self.conversation.turns:
            self.rerender()  # the welcome says whether a model is there, or loading
        self._refresh_buttons()

    def _refresh_buttons(self) -> None:
        busy = self.conversation.busy
        has_model = self.session.model_info is not None
        has_turns = any(t.role == "user" for t in self.conversation.turns)
        self.stop_button.setEnabled(busy)
        self.send_button.setEnabled(not busy and has_model)
        self.regenerate_button.setEnabled(not busy and has_model and self.conversation.last_message is not None
                                          and has_turns)
        self.edit_button.setEnabled(not busy and has_model and has_turns)
        self.copy_button.setEnabled(bool(self.conversation.turns))

    def _on_conversation(self, what: str) -> None:
        if what == "token":
            record = self.conversation.tokens[-1]
            self._append(token_html(record, self.colour.currentText(), self.text_colour()))
            self._show_rate()
        elif what == "turns":
            self._render_new_turns()
            self._refresh_buttons()
        elif what in ("reset", "rewound"):
            self.rerender()
            self._refresh_buttons()
        elif what == "returned":
            self.entry.append_text(self.conversation.returned_text)
        elif what == "selected_position":
            self._show_details(self.conversation.selected_position)

    def _show_rate(self) -> None:
        replies = [t for t in self.conversation.turns if t.role == "assistant" and t.tokens]
        if not replies:
            self.rate.setText("")
            return
        last = replies[-1]
        self.rate.setText(f"{len(last.tokens)} tokens · {last.tokens_per_second:.1f} tokens/s")

    def _append(self, fragment: str) -> None:
        cursor = self.transcript.textCursor()
        cursor.movePosition(QTextCursor.End)
        cursor.insertHtml(fragment)
        self.transcript.setTextCursor(cursor)
        self.transcript.ensureCursorVisible()

    def _render_new_turns(self) -> None:
        turns = self.conversation.turns
        if self._rendered_turns == 0 and turns:
            self.rerender()  # replaces the welcome text
            return
        # A turn header is written when the turn starts; the assistant's tokens follow as they stream.
        while self._rendered_turns < len(turns):
            turn = turns[self._rendered_turns]
            self._append(self._turn_header(turn))
            if turn.role == "user":
                self._append(html.escape(turn.text).replace("\n", "<br>"))
            self._rendered_turns += 1
        last = turns[-1] if turns else None
        if last is not None and last.finish_reason and len(turns) - 1 not in self._marked_turns:
            self._append(self._marker(last))
            self._marked_turns.add(len(turns) - 1)
        self._show_rate()

    @staticmethod
    def _marker(turn) -> str:
        """How the end of a reply is shown: nothing for a natural end, else why it ended."""
        note = finish_note(turn)
        if turn.finish_reason == "cancelled":
            note = "stopped"
        return f' <i style="{MARKER_STYLE}">[{html.escape(note)}]</i>' if note else ""

    @staticmethod
    def _turn_header(turn) -> str:
        return f'<br><b>{"you" if turn.role == "user" else "model"}:</b> '

    def welcome_html(self) -> str:
        """What the empty chat says: what to do next."""
        if self.session.model_info is None:
            loading = self.session.models.loading_spec if self.session.models.loading_request is not None else None
            what = (f"Loading <b>{html.escape(loading)}</b>…" if loading else
                    "No model is loaded: choose one in the <b>Model</b> panel, or <b>File › Open model folder…</b>")
            return f"<p>{what}</p>"
        examples = "".join(f'<li><a href="example:{i}">{html.escape(text)}</a></li>' for i, text in enumerate(EXAMPLES))
        return (f"<p><b>{html.escape(self.session.model_info.name)}</b> is ready. Type a message below "
                "(Enter sends, Shift+Enter starts a new line), or click an example:</p>"
                f"<ul>{examples}</ul><p style=\"{MARKER_STYLE}\">Each token of the reply is coloured by how sure the "
                "model was. Hover a token to preview its alternatives; click it to pin it. The panels on the "
                "right (feature meters, logit lens, temperature) follow the pinned token.</p>")

    def rerender(self) -> None:
        """Redraw the whole transcript (colour mode changed, reset, rewound)."""
        mode, text_colour = self.colour.currentText(), self.text_colour()
        turns = self.conversation.turns
        if not turns:
            self.transcript.setHtml(self.welcome_html())
        else:
            parts = []
            for turn in turns:
                parts.append(self._turn_header(turn))
                if turn.role == "user":
                    parts.append(html.escape(turn.text).replace("\n", "<br>"))
                else:
                    parts.extend(token_html(r, mode, text_colour) for r in turn.tokens)
                    if turn.finish_reason:
                        parts.append(self._marker(turn))
            self.transcript.setHtml("".join(parts))
        self._rendered_turns = len(turns)
        self._marked_turns = {i for i, t in enumerate(turns) if t.finish_reason}
        self._show_rate()

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
        # A hover previews a token; when it ends (empty url) the pinned token is selected again.
        self.conversation.preview(self._position(url))

    def _clicked(self, url: QUrl) -> None:
        text = url.toString()
        if text.startswith("example:") and text[8:].isdigit() and int(text[8:]) < len(EXAMPLES):
            self.entry.setText(EXAMPLES[int(text[8:])])
            self.send()
            return
        position = self._position(url)
        if position is not None:
            self.conversation.pin(position)

    def _show_details(self, position: int | None) -> None:
        mark_token(self.transcript, position)
        record = self.conversation.token_at(position)
        if record is None:
            return
        pinned = " (pinned: click it again to unpin)" if position == self.conversation.pinned_position else ""
        alternatives = ", ".join(f"{text!r} {prob:.1%}" for _, prob, text in record.top_k[:8])
        self.details.setText(
            f"position {record.position}{pinned}: {record.text!r}  p={record.prob:.1%}  "
            f"entropy {record.raw_entropy:.2f} bits"
            f"\nalternatives: {alternatives}"
        )


def _spin(low: float, high: float, step: float, value: float, tooltip: str) -> QDoubleSpinBox:
    box = QDoubleSpinBox(minimum=low, maximum=high, singleStep=step, decimals=2)
    box.setValue(value)
    box.setToolTip(tooltip)
    return box


def _button(text: str, tooltip: str, action) -> QPushButton:
    button = QPushButton(text)
    button.setToolTip(tooltip)
    button.clicked.connect(action)
    return button
