"""Steering panel: active interventions (vectors and SAE clamps) with sliders, toggles and a
position mode; build a vector from two prompt lists or a contrast set; export / import presets.

Slider moves are live (``post_live``): the engine applies them between generation steps,
so the next token already feels them.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import (
    QCheckBox, QComboBox, QDoubleSpinBox, QFileDialog, QFormLayout, QGroupBox, QHBoxLayout, QLabel, QLineEdit,
    QPlainTextEdit, QPushButton, QScrollArea, QSlider, QSpinBox, QVBoxLayout, QWidget,
)

from ..bundle import dialog_folder, presets_dir
from ..session.steering import POSITION_MODES, SteeringModel, contrast_set_names, parse_positions

TICKS = 1000
"""Slider resolution: the slider runs over ±TICKS and maps to ±range (or 0..range for clamps)."""


def value_range(item) -> tuple[float, float]:
    """Slider range for an intervention: a fraction of the typical residual norm, an absolute norm, or a clamp."""
    if item.kind == "vector":
        span = 1.0 if item.relative else 100.0
    else:
        span = 30.0 if item.mode == "max_multiple" else 100.0
    span = max(span, abs(item.value) * 1.5)
    return (-span, span) if item.kind == "vector" else (min(0.0, item.value), span)


class InterventionRow(QWidget):
    def __init__(self, model: SteeringModel, item, parent=None):
        super().__init__(parent)
        self.model, self.name = model, item.name
        self.enabled = QCheckBox(item.name)
        self.slider = QSlider(Qt.Horizontal)
        self.slider.setRange(-TICKS, TICKS)
        self.value = QDoubleSpinBox()
        self.value.setDecimals(3)
        self.value.setRange(-1e6, 1e6)
        self.positions = QComboBox()
        self.positions.setEditable(True)
        self.positions.addItems(POSITION_MODES)
        self.remove_button = QPushButton("✕")
        self.remove_button.setFixedWidth(28)
        self.enabled.setToolTip("Apply this intervention (unchecked: kept, not applied); acts on the next token")
        self.slider.setToolTip("Strength: drag to change it while the model talks (the next token uses it)")
        self.value.setToolTip("Strength, typed exactly")
        self.positions.setToolTip("Which token positions it acts on: a mode from the list, or positions "
                                  "typed as a comma-separated list")
        self.remove_button.setToolTip("Remove this intervention")
        self.detail = QLabel("")
        self.detail.setForegroundRole(QPalette.PlaceholderText)  # muted, and readable in Dark Mode (was #555)
        top = QHBoxLayout()
        top.setContentsMargins(0, 0, 0, 0)
        top.addWidget(self.enabled)
        top.addWidget(self.slider, 1)
        top.addWidget(self.value)
        top.addWidget(self.positions)
        top.addWidget(self.remove_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addLayout(top)
        layout.addWidget(self.detail)
        self.update_from(item)
        self.enabled.toggled.connect(lambda on: model.set_enabled(self.name, on))
        self.slider.valueChanged.connect(self._slider_moved)
        self.value.editingFinished.connect(lambda: model.set_value(self.name, self.value.value()))
        self.positions.lineEdit().editingFinished.connect(self._positions_edited)
        self.positions.activated.connect(lambda _: self._positions_edited())
        self.remove_button.clicked.connect(lambda: model.remove(self.name))

    def update_from(self, item) -> None:
        """Show the engine's state (signals blocked: this is not a user edit)."""
        self.item = item
        self.range = value_range(item)
        for widget in (self.enabled, self.slider, self.value, self.positions):
            widget.blockSignals(True)
        self.enabled.setChecked(item.enabled)
        if not self.slider.isSliderDown():
            self.slider.setValue(self._ticks(item.value))
        self.value.setValue(item.value)
        shown = item.positions if isinstance(item.positions, str) else ",".join(str(p) for p in item.positions)
        self.positions.setEditText(shown)
        for widget in (self.enabled, self.slider, self.value, self.positions):
            widget.blockSignals(False)
        unit = ("× typical residual norm" if item.relative else "absolute") if item.kind == "vector" else (
            "× max activation" if item.mode == "max_multiple" else "absolute value")
        self.detail.setText(f"{item.kind} at {item.hook_point}, {unit}: {item.detail}")

    def _ticks(self, value: float) -> int:
        low, high = self.range
        return int(round(-TICKS + 2 * TICKS * (value - low) / (high - low))) if high > low else 0

    def slider_value(self) -> float:
        low, high = self.range
        return low + (self.slider.value() + TICKS) / (2 * TICKS) * (high - low)

    def _slider_moved(self, _ticks: int) -> None:
        value = round(self.slider_value(), 4)
        self.value.blockSignals(True)
        self.value.setValue(value)
        self.value.blockSignals(False)
        self.model.set_value(self.name, value)

    def _positions_edited(self) -> None:
        try:
            positions = parse_positions(self.positions.currentText())
        except ValueError as exc:
            self.model.session.error(str(exc))
            return
        if positions != self.item.positions:
            self.model.set_positions(self.name, positions)


