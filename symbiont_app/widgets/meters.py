"""Live feature meters: the focused token's strongest SAE latents as bars, watched latents over
the conversation, and the selected latent's record with watch / clamp / ablate buttons."""

from __future__ import annotations

import html

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QAbstractItemView, QComboBox, QDoubleSpinBox, QHBoxLayout, QLabel, QPushButton, QSpinBox, QSplitter,
    QTableWidget, QTableWidgetItem, QTextBrowser, QVBoxLayout, QWidget,
)

from ..session.dashboard import clamped_latents, describe_intervention, label_source
from ..session.meters import MetersModel
from ..session.steering import SteeringModel
from .theme import series_colour
from .throttle import Coalescer

BAR_COLOUR = "#4c72b0"
CLAMPED_COLOUR = "#ff7f0e"
ABLATED_COLOUR = "#d62728"


def record_html(record, label: str = "") -> str:
    """A latent's record (``LatentRecord``) as HTML, the focus token of each context in bold."""
    if record is None:
        return "<i>click a latent to see its record</i>"
    title = html.escape(record.label or label or "(no label)")
    source = label_source(record)
    if source:
        title += f" <i>({html.escape(source)})</i>"
    if not record.has_record:
        return f"<b>latent {record.latent}</b>: {title}<br><i>this SAE has no feature records</i>"
    rows = "".join(
        f"<tr><td align='right'>{c.value:.2f}</td><td>{html.escape(c.before[-60:])}"
        # dark text on the light highlight: the palette's text colour is light in Dark Mode
        f"<b style='background:#ffe08a;color:black'>{html.escape(c.focus)}</b>{html.escape(c.after[:40])}</td></tr>"
        for c in record.contexts)
    promoted = ", ".join(f"{html.escape(repr(t))} {v:+.2f}" for t, v in record.promoted)
    suppressed = ", ".join(f"{html.escape(repr(t))} {v:+.2f}" for t, v in record.suppressed)
    return (f"<b>latent {record.latent}</b>: {title}<br>fires on {record.frequency:.3%} of tokens, max "
            f"{record.max_activation:.2f}, mean when active {record.mean_activation:.2f}"
            f"<br><b>top contexts</b><table>{rows}</table><b>promotes</b> {promoted}<br><b>suppresses</b> {suppressed}")


class LatentActions(QWidget):
    """Latent number, watch, clamp (value, mode) and ablate: acts on ``model.selected``."""

    def __init__(self, model: MetersModel, parent=None):
        super().__init__(parent)
        self.model = model
        self.latent = QSpinBox()
        self.latent.setRange(0, 0)
        self.show_button = QPushButton("Show")
        self.watch_button = QPushButton("Watch")
        self.value = QDoubleSpinBox()
        self.value.setRange(-1000, 1000)
        self.value.setDecimals(2)
        self.value.setValue(5.0)
        self.mode = QComboBox()
        self.mode.addItems(["max_multiple", "absolute"])
        self.clamp_button = QPushButton("Clamp")
        self.ablate_button = QPushButton("Ablate")
        self.dashboard_button = QPushButton("Dashboard")
        self.dashboard_button.setToolTip("Open this latent in the Feature dashboard (density, contexts, logit effects, label)")
        self.dashboard_button.clicked.connect(self._open_dashboard)
        self.clamp_button.setToolTip("Pin this latent to the value from the next token on (Steering panel lists it)")
        self.ablate_button.setToolTip("Clamp this latent to 0 from the next token on")
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        for w in (QLabel("latent"), self.latent, self.show_button, self.watch_button, QLabel("clamp to"), self.value,
                  self.mode, self.clamp_button, self.ablate_button, self.dashboard_button):
            row.addWidget(w)
        row.addStretch(1)
        self.show_button.clicked.connect(lambda: model.select(self.latent.value()))
        self.watch_button.clicked.connect(self._toggle_watch)
        self.clamp_button.clicked.connect(lambda: model.clamp(self.latent.value(), self.value.value(), self.mode.currentText()))
        self.ablate_button.clicked.connect(lambda: model.ablate(self.latent.value()))

    def refresh(self) -> None:
        info = self.model.sae.info
        self.setEnabled(info is not None)
        self.latent.setRange(0, max(0, (info.d_sae if info else 1) - 1))
        if self.model.selected is not None:
            self.latent.setValue(self.model.selected)
        self.watch_button.setText("Unwatch" if self.latent.value() in self.model.watched else "Watch")

    def _open_dashboard(self) -> None:
        from PySide6.QtWidgets import QDockWidget

        self.model.select(self.latent.value())
        dock = self.window().findChild(QDockWidget, "dock-dashboard")
        if dock is not None:
            dock.show()
            dock.raise_()

    def _toggle_watch(self) -> None:
        latent = self.latent.value()
        self.model.watch(latent, latent not in self.model.watched)


