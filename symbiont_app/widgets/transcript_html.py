"""How the chat writes tokens: coloured links (hover previews, click pins) and the outline
of the selected token; platform-native key names for hints."""

from __future__ import annotations

import html

from PySide6.QtGui import QColor, QKeySequence, QTextCharFormat, QTextCursor
from PySide6.QtWidgets import QTextBrowser, QTextEdit

ENTROPY_SCALE_BITS = 8.0
"""Entropy that gets the fullest colour (a 256-way even choice)."""
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


def mark_token(transcript: QTextBrowser, position: int | None) -> None:
    """Outline the selected token in the transcript (an extra selection: the HTML stays as is)."""
    selections = []
    href = f"tok:{position}"
    block = transcript.document().begin()
    while position is not None and block.isValid() and not selections:
        it = block.begin()
        while not it.atEnd():
            fragment = it.fragment()
            if fragment.charFormat().anchorHref() == href:
                cursor = QTextCursor(transcript.document())
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
    transcript.setExtraSelections(selections)
