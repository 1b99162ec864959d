"""SAE panel: pick/load an SAE, browse and search its latents, train a new one (progress bar,
live loss / variance explained / L0, cancel; the same run folder resumes)."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtWidgets import (
    QAbstractItemView, QComboBox, QFileDialog, QFormLayout, QGroupBox, QHBoxLayout, QLabel, QLineEdit,
    QPlainTextEdit, QProgressBar, QPushButton, QSpinBox, QTableWidget, QTableWidgetItem, QTabWidget, QTextBrowser, QVBoxLayout,
    QWidget,
)

from ..bundle import dialog_folder
from ..session.meters import MetersModel
from ..session.sae import SaeModel
from .meters import record_html
from .theme import series_colour


class SaePanel(QWidget):
    def __init__(self, session, parent=None):
        super().__init__(parent)
        self.session = session
        self.model = SaeModel.of(session)
        self.meters = MetersModel.of(session)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        tabs = QTabWidget()
        tabs.addTab(self._build_browse(), "Load / browse")
        tabs.addTab(self._build_train(), "Train")
        layout = QVBoxLayout(self)
        layout.addWidget(tabs, 1)
        layout.addWidget(self.status)
        self._unsubscribe = [self.model.subscribe(self._on_model), self.meters.subscribe(self._on_meters)]
        try:
            self.model.refresh_available()
        except Exception as exc:  # noqa: BLE001 - a bad search folder must not hide the panel
            session.error(f"looking for SAEs: {exc}")
        self._show_available()
        self._on_sae()

    # -- load / browse ---------------------------------------------------------------------------------
    def _build_browse(self) -> QWidget:
        self.available = QComboBox()
        self.available.setEditable(True)
        self.available.setMinimumContentsLength(28)
        self.refresh_button = QPushButton("↻")
        self.open_button = QPushButton("Folder…")
        self.file_button = QPushButton("File…")
        self.load_button = QPushButton("Load")
        self.unload_button = QPushButton("Unload")
        self.refresh_button.clicked.connect(lambda: (self.model.refresh_available(), self._show_available()))
        self.open_button.clicked.connect(self._open_folder)
        self.file_button.clicked.connect(self._open_file)
        self.load_button.clicked.connect(lambda: self.load(self.available.currentText().strip()))
        self.unload_button.clicked.connect(self.model.unload)
        row = QHBoxLayout()
        for w in (QLabel("SAE"), self.available, self.refresh_button, self.open_button, self.file_button,
                  self.load_button, self.unload_button):
            row.addWidget(w)
        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        self.search = QLineEdit(placeholderText="search labels (words), or a latent number")
        self.search.textChanged.connect(self._search)
        self.by_frequency = QPushButton("Most frequent")
        self.by_frequency.setCheckable(True)
        self.by_frequency.toggled.connect(lambda _: self._search(self.search.text()))
        self.table = QTableWidget(0, 3)
        self.table.setHorizontalHeaderLabels(["latent", "label", "frequency / score"])
        self.table.horizontalHeader().setStretchLastSection(False)
        self.table.horizontalHeader().setSectionResizeMode(1, self.table.horizontalHeader().ResizeMode.Stretch)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.cellClicked.connect(self._row_clicked)
        self.record = QTextBrowser()
        search_row = QHBoxLayout()
        search_row.addWidget(self.search, 1)
        search_row.addWidget(self.by_frequency)
        # Contrast search: latents more active on prompts A than on prompts B.
        self.texts_a = QPlainTextEdit(placeholderText="prompts A, one per line")
        self.texts_b = QPlainTextEdit(placeholderText="prompts B, one per line")
        for box in (self.texts_a, self.texts_b):
            box.setMaximumHeight(70)
        self.contrast_button = QPushButton("Latents more\nactive on A")
        self.contrast_button.clicked.connect(self._contrast)
        contrast_row = QHBoxLayout()
        contrast_row.addWidget(self.texts_a, 1)
        contrast_row.addWidget(self.texts_b, 1)
        contrast_row.addWidget(self.contrast_button)
        page = QWidget()
        layout = QVBoxLayout(page)
        layout.addLayout(row)
        layout.addWidget(self.summary)
        layout.addLayout(search_row)
        layout.addLayout(contrast_row)
        layout.addWidget(self.table, 2)
        layout.addWidget(self.record, 1)
        return page

    def load(self, source: str) -> None:
        if not source:
            self.session.error("choose an SAE: pick a shipped one, type an SAE id, or open a folder")
            return
        item = next((a for a in self.model.available if a.sae_id == source), None)
        self.model.load(item.path if item else source)

    def _open_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "SAE folder (SAELens, Gemma Scope, Llama Scope, sparsify)",
                                                  str(dialog_folder()))
        if folder:
            self.available.setEditText(folder)
            self.load(folder)

    def _open_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "SAE file (Gemma Scope params.npz, safetensors)",
                                              str(dialog_folder()), "SAE weights (*.npz *.safetensors);;All files (*)")
        if path:
            self.available.setEditText(path)
            self.load(path)

    def _show_available(self) -> None:
        current = self.available.currentText()
        self.available.clear()
        self.available.addItems([a.sae_id for a in self.model.available])
        if current:
            self.available.setEditText(current)

    def _search(self, text: str) -> None:
        if self.model.info is None:
            self.table.setRowCount(0)
            return
        self.table.setHorizontalHeaderLabels(["latent", "label", "frequency / score"])
        text = text.strip()
        rows = self.model.search(text, 200) if text else self.model.browse(0, 200, self.by_frequency.isChecked())
        self.table.setRowCount(len(rows))
        for i, (latent, label, number) in enumerate(rows):
            shown = f"{number:.3%}" if not text else f"{number:.0f}"
            for col, value in enumerate((str(latent), label, shown)):
                self.table.setItem(i, col, QTableWidgetItem(value))

    def _contrast(self) -> None:
        a = [t for t in self.texts_a.toPlainText().splitlines() if t.strip()]
        b = [t for t in self.texts_b.toPlainText().splitlines() if t.strip()]
        if not a or not b or self.model.info is None:
            self.session.error("load an SAE and write at least one prompt A and one prompt B (one per line)")
            return
        self.model.contrast(a, b)

    def _show_contrast(self) -> None:
        rows = self.model.contrast_results
        self.table.setHorizontalHeaderLabels(["latent", "label", "mean A − mean B"])
        self.table.setRowCount(len(rows))
        for i, (latent, _mean_a, _mean_b, difference, label) in enumerate(rows):
            for col, value in enumerate((str(latent), label, f"{difference:+.4f}")):
                self.table.setItem(i, col, QTableWidgetItem(value))

    def _row_clicked(self, row: int, _column: int) -> None:
        item = self.table.item(row, 0)
        if item is not None:
            self.meters.select(int(item.text()))  # the meters panel shows it too, with watch/clamp buttons

    # -- train -------------------------------------------------------------------------------------------
    def _build_train(self) -> QWidget:
        self.out = QLineEdit(placeholderText="folder for the trained SAE")
        self.out_button = QPushButton("…")
        self.out_button.clicked.connect(self._choose_out)
        self.point = QLineEdit("resid_post.15")
        self.corpus = QLineEdit("builtin")
        self.d_sae, self.k, self.steps, self.batch = (QSpinBox() for _ in range(4))
        for box, (low, high, value) in zip((self.d_sae, self.k, self.steps, self.batch),
                                           ((16, 1 << 17, 4608), (1, 1024, 32), (1, 1 << 20, 2400), (8, 8192, 512))):
            box.setRange(low, high)
            box.setValue(value)
        out_row = QHBoxLayout()
        out_row.addWidget(self.out, 1)
        out_row.addWidget(self.out_button)
        form = QFormLayout()
        form.addRow("save to", out_row)
        form.addRow("hook point", self.point)
        form.addRow("corpus", self.corpus)
        form.addRow("latents", self.d_sae)
        form.addRow("k (active per token)", self.k)
        form.addRow("steps", self.steps)
        form.addRow("batch size", self.batch)
        self.train_button = QPushButton("Train (resumes an unfinished run in the same folder)")
        self.cancel_button = QPushButton("Cancel")
        self.train_button.clicked.connect(self._train)
        self.cancel_button.clicked.connect(self.model.cancel_training)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress_label = QLabel("")
        self.metrics_plot = pg.PlotWidget(title="training: variance explained, L0 / k, dead fraction")
        self.metrics_plot.addLegend(offset=(5, 5))
        self.metrics_plot.setLabel("bottom", "training step")
        self.metrics_plot.setLabel("left", "fraction (variance explained can start below 0)")
        self.metrics_plot.getAxis("bottom").enableAutoSIPrefix(False)
        self.metrics_plot.showGrid(y=True, alpha=0.25)
        self.ve_curve = self.metrics_plot.plot([], [], pen=pg.mkPen(series_colour(2), width=2), name="variance explained")
        self.l0_curve = self.metrics_plot.plot([], [], pen=pg.mkPen(series_colour(0), width=2), name="L0 / k")
        self.dead_curve = self.metrics_plot.plot([], [], pen=pg.mkPen(series_colour(1), width=2), name="dead fraction")
        buttons = QHBoxLayout()
        buttons.addWidget(self.train_button, 1)
        buttons.addWidget(self.cancel_button)
        box = QGroupBox("train a TopK SAE on the loaded model")
        inner = QVBoxLayout(box)
        inner.addLayout(form)
        inner.addLayout(buttons)
        inner.addWidget(self.progress)
        inner.addWidget(self.progress_label)
        inner.addWidget(self.metrics_plot, 1)
        return box

    def _choose_out(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Save the trained SAE in", str(dialog_folder()))
        if folder:
            self.out.setText(folder)

    def _train(self) -> None:
        if not self.out.text().strip():
            self.session.error("choose a folder to save the trained SAE in")
            return
        self.model.train(out=self.out.text().strip(), hook_point=self.point.text().strip(),
                         corpus=self.corpus.text().strip() or "builtin", d_sae=self.d_sae.value(), k=self.k.value(),
                         steps=self.steps.value(), batch_size=self.batch.value())

    # -- updates -------------------------------------------------------------------------------------------
    def _on_model(self, what: str) -> None:
        if what == "labels":
            self._search(self.search.text())
        elif what == "sae":
            self._on_sae()
        elif what == "available":
            self._show_available()
        elif what == "record":
            self._on_meters("selected")
        elif what == "contrast":
            self._show_contrast()
        elif what == "training":
            self._on_training()
        elif what == "status":
            self.status.setText(self.model.status)

    def _on_meters(self, what: str) -> None:
        if what == "selected":
            record = self.model.record
            if record is not None and record.latent == self.meters.selected:
                self.record.setHtml(record_html(record, self.model.label(record.latent)))

    def _on_sae(self) -> None:
        info = self.model.info
        self.unload_button.setEnabled(info is not None)
        if info is None:
            self.summary.setText("no SAE loaded")
        else:
            labelled = sum(1 for label in info.labels if label)
            self.summary.setText(f"{info.sae_id}: {info.architecture}" + (f" k={info.k}" if info.k else "")
                                 + f", {info.d_in} → {info.d_sae} at {info.hook_point}; {labelled} labelled latents"
                                 + f"\n{info.path}")
            if info.path:
                self.session.settings.add_recent_file("sae", info.path)
        self._search(self.search.text())

    def _on_training(self) -> None:
        done, total, message = self.model.train_progress
        self.progress.setValue(int(1000 * done / total) if total else 0)
        m = self.model.train_metrics
        running = self.model.training
        self.train_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        if m["step"]:
            steps = np.asarray(m["step"], dtype=np.float64)
            k = max(1, self.k.value())
            self.ve_curve.setData(steps, np.asarray(m["variance_explained"], dtype=np.float64))
            self.l0_curve.setData(steps, np.asarray(m["l0"], dtype=np.float64) / k)
            self.dead_curve.setData(steps, np.asarray(m["dead_fraction"], dtype=np.float64))
            self.progress_label.setText(
                f"{message}: step {int(steps[-1])}, mse {m['mse'][-1]:.4f}, variance explained "
                f"{m['variance_explained'][-1]:.3f}, L0 {m['l0'][-1]:.1f}, dead {m['dead_fraction'][-1]:.1%}")
        else:
            self.progress_label.setText(f"{message} {done:g}/{total:g}" if running else "")
