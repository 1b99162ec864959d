"""Model picker: default / recent / repo id / folder / GGUF, memory estimate vs budget, load progress,
and a hub download's row (bytes, rate, ETA, Cancel) while the chat goes on."""

from __future__ import annotations

from PySide6.QtWidgets import (
    QComboBox, QFileDialog, QHBoxLayout, QLabel, QProgressBar, QPushButton, QVBoxLayout, QWidget,
)

from ..bundle import dialog_folder

GIB = 1024 ** 3
NO_MODEL = ("No model loaded. Type \"default\", a Hugging Face repo id, or choose a folder or GGUF file, "
            "then Load.")


class ModelPickerPanel(QWidget):
    def __init__(self, session, parent=None):
        super().__init__(parent)
        self.session = session
        self.picker = session.models
        self.spec = QComboBox(editable=True)
        self.spec.setToolTip("default, a Hugging Face repo id (org/name), a model folder or a .gguf file")
        self._fill_recent()
        self.folder_button = QPushButton("Folder…")
        self.gguf_button = QPushButton("GGUF…")
        self.estimate_button = QPushButton("Estimate memory")
        self.load_button = QPushButton("Load")
        self.cancel_button = QPushButton("Cancel")
        for button, tip in (
            (self.folder_button, "Choose a model folder (config.json + safetensors) and estimate its memory"),
            (self.gguf_button, "Choose a .gguf file (converted once, into the cache) and estimate its memory"),
            (self.estimate_button, "Memory the model would take (weights, KV cache, activations) against the "
                                   "budget, without loading it"),
            (self.load_button, "Load the model (the loaded one stays if the new one cannot be read)"),
            (self.cancel_button, "Stop the load or download (a load already reading weights finishes first)"),
        ):
            button.setToolTip(tip)
        self.estimate_label = QLabel("")
        self.estimate_label.setWordWrap(True)
        self.progress = QProgressBar()
        self.progress.setVisible(False)
        self.progress_label = QLabel("")
        self.download_row = QWidget()
        self.download_bar = QProgressBar()
        self.download_bar.setRange(0, 1000)
        self.download_label = QLabel("")
        self.download_label.setWordWrap(True)
        self.download_cancel = QPushButton("Cancel download")
        self.download_cancel.setToolTip("stop the download; files already complete stay in the cache and a new "
                                        "load of the same repo resumes from them")
        self.download_cancel.clicked.connect(self.picker.cancel_download)
        download_layout = QVBoxLayout(self.download_row)
        download_layout.setContentsMargins(0, 0, 0, 0)
        bar_row = QHBoxLayout()
        bar_row.addWidget(self.download_bar, 1)
        bar_row.addWidget(self.download_cancel)
        download_layout.addLayout(bar_row)
        download_layout.addWidget(self.download_label)
        self.download_row.setVisible(False)
        self.info = QLabel(NO_MODEL)
        self.info.setWordWrap(True)
        self.info.setToolTip("The loaded model: shape, memory, fingerprint (presets and SAEs are checked "
                             "against it), backend")
        self.folder_button.clicked.connect(self._pick_folder)
        self.gguf_button.clicked.connect(self._pick_gguf)
        self.estimate_button.clicked.connect(self.estimate)
        self.load_button.clicked.connect(self.load)
        self.cancel_button.clicked.connect(self.picker.cancel_load)
        self.spec.activated.connect(lambda _index: self.estimate())  # a recent model picked from the list
        row = QHBoxLayout()
        for button in (self.folder_button, self.gguf_button, self.estimate_button, self.load_button, self.cancel_button):
            row.addWidget(button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.spec)
        layout.addLayout(row)
        layout.addWidget(self.estimate_label)
        layout.addWidget(self.progress)
        layout.addWidget(self.progress_label)
        layout.addWidget(self.download_row)
        layout.addWidget(self.info)
        layout.addStretch(1)
        self._unsubscribe = [self.picker.subscribe(self._update), session.settings.subscribe(self._settings_changed)]
        self._update("loaded")
        self._update("loading")
        self._update("download")

    def current_spec(self) -> str:
        return self.spec.currentText().strip() or "default"

    def estimate(self) -> int:
        return self.picker.request_estimate(self.current_spec())

    def load(self) -> int:
        # The estimate runs first on the engine thread, so it is on screen while the load goes on;
        # a load over the budget is refused by the loader with the same numbers.
        if self.picker.estimate is None or self.picker.estimate.spec != self.current_spec():
            self.picker.request_estimate(self.current_spec())
        return self.picker.load(self.current_spec())

    def _fill_recent(self) -> None:
        text = self.spec.currentText()
        self.spec.blockSignals(True)
        self.spec.clear()
        items = ["default", *[s for s in self.picker.recent if s != "default"]]
        self.spec.addItems(items)
        self.spec.setEditText(text or "default")
        self.spec.blockSignals(False)

    def _settings_changed(self, what: str) -> None:
        self._fill_recent()

    def _pick_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Model folder (config.json + safetensors)",
                                                  str(dialog_folder()))
        if folder:
            self.spec.setEditText(folder)
            self.estimate()

    def _pick_gguf(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "GGUF model", str(dialog_folder()), "GGUF (*.gguf)")
        if path:
            self.spec.setEditText(path)
            self.estimate()

    def _update(self, what: str) -> None:
        picker = self.picker
        if what == "estimate":
            if picker.estimate_error:
                self.estimate_label.setText(f"⚠ {picker.estimate_error}")
            elif picker.estimate is not None:
                e = picker.estimate
                verdict = "fits the budget" if e.fits else "OVER the budget: loading will be refused"
                self.estimate_label.setText(
                    f"{e.spec}: needs ~{e.total_bytes / GIB:.2f} GiB of {e.budget_bytes / GIB:.1f} GiB budget "
                    f"({verdict})\n{e.description}")
            elif picker.estimate_request is not None:
                self.estimate_label.setText("estimating…")
        elif what in ("progress", "loading"):
            loading = picker.loading_request is not None
            self.progress.setVisible(loading)
            self.load_button.setEnabled(not loading)
            self.cancel_button.setEnabled(loading)
            if picker.progress is not None and picker.progress.total > 0:
                self.progress.setRange(0, 1000)
                self.progress.setValue(int(1000 * picker.progress.done / picker.progress.total))
                self.progress_label.setText(picker.progress.message)
            elif loading:
                self.progress.setRange(0, 0)  # busy indicator until the first stage arrives
                self.progress_label.setText(f"loading {picker.loading_spec}…")
            else:
                self.progress_label.setText("")
                self._show_info()
        elif what == "download":
            self._update_download()
        elif what == "loaded":
            self._show_info()

    def _show_info(self) -> None:
        """What the engine holds now: the model, or plainly none (and why, after a failed load)."""
        picker = self.picker
        if picker.info is None:
            loading = picker.loading_request is not None
            failed = (f"\n⚠ the load of {picker.loading_spec} failed: {picker.last_load_error}"
                      if picker.last_load_error and not loading else "")
            self.info.setText((f"No model loaded while {picker.loading_spec} loads." if loading else NO_MODEL) + failed)
            return
        i = picker.info
        warning = f"\n⚠ {i.slow_blas_warning}" if i.slow_blas_warning else ""
        failed = (f"\n⚠ this model is still loaded: the load of {picker.loading_spec} failed: {picker.last_load_error}"
                  if picker.last_load_error else "")
        self.info.setText(
            f"{i.name} — {i.n_layers} layers, d_model {i.d_model}, vocab {i.vocab_size}, {i.runtime_dtype}\n"
            f"memory ~{i.memory_bytes / GIB:.2f} GiB of a {i.budget_bytes / GIB:.1f} GiB budget\n"
            f"fingerprint {i.fingerprint}\n{i.backend}{warning}{failed}")

    def _update_download(self) -> None:
        picker = self.picker
        downloading = picker.download_request is not None
        self.download_row.setVisible(downloading)
        self.load_button.setEnabled(not downloading and picker.loading_request is None)
        if not downloading:
            return
        plan, progress = picker.download_plan, picker.download_progress
        lines = []
        if plan is not None:
            verdict = "fits the budget" if plan.fits else "OVER the budget"
            lines.append(f"{plan.spec}: {plan.n_files} files, {plan.download_bytes / GIB:.2f} GiB to download; "
                         f"needs ~{plan.estimate_bytes / GIB:.2f} GiB of {plan.budget_bytes / GIB:.1f} GiB ({verdict})")
        else:
            lines.append(f"{picker.loading_spec}: reading the repo's config and safetensors headers…")
        if progress is not None:
            self.download_bar.setRange(0, 1000)
            self.download_bar.setValue(int(1000 * progress.fraction))
            self.download_bar.setFormat(f"{progress.fraction:.0%}")  # as the text below rounds it
            lines.append(progress.describe())
        else:
            self.download_bar.setRange(0, 0)  # busy until the first bytes
        self.download_label.setText("\n".join(lines))
