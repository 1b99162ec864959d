"""Lens panel: logit-lens heatmap (layers × positions, top token in each cell, colour = its
probability) of the conversation, the lens column of the chat's selected token, and an
activation-patching heatmap (layers × positions, patched logit difference)."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QFont
from PySide6.QtWidgets import (
    QAbstractItemView, QCheckBox, QComboBox, QGridLayout, QHBoxLayout, QLabel, QLineEdit, QPushButton, QSpinBox,
    QSplitter, QTableWidget, QTableWidgetItem, QTabWidget, QVBoxLayout, QWidget,
)

from ..session.lens import LensModel

def _short(text: str, n: int = 6) -> str:
    return repr(text)[1:-1][:n]


class CellTexts(pg.GraphicsObject):
    """Every cell's text in one item, painted in device pixels (readable at any zoom).

    One item instead of a ``TextItem`` per cell: a 30-layer × 32-position lens would make
    960 graphics items, and creating them stalled the event loop for a second or more.
    """

    def __init__(self):
        super().__init__()
        self.cells: list[tuple[float, float, str, bool]] = []
        self.bounds = QRectF()
        self.font = QFont()
        self.font.setPointSize(7)

    def set_cells(self, cells: list[tuple[float, float, str, bool]], n_rows: int, n_cols: int) -> None:
        """``(x, y, text, dark)`` per cell centre, in view coordinates."""
        self.prepareGeometryChange()
        self.cells = cells
        self.bounds = QRectF(0, 0, n_cols, n_rows)
        self.update()

    def boundingRect(self) -> QRectF:
        return self.bounds

    def paint(self, painter, *_args) -> None:
        transform = painter.transform()
        cell_w, cell_h = abs(transform.m11()), abs(transform.m22())
        if not self.cells or cell_w < 12 or cell_h < 8:
            return  # too small to read: colour only
        painter.save()
        painter.resetTransform()
        painter.setFont(self.font)
        dark, light = QColor("black"), QColor("white")
        for x, y, text, is_dark in self.cells:
            centre = transform.map(QPointF(x, y))
            painter.setPen(dark if is_dark else light)
            painter.drawText(QRectF(centre.x() - cell_w / 2, centre.y() - cell_h / 2, cell_w, cell_h),
                             Qt.AlignCenter, text)
        painter.restore()


class Heatmap(QWidget):
    """An ImageItem over a grid with a colour bar and optional text per cell; all items made once, updated in place."""

    def __init__(self, title: str, colormap: str, dark_text_always: bool = False, *, row_label: str = "",
                 column_label: str = "", colour_label: str = "", parent=None):
        super().__init__(parent)
        self.dark_text_always = dark_text_always
        self.title, self.colormap, self.colour_label = title, colormap, colour_label
        self.row_label, self.column_label = row_label, column_label
        self.plot = pg.PlotWidget(title=title)
        self.plot.invertY(True)
        self.plot.setMenuEnabled(False)
        self.plot.setLabel("left", row_label)
        self.plot.setLabel("bottom", column_label)
        self.plot.getAxis("bottom").setHeight(52)  # two-line column ticks (position, token) above the axis title
        for axis in ("left", "bottom"):  # layers and positions are whole numbers: never "(x0.001)", empty or not
            self.plot.getAxis(axis).enableAutoSIPrefix(False)
        self._row_ticks: list[tuple[float, str]] = []
        self._column_ticks: list[tuple[float, str]] = []
        self.image = pg.ImageItem()
        self.image.setColorMap(pg.colormap.get(colormap))
        self.plot.addItem(self.image)
        # The colour scale beside the map: what a colour means, in the plotted quantity's units.
        self.colour_bar = pg.ColorBarItem(values=(0, 1), colorMap=pg.colormap.get(colormap), label=colour_label,
                                          interactive=False, width=14)
        self.colour_bar.setImageItem(self.image, insert_in=self.plot.getPlotItem())
        self.texts = CellTexts()
        self.plot.addItem(self.texts)
        self.marker = pg.InfiniteLine(angle=90, movable=False, pen=pg.mkPen("#ff00ff", width=2))
        self.marker.hide()
        self.plot.addItem(self.marker)
        self.last_data: tuple | None = None
        """The arguments of the last :meth:`set_data` (a large view redraws from them)."""
        self.large_view: QWidget | None = None
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.plot)

    def set_data(self, values: np.ndarray, levels: tuple[float, float], rows: list[str], columns: list[str],
                 cells: list[list[str]] | None = None) -> None:
        """``values`` is ``[rows, columns]``; ``cells`` the text of each cell (same shape) or None."""
        self.last_data = (values, levels, rows, columns, cells)
        n_rows, n_cols = values.shape
        self.image.setImage(values.T.astype(np.float32), levels=levels)  # ImageItem's x is its first axis
        self.colour_bar.setLevels(levels)
        self._row_ticks = [(i + 0.5, r) for i, r in enumerate(rows)]
        self._column_ticks = [(j + 0.5, c) for j, c in enumerate(columns)]
        self._apply_ticks()
        threshold = levels[0] + 0.6 * (levels[1] - levels[0])
        texts = [] if cells is None else [
            (j + 0.5, i + 0.5, cells[i][j], self.dark_text_always or bool(values[i, j] > threshold))
            for i in range(n_rows) for j in range(n_cols)]
        self.texts.set_cells(texts, n_rows, n_cols)
        self.plot.setRange(xRange=(0, n_cols), yRange=(0, n_rows), padding=0)
        if self.large_view is not None and self.large_view.isVisible():
            self.large_view.map.set_data(*self.last_data)

    def _apply_ticks(self) -> None:
        """Label as many rows / columns as fit the map's size in pixels (every k-th; the rest get a bare tick)."""
        box = self.plot.getViewBox().sceneBoundingRect()
        rows = max(2, int(box.height() // 13)) if box.height() > 0 else 16
        columns = max(2, int(box.width() // 56)) if box.width() > 0 else 16
        self.plot.getAxis("left").setTicks(_thinned(self._row_ticks, rows))
        self.plot.getAxis("bottom").setTicks(_thinned(self._column_ticks, columns))

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self._apply_ticks()

    def mark_column(self, column: int | None) -> None:
        if column is None:
            self.marker.hide()
        else:
            self.marker.setValue(column + 0.5)
            self.marker.show()

    def open_large(self) -> QWidget:
        """The same map in its own window at a size where every cell's text and every tick is readable."""
        if self.large_view is None:
            view = QWidget(self, Qt.Window)
            view.setWindowTitle(self.title)
            view.map = Heatmap(self.title, self.colormap, self.dark_text_always, row_label=self.row_label,
                               column_label=self.column_label, colour_label=self.colour_label)
            view.map.texts.font.setPointSize(9)
            QVBoxLayout(view).addWidget(view.map)
            view.resize(1400, 900)
            self.large_view = view
        if self.last_data is not None:
            self.large_view.map.set_data(*self.last_data)
            self.large_view.map.mark_column(None if not self.marker.isVisible() else int(self.marker.value() - 0.5))
        self.large_view.show()
        self.large_view.raise_()
        return self.large_view


def _thinned(ticks: list[tuple[float, str]], most: int) -> list[list[tuple[float, str]]]:
    """Tick levels with at most ``most`` labelled (every k-th), the rest as unlabelled minor ticks:
    at a docked size 30 layer names overprinted one another."""
    step = max(1, -(-len(ticks) // most))
    return [ticks[::step], [(x, "") for i, (x, _) in enumerate(ticks) if i % step]]


class LensPanel(QWidget):
    def __init__(self, session, parent=None):
        super().__init__(parent)
        self.session = session
        self.model = LensModel.of(session)
        tabs = QTabWidget()
        tabs.addTab(self._build_lens(), "Logit lens")
        tabs.addTab(self._build_patching(), "Activation patching")
        self.status = QLabel("")
        self.status.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addWidget(tabs, 1)
        layout.addWidget(self.status)
        self._unsubscribe = self.model.subscribe(self._on_model)
        self._redraw_lens()
        self._redraw_patching()

    # -- lens ----------------------------------------------------------------------------------------
    def _build_lens(self) -> QWidget:
        self.run_button = QPushButton("Run lens")
        self.positions = QSpinBox()
        self.positions.setRange(2, 256)
        self.positions.setValue(self.model.max_positions)
        self.auto = QCheckBox("after each reply")
        self.auto.setChecked(self.model.auto_update)
        self.auto.toggled.connect(lambda on: setattr(self.model, "auto_update", on))
        self.run_button.clicked.connect(lambda: self.model.run_lens(self.positions.value()))
        self.lens_large = QPushButton("Large view")
        self.lens_large.setToolTip("Open the lens map in its own window, large enough to read every cell")
        self.lens_large.clicked.connect(lambda: self.lens_map.open_large())
        controls = QHBoxLayout()
        for w in (self.run_button, QLabel("last positions"), self.positions, self.auto, self.lens_large):
            controls.addWidget(w)
        controls.addStretch(1)
        self.lens_map = Heatmap("logit lens: top token per layer and position", "viridis", row_label="layer",
                                column_label="position · token there", colour_label="p(top token)")
        self.lens_map.plot.scene().sigMouseClicked.connect(self._lens_clicked)
        self.column = QTableWidget(0, 1)
        self.column.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.column_title = QLabel("")
        side = QWidget()
        side_layout = QVBoxLayout(side)
        side_layout.setContentsMargins(0, 0, 0, 0)
        side_layout.addWidget(self.column_title)
        side_layout.addWidget(self.column)
        split = QSplitter(Qt.Horizontal)
        split.addWidget(self.lens_map)
        split.addWidget(side)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)
        page = QWidget()
        layout = QVBoxLayout(page)
        layout.addLayout(controls)
        layout.addWidget(split, 1)
        return page

    def _lens_clicked(self, event) -> None:
        lens = self.model.lens
        if lens is None:
            return
        point = self.lens_map.plot.getPlotItem().vb.mapSceneToView(event.scenePos())
        column = int(np.floor(point.x()))
        if 0 <= column < len(lens.positions):
            self.session.conversation.selected_position = int(lens.positions[column])
            self._redraw_column(column)

    def _redraw_lens(self) -> None:
        lens = self.model.lens
        if lens is None:
            self.lens_map.set_data(np.zeros((0, 0)), (0, 1), [], [])
            self._redraw_column()
            return
        top1 = lens.top_probs[:, :, 0]  # [P, T]
        rows = [p.split(".")[-1] for p in lens.points]
        columns = [f"{int(p)}\n{_short(t)}" for p, t in zip(lens.positions, lens.tokens)]
        cells = [[_short(row[t][0]) for t in range(len(row))] for row in lens.top_texts]
        self.lens_map.set_data(top1, (0.0, 1.0), rows, columns, cells)
        self._redraw_column()

    def _redraw_column(self, column: int | None = None) -> None:
        lens = self.model.lens
        index = self.model.selected_column() if column is None else column
        self.lens_map.mark_column(index)
        if lens is None or index is None:
            self.column.setRowCount(0)
            self.column_title.setText("the lens column of the selected token appears here")
            return
        data = self.model.column(index)
        k = len(data[0][1]) if data else 0
        self.column.setColumnCount(k)
        self.column.setHorizontalHeaderLabels([f"top {j + 1}" for j in range(k)])
        self.column.setRowCount(len(data))
        self.column.setVerticalHeaderLabels([point for point, _ in data])
        for i, (_, tops) in enumerate(data):
            for j, (text, prob) in enumerate(tops):
                self.column.setItem(i, j, QTableWidgetItem(f"{_short(text, 12)} {prob:.2f}"))
        position = int(lens.positions[index])
        self.column_title.setText(f"position {position} ({lens.tokens[index]!r}): what each layer predicts next")

    # -- patching --------------------------------------------------------------------------------------
    def _build_patching(self) -> QWidget:
        self.clean = QLineEdit("The capital of France is")
        self.corrupted = QLineEdit("The capital of Italy is")
        self.clean_answer = QLineEdit(" Paris")
        self.corrupted_answer = QLineEdit(" Rome")
        self.kind = QComboBox()
        self.kind.addItems(["resid_pre", "resid_post", "attn_out", "mlp_out", "attn_z", "mlp_hidden"])
        self.patch_button = QPushButton("Patch every layer × position")
        self.patch_button.clicked.connect(self.run_patching)
        # Two compact rows (prompt | answer), so the map keeps most of a docked panel's height.
        form = QGridLayout()
        form.addWidget(QLabel("clean prompt"), 0, 0)
        form.addWidget(self.clean, 0, 1)
        form.addWidget(QLabel("answer"), 0, 2)
        form.addWidget(self.clean_answer, 0, 3)
        form.addWidget(QLabel("corrupted (same token count)"), 1, 0)
        form.addWidget(self.corrupted, 1, 1)
        form.addWidget(QLabel("answer"), 1, 2)
        form.addWidget(self.corrupted_answer, 1, 3)
        form.setColumnStretch(1, 3)
        form.setColumnStretch(3, 1)
        self.patch_map = Heatmap("activation patching: clean activation patched into the corrupted run", "CET-D1",
                                 dark_text_always=True, row_label="layer", column_label="position · token (clean→corrupted where they differ)",
                                 colour_label="patched logit difference (1 = clean restored, 0 = corrupted)")
        page = QWidget()
        layout = QVBoxLayout(page)
        self.patch_large = QPushButton("Large view")
        self.patch_large.setToolTip("Open the patching map in its own window, large enough to read every cell")
        self.patch_large.clicked.connect(lambda: self.patch_map.open_large())
        buttons = QHBoxLayout()
        buttons.addWidget(QLabel("patch"))
        buttons.addWidget(self.kind)
        buttons.addWidget(self.patch_button, 1)
        buttons.addWidget(self.patch_large)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.patch_map, 1)
        return page

    def run_patching(self) -> None:
        self.model.run_patching(self.clean.text(), self.corrupted.text(), self.clean_answer.text(),
                                self.corrupted_answer.text(), self.kind.currentText())

    def _redraw_patching(self) -> None:
        result = self.model.patching
        if result is None:
            self.patch_map.set_data(np.zeros((0, 0)), (-1, 1), [], [])
            return
        scores = result.scores  # [L, T]
        span = max(1.0, float(np.nanmax(np.abs(scores)))) if scores.size else 1.0
        columns = [f"{_short(c)}→{_short(t)}" if c != t else _short(t)
                   for c, t in zip(result.clean_tokens, result.tokens)]
        cells = [[f"{v:.2f}" for v in row] for row in scores]
        self.patch_map.set_data(scores, (-span, span), [str(layer) for layer in result.layers], columns, cells)

    def _on_model(self, what: str) -> None:
        if what == "lens":
            self._redraw_lens()
        elif what == "selected":
            self._redraw_column()
        elif what == "patching":
            self._redraw_patching()
        elif what == "status":
            self.status.setText(self.model.status)