class SteeringPanel(QWidget):
    def __init__(self, session, parent=None):
        super().__init__(parent)
        self.session = session
        self.model = SteeringModel.of(session)
        self.rows: dict[str, InterventionRow] = {}
        self.list_widget = QWidget()
        self.list_layout = QVBoxLayout(self.list_widget)
        self.list_layout.addStretch(1)
        self.empty = QLabel("no active interventions: build a vector below, clamp a latent in the meters panel, "
                            "or import a preset")
        self.empty.setWordWrap(True)
        self.list_layout.insertWidget(0, self.empty)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.list_widget)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextSelectableByMouse)
        layout = QVBoxLayout(self)
        layout.addWidget(scroll, 2)
        layout.addWidget(self._build_presets())
        layout.addWidget(self._build_builder(), 2)
        layout.addWidget(self.status)
        self._unsubscribe = self.model.subscribe(self._on_model)
        self._sync_rows()

    # -- building a vector --------------------------------------------------------------------------------
    def _build_builder(self) -> QGroupBox:
        box = QGroupBox("build a steering vector")
        self.vector_name = QLineEdit("steering")
        self.layer = QSpinBox()
        self.layer.setRange(-1, 1000)
        self.layer.setSpecialValueText("middle")
        self.layer.setValue(-1)
        self.contrast = QComboBox()
        self.contrast.addItem("my prompts (below)")
        self.contrast.addItems(contrast_set_names())
        self.positive = QPlainTextEdit(placeholderText="positive prompts, one per line")
        self.negative = QPlainTextEdit(placeholderText="negative prompts, one per line")
        self.coefficient = QDoubleSpinBox()
        self.coefficient.setRange(-100, 100)
        self.coefficient.setDecimals(3)
        self.coefficient.setValue(0.2)
        self.build_button = QPushButton("Build and apply")
        self.vector_name.setToolTip("Name of the new vector (shown in the list above and in presets)")
        self.layer.setToolTip("The residual stream layer it is added to (middle: the model's middle layer)")
        self.contrast.setToolTip("A built-in contrast set, or your own positive and negative prompts below")
        self.positive.setToolTip("Prompts with the behaviour you want more of, one per line")
        self.negative.setToolTip("Prompts with the opposite behaviour, one per line")
        self.coefficient.setToolTip("Strength, as a multiple of the layer's typical activation norm")
        self.build_button.setToolTip("Compute the vector from the two sets of prompts and add it to the chat")
        self.build_button.clicked.connect(self.build)
        self.contrast.currentIndexChanged.connect(self._contrast_chosen)
        form = QFormLayout()
        form.addRow("name", self.vector_name)
        form.addRow("layer (resid_post)", self.layer)
        form.addRow("prompts", self.contrast)
        form.addRow("coefficient (× typical norm)", self.coefficient)
        prompts = QHBoxLayout()
        prompts.addWidget(self.positive)
        prompts.addWidget(self.negative)
        layout = QVBoxLayout(box)
        layout.addLayout(form)
        layout.addLayout(prompts, 1)
        layout.addWidget(self.build_button)
        return box

    def _contrast_chosen(self, index: int) -> None:
        custom = index == 0
        self.positive.setEnabled(custom)
        self.negative.setEnabled(custom)
        if not custom:
            self.vector_name.setText(self.contrast.currentText())

    def build(self) -> None:
        custom = self.contrast.currentIndex() == 0
        positive = self.positive.toPlainText().splitlines() if custom else ()
        negative = self.negative.toPlainText().splitlines() if custom else ()
        if custom and (not any(p.strip() for p in positive) or not any(n.strip() for n in negative)):
            self.session.error("write at least one positive and one negative prompt (one per line), "
                               "or choose a built-in contrast set")
            return
        self.model.build(self.vector_name.text().strip() or "steering", positive, negative,
                         "" if custom else self.contrast.currentText(),
                         None if self.layer.value() < 0 else self.layer.value(), self.coefficient.value())

    # -- presets -----------------------------------------------------------------------------------------
    def _build_presets(self) -> QWidget:
        self.export_button = QPushButton("Export preset…")
        self.import_button = QPushButton("Import preset…")
        self.allow_different = QCheckBox("allow other weights of the same architecture")
        self.export_button.setToolTip("Save the interventions above (vectors, clamps) as a preset file")
        self.import_button.setToolTip("Load a preset file, checked against the loaded model")
        self.allow_different.setToolTip("Import a preset made on a model with the same shapes but other weights "
                                        "(a fine-tune): it may not mean the same")
        self.export_button.clicked.connect(self._export)
        self.import_button.clicked.connect(self._import)
        row = QWidget()
        layout = QHBoxLayout(row)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.export_button)
        layout.addWidget(self.import_button)
        layout.addWidget(self.allow_different)
        layout.addStretch(1)
        return row

    def _export(self) -> None:
        start = dialog_folder(presets_dir(), create=True) / "steering.symbiont-preset"
        path, _ = QFileDialog.getSaveFileName(self, "Export preset", str(start),
                                              "Symbiont preset (*.symbiont-preset);;JSON + safetensors (*.json)")
        if path:
            from pathlib import Path

            name = "".join(c if c.isalnum() or c in "_.-" else "-" for c in Path(path).stem) or "preset"
            self.model.export_preset(path, name)

    def _import(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Import preset", str(dialog_folder(presets_dir())),
                                              "Symbiont preset (*.symbiont-preset *.json)")
        if path:
            self.model.import_preset(path, self.allow_different.isChecked())

    # -- updates -----------------------------------------------------------------------------------------
    def _on_model(self, what: str) -> None:
        if what == "items":
            self._sync_rows()
        elif what == "status":
            self.status.setText(self.model.status)
        elif what == "busy":
            busy = self.model.busy
            for button in (self.build_button, self.export_button, self.import_button):
                button.setEnabled(not busy)

    def _sync_rows(self) -> None:
        names = [item.name for item in self.model.items]
        for name in [n for n in self.rows if n not in names]:
            row = self.rows.pop(name)
            self.list_layout.removeWidget(row)
            row.deleteLater()
        for index, item in enumerate(self.model.items):
            row = self.rows.get(item.name)
            if row is None:
                row = self.rows[item.name] = InterventionRow(self.model, item)
                self.list_layout.insertWidget(index, row)
            else:
                row.update_from(item)
        self.empty.setVisible(not names)