class MetersPanel(QWidget):
    def __init__(self, session, parent=None):
        super().__init__(parent)
        self.model = MetersModel.of(session)
        self.header = QLabel("load an SAE (SAE panel) to see its latents as the model talks")
        self.header.setWordWrap(True)
        # Bars of the focused token's top latents (horizontal, strongest on top); created once.
        self.steering = SteeringModel.of(session)  # its list says which latents are clamped / ablated
        self.bars_plot = pg.PlotWidget(title="top latents at the focused token")
        self.bars_plot.setLabel("bottom", "latent activation (SAE units); bar orange: clamped, red: ablated")
        self.bars_plot.getAxis("bottom").enableAutoSIPrefix(False)
        self.bars_plot.invertY(True)
        self.bars = pg.BarGraphItem(x0=np.zeros(0), y=np.zeros(0), height=0.7, width=np.zeros(0), brush=BAR_COLOUR)
        self.bars_plot.addItem(self.bars)
        self.table = QTableWidget(0, 4)
        self.table.setHorizontalHeaderLabels(["latent", "value", "label", "intervention"])
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.cellClicked.connect(self._row_clicked)
        # Watched latents over the conversation: one curve per latent, kept while it is watched.
        self.strip = pg.PlotWidget(title="watched latents over the generated tokens")
        self.strip.setLabel("bottom", "token position in the conversation")
        self.strip.setLabel("left", "latent activation (SAE units)")
        for axis in ("bottom", "left"):
            self.strip.getAxis(axis).enableAutoSIPrefix(False)
        self.strip.setXRange(0, 16)  # until the first reply: a token range, not -400..400
        self._strip_fitted = False
        self.strip.addLegend(offset=(5, 5))
        self.curves: dict[int, pg.PlotDataItem] = {}
        self.lone_points: dict[int, pg.ScatterPlotItem] = {}
        """Values with no neighbour (read while the latent was among a token's top, before it was
        watched): a line cannot show a single point, so they are drawn as dots."""
        self.record = QTextBrowser()
        self.actions = LatentActions(self.model)
        top = QSplitter(Qt.Horizontal)
        top.addWidget(self.bars_plot)
        top.addWidget(self.table)
        bottom = QSplitter(Qt.Horizontal)
        bottom.addWidget(self.strip)
        bottom.addWidget(self.record)
        layout = QVBoxLayout(self)
        layout.addWidget(self.header)
        layout.addWidget(top, 3)
        layout.addWidget(self.actions)
        layout.addWidget(bottom, 3)
        # A reading arrives with every token; the bars, table and strip repaint at most ~8 times a
        # second (painting them costs ~15 ms here, per token it pushed event-loop gaps past 50 ms).
        self._ticks: list | None = None
        self.reading_redraw = Coalescer(self._redraw_reading_and_watched, 120, self, spaced=True)
        self._unsubscribe = [self.model.subscribe(self._on_model), self.model.sae.subscribe(self._on_sae),
                             self.steering.subscribe(self._on_steering)]
        self._redraw_reading()
        self._redraw_watched()
        self._on_selected()

    def _on_model(self, what: str) -> None:
        if what == "reading":
            self.reading_redraw.request()
        elif what == "watched":
            self._redraw_watched()
            self.actions.refresh()
        elif what == "selected":
            self._on_selected()

    def _on_steering(self, what: str) -> None:
        if what == "items":
            self.reading_redraw.request()

    def _on_sae(self, what: str) -> None:
        if what == "labels":
            self.reading_redraw.request()
        if what == "sae":
            self.actions.refresh()
            self._redraw_reading()

    def flush(self) -> None:
        """Draw a pending reading now (before a screenshot, in tests)."""
        self.reading_redraw.flush()

    def _redraw_reading_and_watched(self) -> None:
        self._redraw_reading()
        self._redraw_watched()

    def _redraw_reading(self) -> None:
        top = self.model.current()
        values = np.array([v for _, v, _ in top], dtype=np.float64)
        y = np.arange(len(top), dtype=np.float64)
        clamps = clamped_latents(self.model.session)
        states = [describe_intervention(clamps.get(latent)) for latent, _, _ in top]
        brushes = [ABLATED_COLOUR if s.startswith("ablated") else CLAMPED_COLOUR if s else BAR_COLOUR for s in states]
        self.bars.setOpts(x0=np.zeros(len(top)), y=y, width=values, height=0.7, brushes=brushes)
        ticks = [[(i, f"{'⊘ ' if s.startswith('ablated') else '⇥ ' if s else ''}{latent} {label[:22]}")
                  for i, ((latent, _, label), s) in enumerate(zip(top, states))]]
        if ticks != self._ticks:  # re-laying out the axis is a large part of a repaint
            self._ticks = ticks
            self.bars_plot.getAxis("left").setTicks(ticks)
        self.table.setRowCount(len(top))
        for row, (latent, value, label) in enumerate(top):
            for col, text in enumerate((str(latent), f"{value:.3f}", label, states[row])):
                item = self.table.item(row, col)
                if item is None:
                    self.table.setItem(row, col, QTableWidgetItem(text))
                elif item.text() != text:
                    item.setText(text)
        position = self.model.focus_position()
        info = self.model.sae.info
        if info is None:
            self.header.setText("load an SAE (SAE panel) to see its latents as the model talks")
        elif position is None:
            self.header.setText(f"{info.sae_id}: send a message to see its latents")
        else:
            record = self.model.session.conversation.token_at(position)
            self.header.setText(f"{info.sae_id} at {info.hook_point}: token {record.text!r} (position {position}), "
                                f"{self.model.current_l0()} active latents; click a row for its record")

    def _redraw_watched(self) -> None:
        positions, values = self.model.watched_history()
        watched = self.model.watched
        for latent in [k for k in self.curves if k not in watched]:
            self.strip.removeItem(self.curves.pop(latent))
            if latent in self.lone_points:
                self.strip.removeItem(self.lone_points.pop(latent))
        for i, latent in enumerate(watched):
            if latent not in self.curves:
                colour = series_colour(i)
                label = self.model.sae.label(latent)
                # No point symbols: one per generated token made every repaint slower as the chat grew.
                self.curves[latent] = self.strip.plot([], [], pen=pg.mkPen(colour, width=2),
                                                      name=f"{latent} {label[:18]}", connect="finite")
            xs, ys = positions.astype(np.float64), values[i].astype(np.float64)
            self.curves[latent].setData(xs, ys)
            finite = np.isfinite(ys)
            before = np.concatenate([[False], finite[:-1]])
            after = np.concatenate([finite[1:], [False]])
            lone = finite & ~before & ~after  # [T]
            dots = self.lone_points.get(latent)
            if dots is None:
                dots = self.lone_points[latent] = pg.ScatterPlotItem(size=6, pen=None, brush=series_colour(i))
                self.strip.addItem(dots)
            dots.setData(xs[lone], ys[lone])
        if len(positions) and watched and not self._strip_fitted:  # data at last: follow it from now on
            self._strip_fitted = True
            self.strip.enableAutoRange(x=True, y=True)
            self.strip.getViewBox().updateAutoRange()  # now, not at the next paint of a hidden dock

    def _on_selected(self) -> None:
        self.actions.refresh()
        record = self.model.sae.record
        if record is not None and record.latent == self.model.selected:
            self.record.setHtml(record_html(record, self.model.sae.label(record.latent)))
        elif self.model.selected is not None:
            self.record.setHtml(f"latent {self.model.selected}: loading its record…")
        else:
            self.record.setHtml(record_html(None))

    def _row_clicked(self, row: int, _column: int) -> None:
        item = self.table.item(row, 0)
        if item is not None:
            self.model.select(int(item.text()))
