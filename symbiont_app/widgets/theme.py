"""One theme for Qt and pyqtgraph: plots take the window's colours and follow light/dark changes.

pyqtgraph draws with its own configuration (black background, grey axes by default),
not Qt's palette, so in a light window its plots were black boxes. :func:`apply_theme`
sets pyqtgraph's defaults from the application palette before any plot is made, and
:class:`ThemeWatcher` re-colours every existing plot when the palette changes (macOS
Dark Mode, a Windows/GNOME colour-scheme switch: Qt changes the palette and tells us).

``scheme`` ``"system"`` follows the system's setting; ``"light"`` / ``"dark"`` force one
(the screenshots take both). Where the platform cannot switch (Linux without a desktop
theme, the offscreen platform), a forced scheme uses the Fusion style with a palette
built here: Fusion is the one Qt style whose colours come from the palette alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyqtgraph as pg
from PySide6.QtCore import QEvent, QObject, Qt
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication

SCHEMES = ("system", "light", "dark")

# Categorical colours that read on white and on near-black alike (matplotlib's tab10, lightened
# a little for dark backgrounds by :func:`series_colour`).
SERIES = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"]


@dataclass(frozen=True)
class PlotColours:
    background: QColor
    """The plots' background: the palette's Base (where text boxes and tables are drawn)."""
    foreground: QColor
    """Axes, tick labels, titles and legends: the palette's Text."""
    dark: bool
    """True when the background is dark (lighter series colours, white grid)."""


def is_dark(palette: QPalette) -> bool:
    return palette.color(QPalette.ColorRole.Window).lightness() < 128


def plot_colours(palette: QPalette | None = None) -> PlotColours:
    if palette is None:
        app = QApplication.instance()
        palette = app.palette() if app is not None else QPalette()
    return PlotColours(palette.color(QPalette.ColorRole.Base), palette.color(QPalette.ColorRole.Text), is_dark(palette))


def series_colour(index: int, dark: bool | None = None) -> str:
    """The ``index``-th categorical colour, lightened on a dark background."""
    colour = QColor(SERIES[index % len(SERIES)])
    if dark is None:
        dark = plot_colours().dark
    return colour.lighter(135).name() if dark else colour.name()


def dark_palette() -> QPalette:
    """A dark palette for the Fusion style (used only where the platform has no dark scheme)."""
    p = QPalette()
    role, group = QPalette.ColorRole, QPalette.ColorGroup
    colours = {
        role.Window: "#2b2b2b", role.WindowText: "#e6e6e6", role.Base: "#1e1e1e", role.AlternateBase: "#2a2a2a",
        role.ToolTipBase: "#3a3a3a", role.ToolTipText: "#e6e6e6", role.PlaceholderText: "#8a8a8a",
        role.Text: "#e6e6e6", role.Button: "#353535", role.ButtonText: "#e6e6e6", role.BrightText: "#ff6b6b",
        role.Link: "#6cb4ff", role.Highlight: "#2f65ca", role.HighlightedText: "#ffffff",
        role.Light: "#474747", role.Midlight: "#3c3c3c", role.Mid: "#2f2f2f", role.Dark: "#1a1a1a", role.Shadow: "#000000",
    }
    for r, c in colours.items():
        p.setColor(r, QColor(c))
    for r in (role.Text, role.WindowText, role.ButtonText):
        p.setColor(group.Disabled, r, QColor("#7a7a7a"))
    return p


def set_scheme(app: QApplication, scheme: str = "system") -> None:
    """Ask Qt for the light or dark scheme (``system``: whatever the system says) and re-colour the plots."""
    if scheme not in SCHEMES:
        raise ValueError(f"colour scheme {scheme!r}: choose one of {', '.join(SCHEMES)}")
    hints = app.styleHints()
    if getattr(app, "_symbiont_original_style", None):  # undo an earlier forced scheme first
        app.setStyle(app._symbiont_original_style)
        app.setPalette(app.style().standardPalette())
        app._symbiont_original_style = None
    if scheme == "system":
        hints.unsetColorScheme()
    else:
        hints.setColorScheme(Qt.ColorScheme.Dark if scheme == "dark" else Qt.ColorScheme.Light)
        if is_dark(app.palette()) != (scheme == "dark"):  # the platform did not follow: do it ourselves
            app._symbiont_original_style = app.style().name()
            app.setStyle("Fusion")
            app.setPalette(dark_palette() if scheme == "dark" else app.style().standardPalette())
    apply_theme(app)


def apply_theme(app: QApplication | None = None) -> PlotColours:
    """pyqtgraph's defaults from the palette (for plots made from now on) and every existing plot re-coloured."""
    app = app or QApplication.instance()
    colours = plot_colours(app.palette() if app is not None else None)
    # (antialiasing stays off: the panels repaint with every token, and it made each paint slower)
    pg.setConfigOptions(background=colours.background, foreground=colours.foreground)
    if app is not None:
        for widget in app.allWidgets():
            if isinstance(widget, pg.GraphicsView):
                style_plot_widget(widget, colours)
        if not hasattr(app, "_symbiont_theme_watcher"):
            app._symbiont_theme_watcher = ThemeWatcher(app)
    return colours


def style_plot_widget(view: pg.GraphicsView, colours: PlotColours | None = None) -> None:
    """Background, axes, titles and legends of one plot widget in ``colours`` (default: the palette's)."""
    colours = colours or plot_colours()
    view.setBackground(colours.background)
    fg = colours.foreground
    scene = view.scene()
    if scene is None:
        return
    for item in scene.items():
        if isinstance(item, pg.AxisItem):
            item.setPen(fg)
            item.setTextPen(fg)  # also the axis label's colour
        elif isinstance(item, pg.LabelItem):
            item.setAttr("color", fg.name())
            item.setText(item.text)
        elif isinstance(item, pg.LegendItem):
            item.setLabelTextColor(fg)


class ThemeWatcher(QObject):
    """Re-colours the plots when the application palette changes (the system went dark or light)."""

    def __init__(self, app: QApplication):
        super().__init__(app)
        self.app = app
        self._busy = False
        app.installEventFilter(self)

    def eventFilter(self, watched, event) -> bool:
        if watched is self.app and event.type() == QEvent.Type.ApplicationPaletteChange and not self._busy:
            self._busy = True
            try:
                apply_theme(self.app)
            finally:
                self._busy = False
        return False
