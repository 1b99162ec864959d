"""Temperature / entropy: per-token entropy and probability over the conversation, and the
next-token distribution re-drawn live as the temperature / top-p / min-p sliders move."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QGridLayout, QHBoxLayout, QLabel, QPushButton, QSlider, QVBoxLayout, QWidget

from .theme import series_colour
from .throttle import Coalescer


class TemperaturePanel(QWidget):
    def __init__(self, session, parent=None):
        super().__init__(parent)
        self.view = session.temperature
        self.conversation = session.conversation
        # The curves and bars are created once; updates only call setData / setOpts.
        # Entropy (bits, unbounded) and p(chosen) (0..1) on separate plots with a shared
        # position axis: on one axis the probability was flattened against the bits.
        self.entropy_plot = pg.PlotWidget(title="entropy of each next-token distribution (temperature 1)")
        self.entropy_plot.setLabel("left", "entropy", units="bits")
        self.entropy_plot.getAxis("left").enableAutoSIPrefix(False)
        self.entropy_curve = self.entropy_plot.plot([], [], pen=pg.mkPen(series_colour(1), width=2), name="entropy (bits)")
        self.prob_plot = pg.PlotWidget(title="probability of the token that was chosen")
        self.prob_plot.setLabel("left", "p(chosen)")
        self.prob_plot.setLabel("bottom", "token position in the conversation")
        self.prob_plot.setYRange(0, 1, padding=0.02)
        self.prob_plot.getViewBox().setLimits(yMin=-0.05, yMax=1.05)
        self.prob_plot.setXLink(self.entropy_plot)
        for plot in (self.entropy_plot, self.prob_plot):
            plot.getAxis("bottom").enableAutoSIPrefix(False)  # positions are whole tokens, never "×0.001"
        self._fitted = False
        """The position axis follows the data (set once the first tokens are drawn)."""
        self.prob_curve = self.prob_plot.plot([], [], pen=pg.mkPen(series_colour(0), width=2), name="p(chosen)")
        self.selected_lines = []
        for plot in (self.entropy_plot, self.prob_plot):
            line = pg.InfiniteLine(angle=90, movable=False, pen=pg.mkPen("#888", style=Qt.DashLine))
            line.hide()
            plot.addItem(line)
            self.selected_lines.append(line)
        self.bars_plot = pg.PlotWidget(title="next-token distribution at the focused position")
        self.bars_plot.setLabel("left", "probability")
        self.bars_plot.setLabel("bottom", "candidate next token (most likely first; · is a space)")
        self.bars_plot.setYRange(0, 1)
        self.bars_plot.addLegend(offset=(-5, 5))
        self.bars = pg.BarGraphItem(x=np.arange(0), height=np.zeros(0), width=0.4, brush=series_colour(2),
                                    name="these settings")
        self.raw_bars = pg.BarGraphItem(x=np.arange(0), height=np.zeros(0), width=0.4, brush="#9a9a9a",
                                        name="temperature 1, no filters")
        self.bars_plot.addItem(self.raw_bars)
        self.bars_plot.addItem(self.bars)
        self.temp = _slider(0, 300, int(round(self.view.temp * 100)))
        self.top_p = _slider(0, 100, int(round(self.view.top_p * 100)))
        self.min_p = _slider(0, 100, int(round(self.view.min_p * 100)))
        self.temp_label, self.top_p_label, self.min_p_label = QLabel(), QLabel(), QLabel()
        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        self.apply_button = QPushButton("Apply these settings to the chat")
        self.apply_button.setToolTip("The chat samples its next replies at this temperature, top-p and min-p "
                                     "(its top-k and max tokens stay)")
        self.apply_button.clicked.connect(self.apply_to_chat)
        self.session = session
        for slider in (self.temp, self.top_p, self.min_p):
            slider.valueChanged.connect(self._sliders_moved)
        grid = QGridLayout()
        for row, (name, slider, label) in enumerate((("temperature", self.temp, self.temp_label),
                                                    ("top-p", self.top_p, self.top_p_label),
                                                    ("min-p", self.min_p, self.min_p_label))):
            grid.addWidget(QLabel(name), row, 0)
            grid.addWidget(slider, row, 1)
            grid.addWidget(label, row, 2)
        right = QVBoxLayout()
        right.addWidget(self.bars_plot, 1)
        right.addLayout(grid)
        right.addWidget(self.summary)
        right.addWidget(self.apply_button)
        left = QVBoxLayout()
        left.addWidget(self.entropy_plot, 1)
        left.addWidget(self.prob_plot, 1)
        layout = QHBoxLayout(self)
        layout.addLayout(left, 1)
        layout.addLayout(right, 1)
        # While tokens stream, redraw at most ~8 times a second (see widgets/throttle.py).
        self.series_redraw = Coalescer(self._redraw_series, 120, self, spaced=True)
        self.distribution_redraw = Coalescer(self._redraw_distribution, 120, self, spaced=True)
        self._unsubscribe = self.view.subscribe(self._on_view)
        self._update_labels()
        self._redraw_series()
        self._redraw_distribution()

    def _sliders_moved(self) -> None:
        self._update_labels()
        self.view.set_params(self.temp.value() / 100, self.top_p.value() / 100, self.min_p.value() / 100)
        self.distribution_redraw.flush()  # the user moved a slider: redraw now, not on the next tick

    def apply_to_chat(self) -> None:
        self.view.apply_to_chat(self.session.settings)

    def _update_labels(self) -> None:
        self.temp_label.setText(f"{self.temp.value() / 100:.2f}" + (" (greedy)" if self.temp.value() == 0 else ""))
        self.top_p_label.setText("off" if self.top_p.value() in (0, 100) else f"{self.top_p.value() / 100:.2f}")
        self.min_p_label.setText("off" if self.min_p.value() == 0 else f"{self.min_p.value() / 100:.2f}")

    def _on_view(self, what: str) -> None:
        if what == "series":
            self.series_redraw.request()
        elif what == "distribution":
            self.distribution_redraw.request()

    def flush(self) -> None:
        """Draw pending updates now (tests, screenshots)."""
        self.series_redraw.flush()
        self.distribution_redraw.flush()

    def _redraw_series(self) -> None:
        positions, entropy, prob = _with_gaps(*self.view.series())
        self.entropy_curve.setData(positions, entropy, connect="finite")
        self.prob_curve.setData(positions, prob, connect="finite")
        if len(positions) and not self._fitted:  # the first tokens: follow the data from now on
            self._fitted = True
            self.entropy_plot.enableAutoRange(x=True, y=True)
            self.entropy_plot.getViewBox().updateAutoRange()  # now, not at the next paint of a hidden dock
        elif not len(positions):
            self._fitted = False
            self.prob_plot.setXRange(0, 16)  # empty: a plausible token range, not -400..400

    def _redraw_distribution(self) -> None:
        d = self.view.distribution
        if d is None:
            self.bars.setOpts(x=np.arange(0), height=np.zeros(0))
            self.raw_bars.setOpts(x=np.arange(0), height=np.zeros(0))
            self.summary.setText(self.view.missing or "")
            for line in self.selected_lines:
                line.hide()
            return
        x = np.arange(len(d.labels), dtype=np.float64)
        self.raw_bars.setOpts(x=x - 0.2, height=d.raw_probs)
        self.bars.setOpts(x=x + 0.2, height=d.probs)
        self.bars_plot.getAxis("bottom").setTicks([[(i, _short(t)) for i, t in enumerate(d.labels)]])
        for line in self.selected_lines:
            line.setValue(d.position)
            line.show()
        self.summary.setText(
            f"position {d.position}: entropy {d.entropy:.2f} bits at these settings → effective number of "
            f"choices 2^H = {d.effective_choices:.1f}; {d.kept} tokens left after the filters "
            f"(grey: temperature 1, no filters; green: these settings)")


def _short(text: str) -> str:
    shown = repr(text)[1:-1].replace(" ", "·")  # spaces visible: ' the' and 'the' are different tokens
    return shown if len(shown) <= 6 else shown[:5] + "…"


def _with_gaps(positions: np.ndarray, *ys: np.ndarray):
    """Insert a NaN where positions jump (a user turn in between), so the curves break there."""
    breaks = np.nonzero(np.diff(positions) > 1)[0] + 1
    if len(breaks) == 0:
        return (positions, *ys)
    return (np.insert(positions, breaks, np.nan), *(np.insert(y, breaks, np.nan) for y in ys))


def _slider(low: int, high: int, value: int) -> QSlider:
    slider = QSlider(Qt.Horizontal)
    slider.setRange(low, high)
    slider.setValue(value)
    return slider
