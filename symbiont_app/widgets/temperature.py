"""Temperature / entropy: per-token entropy and probability over the conversation, and the
next-token distribution re-drawn live as the temperature / top-p / min-p sliders move."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QGridLayout, QHBoxLayout, QLabel, QSlider, QVBoxLayout, QWidget

from .throttle import Coalescer


class TemperaturePanel(QWidget):
    def __init__(self, session, parent=None):
        super().__init__(parent)
        self.view = session.temperature
        self.conversation = session.conversation
        # The curves and bars are created once; updates only call setData / setOpts.
        self.series_plot = pg.PlotWidget(title="per token: entropy (bits) and chosen-token probability")
        self.series_plot.addLegend(offset=(5, 5))
        self.series_plot.setLabel("bottom", "position")
        self.entropy_curve = self.series_plot.plot([], [], pen=pg.mkPen("#d62728", width=2), name="entropy (bits)")
        self.prob_curve = self.series_plot.plot([], [], pen=pg.mkPen("#1f77b4", width=2), name="p(chosen)")
        self.selected_line = pg.InfiniteLine(angle=90, movable=False, pen=pg.mkPen("#888", style=Qt.DashLine))
        self.series_plot.addItem(self.selected_line)
        self.bars_plot = pg.PlotWidget(title="next-token distribution at the chosen settings")
        self.bars_plot.setLabel("left", "probability")
        self.bars_plot.setYRange(0, 1)
        self.bars = pg.BarGraphItem(x=np.arange(0), height=np.zeros(0), width=0.4, brush="#2ca02c", name="now")
        self.raw_bars = pg.BarGraphItem(x=np.arange(0), height=np.zeros(0), width=0.4, brush="#bbbbbb", name="T=1")
        self.bars_plot.addItem(self.raw_bars)
        self.bars_plot.addItem(self.bars)
        self.temp = _slider(0, 300, int(round(self.view.temp * 100)))
        self.top_p = _slider(0, 100, int(round(self.view.top_p * 100)))
        self.min_p = _slider(0, 100, int(round(self.view.min_p * 100)))
        self.temp_label, self.top_p_label, self.min_p_label = QLabel(), QLabel(), QLabel()
        self.summary = QLabel("")
        self.summary.setWordWrap(True)
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
        layout = QHBoxLayout(self)
        layout.addWidget(self.series_plot, 1)
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

    def _redraw_distribution(self) -> None:
        d = self.view.distribution
        if d is None:
            self.bars.setOpts(x=np.arange(0), height=np.zeros(0))
            self.raw_bars.setOpts(x=np.arange(0), height=np.zeros(0))
            self.summary.setText(self.view.missing or "")
            return
        x = np.arange(len(d.labels), dtype=np.float64)
        self.raw_bars.setOpts(x=x - 0.2, height=d.raw_probs)
        self.bars.setOpts(x=x + 0.2, height=d.probs)
        self.bars_plot.getAxis("bottom").setTicks([[(i, _short(t)) for i, t in enumerate(d.labels)]])
        self.selected_line.setValue(d.position)
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
