"""Lab panel: run a lab experiment in its own process, watch its progress and curves, read its report.

The experiment runs as ``python -m symbiont_app.cli lab ...`` in a ``QProcess`` (the command
comes from :class:`~symbiont_app.session.lab.LabModel`), so its MLX models never touch the
chat's engine thread. Cancel terminates the process (results already saved stay: every lab
writes them atomically), Resume runs the same command into the same folder, which computes
only what is missing. Progress and curves come from the run folder's ``progress.jsonl``,
polled on a timer; curve items are made once per metric and updated with ``setData``.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QProcess, QProcessEnvironment, Qt, QTimer
from PySide6.QtGui import QPixmap
from PySide6.QtWidgets import (
    QApplication, QComboBox, QFileDialog, QFormLayout, QHBoxLayout, QLabel, QLineEdit, QPlainTextEdit, QProgressBar,
    QPushButton, QScrollArea, QTabWidget, QTextBrowser, QVBoxLayout, QWidget,
)

from ..bundle import dialog_folder, lab_runs_dir
from ..session.lab import EXPERIMENTS, LabInputError, LabModel
from ..session.lab_catalog import ProgressClock, describe, shipped_configs
from .theme import series_colour

POLL_MS = 300
KILL_AFTER_MS = 5000
"""A cancelled run gets this long to exit after SIGTERM before it is killed."""


class LabPanel(QWidget):
    def __init__(self, session, parent=None):
        super().__init__(parent)
        self.session = session
        self.model = LabModel.of(session)
        self.process: QProcess | None = None
        self._curves: dict[str, pg.PlotDataItem] = {}
        self._timer = QTimer(self)
        self._timer.setInterval(POLL_MS)
        self._timer.timeout.connect(self.model.poll)

        controls = QWidget()
        form = QFormLayout()
        self.experiment = QComboBox()
        for spec in EXPERIMENTS.values():
            self.experiment.addItem(spec.title, spec.name)
            info = describe(spec)  # the list's tooltips: what each does and how long it takes
            self.experiment.setItemData(self.experiment.count() - 1,
                                        f"{info.description or spec.title}\nDuration: {info.duration or 'not measured yet'}",
                                        Qt.ItemDataRole.ToolTipRole)
        self.experiment.currentIndexChanged.connect(self._experiment_changed)
        self.out = QLineEdit(placeholderText=f"run folder (default {_home_relative(lab_runs_dir())}/<experiment>)")
        out_button = QPushButton("…")
        out_button.clicked.connect(self._choose_out)
        out_row = QHBoxLayout()
        out_row.addWidget(self.out, 1)
        out_row.addWidget(out_button)
        self.config = QLineEdit(placeholderText="run configuration (.toml)")
        self.config_button = QPushButton("…")
        self.config_button.clicked.connect(self._choose_config)
        config_row = QHBoxLayout()
        config_row.addWidget(self.config, 1)
        config_row.addWidget(self.config_button)
        self.shipped = QComboBox()
        self.shipped.setToolTip("The example configurations shipped with Symbiont")
        self.shipped.addItem("shipped examples…", "")
        for config in shipped_configs():
            self.shipped.addItem(config.name, str(config.path))
            self.shipped.setItemData(self.shipped.count() - 1, config.comment, Qt.ItemDataRole.ToolTipRole)
        self.shipped.currentIndexChanged.connect(self._shipped_chosen)
        config_row.addWidget(self.shipped)
        self.about = QLabel("")
        self.about.setWordWrap(True)
        self.about.setTextFormat(Qt.TextFormat.PlainText)
        self.extra = QLineEdit(placeholderText="more options, e.g. --seeds 3")
        form.addRow("experiment", self.experiment)
        form.addRow("", self.about)
        form.addRow("run folder", out_row)
        form.addRow("config", config_row)
        form.addRow("options", self.extra)
        self.start_button = QPushButton("Start")
        self.cancel_button = QPushButton("Cancel")
        self.resume_button = QPushButton("Resume")
        self.resume_button.setToolTip("Run the last command again into the same folder: only what is missing is computed")
        self.start_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.cancel)
        self.resume_button.clicked.connect(self.resume)
        buttons = QHBoxLayout()
        for button in (self.start_button, self.cancel_button, self.resume_button):
            buttons.addWidget(button)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.clock = ProgressClock()
        self.eta = QLabel("")
        self.status = QLabel("")
        self.status.setWordWrap(True)
        left = QVBoxLayout(controls)
        left.addLayout(form)
        left.addLayout(buttons)
        left.addWidget(self.progress)
        left.addWidget(self.eta)
        left.addWidget(self.status)
        left.addStretch(1)

        self.tabs = QTabWidget()
        curves = QWidget()
        self.group = QComboBox()
        self.group.currentIndexChanged.connect(self._show_group)
        self.plot = pg.PlotWidget()
        self.plot.setLabel("bottom", self.model.x_label)
        self.plot.showGrid(y=True, alpha=0.3)
        self.plot.getAxis("left").enableAutoSIPrefix(False)  # accuracies in 0..1 read as they are
        self.legend = self.plot.addLegend(offset=(5, 5))
        curves_layout = QVBoxLayout(curves)
        curves_layout.addWidget(self.group)
        curves_layout.addWidget(self.plot, 1)
        self.output = QPlainTextEdit(readOnly=True)
        self.output.setMaximumBlockCount(5000)
        self.report = QTextBrowser()
        self.report.setOpenExternalLinks(True)
        plots = QWidget()
        self.plot_choice = QComboBox()
        self.plot_choice.currentIndexChanged.connect(self._show_plot)
        self.plot_image = QLabel("no plots yet")
        self.plot_image.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.plot_scroll = scroll = QScrollArea()
        scroll.setWidget(self.plot_image)
        scroll.setWidgetResizable(True)
        plots_layout = QVBoxLayout(plots)
        plots_layout.addWidget(self.plot_choice)
        plots_layout.addWidget(scroll, 1)
        self.tabs.addTab(curves, "Curves")
        self.tabs.addTab(self.output, "Output")
        self.tabs.addTab(self.report, "Report")
        self.tabs.addTab(plots, "Plots")

        layout = QHBoxLayout(self)
        layout.addWidget(controls, 2)
        layout.addWidget(self.tabs, 5)
        self._unsubscribe = self.model.subscribe(self._on_model)
        app = QApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self.shutdown)
        self._experiment_changed()
        self._on_state()

    # -- actions ----------------------------------------------------------------------------------------------
    def _sync_model(self) -> None:
        self.model.experiment = self.experiment.currentData()
        self.model.out = self.out.text()
        self.model.config_path = self.config.text()
        self.model.extra_args = self.extra.text()

    def start(self) -> None:
        """Run the experiment in the form (into its folder: an unfinished run there resumes)."""
        if self.model.running:
            return
        self._sync_model()
        try:
            command = self.model.command()
        except LabInputError as exc:
            self.session.error(str(exc))
            return
        self._launch(command)

    def resume(self) -> None:
        command = self.model.resume_command()
        if command is None or self.model.running:
            return
        self._launch(command)

    def cancel(self) -> None:
        if self.process is None or not self.model.running:
            return
        self.model.cancelling()
        self.process.terminate()
        # the process object is the timer's context: once it is deleted (it finished), the timer is dropped
        QTimer.singleShot(KILL_AFTER_MS, self.process, self.process.kill)

    def shutdown(self) -> None:
        """The app quits: stop a running experiment (it resumes next time)."""
        if self.process is not None and self.process.state() != QProcess.NotRunning:
            self.model.cancelling()
            self.process.terminate()
            if not self.process.waitForFinished(3000):
                self.process.kill()
                self.process.waitForFinished(1000)

    def _launch(self, command: list[str]) -> None:
        process = QProcess(self)
        env = QProcessEnvironment.systemEnvironment()
        env.insert("PYTHONUNBUFFERED", "1")  # output arrives as it is printed
        env.insert("QT_QPA_PLATFORM", "offscreen")  # the lab renders its PNGs headless
        process.setProcessEnvironment(env)
        process.setProcessChannelMode(QProcess.MergedChannels)
        process.setProgram(command[0])
        process.setArguments(command[1:])
        process.readyReadStandardOutput.connect(lambda: self._read(process))
        process.finished.connect(lambda code, status: self._finished(process, code, status))
        process.errorOccurred.connect(lambda error: self._error(process, error))
        self.process = process
        self.clock = ProgressClock()  # ETA from this (re)start's rate: a resumed run starts part-way
        self.eta.setText("")
        self._clear_curves()
        self.model.started(command)
        self.model.append_output("$ " + " ".join(command) + "\n")
        process.start()
        self._timer.start()

    def _read(self, process: QProcess) -> None:
        data = bytes(process.readAllStandardOutput())
        if data:
            self.model.append_output(data.decode("utf-8", errors="replace"))

    def _finished(self, process: QProcess, code: int, status) -> None:
        if process is not self.process:
            return
        self._read(process)
        self._timer.stop()
        self.model.finished(code, crashed=status == QProcess.CrashExit)
        process.deleteLater()
        self.process = None

    def _error(self, process: QProcess, error) -> None:
        if process is self.process and error == QProcess.FailedToStart:
            self._timer.stop()
            self.model.failed_to_start(process.errorString())
            self.process = None

    def _choose_out(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Run folder", str(dialog_folder(lab_runs_dir(), create=True)))
        if folder:
            self.out.setText(folder)

    def _choose_config(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Run configuration", str(dialog_folder()),
                                              "TOML (*.toml);;All files (*)")
        if path:
            self.config.setText(path)

    def _experiment_changed(self) -> None:
        spec = EXPERIMENTS[self.experiment.currentData()]
        self.config.setEnabled(spec.needs_config)
        self.config_button.setEnabled(spec.needs_config)
        self.shipped.setEnabled(spec.needs_config and self.shipped.count() > 1)
        self._show_about()

    def _show_about(self) -> None:
        spec = EXPERIMENTS[self.experiment.currentData()]
        info = describe(spec)
        text = info.description or spec.title
        text += f"\nDuration: {info.duration or 'not measured yet'}."
        chosen = self.shipped.currentData()
        if spec.needs_config and chosen:
            comment = self.shipped.itemData(self.shipped.currentIndex(), Qt.ItemDataRole.ToolTipRole)
            text += f"\nConfiguration {self.shipped.currentText()}: {comment}"
        self.about.setText(text)

    def _shipped_chosen(self) -> None:
        path = self.shipped.currentData()
        if path:
            self.config.setText(path)
        self._show_about()

    # -- updates ----------------------------------------------------------------------------------------------
    def _on_model(self, what: str) -> None:
        if what == "state":
            self._on_state()
        elif what == "progress":
            self._on_progress()
        elif what == "output":
            self.output.setPlainText(self.model.output)
            self.output.verticalScrollBar().setValue(self.output.verticalScrollBar().maximum())
        elif what == "report":
            self._on_report()

    def _on_state(self) -> None:
        m = self.model
        self.start_button.setEnabled(not m.running)
        self.cancel_button.setEnabled(m.state == "running")
        self.resume_button.setEnabled(not m.running and m.last_command is not None and m.state != "finished")
        words = {"idle": "", "running": "running…", "cancelling": "cancelling…",
                 "finished": f"finished: {m.run_dir}", "failed": f"failed (exit code {m.exit_code}): see Output",
                 "cancelled": "cancelled: Resume continues where it stopped"}
        self.status.setText(words[m.state] + (f"\n{m.stage}: {m.message}" if m.stage and m.running else ""))
        if not m.running and m.total:
            self.eta.setText(f"overall: {m.fraction:.0%} done")

    def _clear_curves(self) -> None:
        for item in self._curves.values():
            self.legend.removeItem(item)
            self.plot.removeItem(item)
        self._curves.clear()
        self.group.clear()

    def _on_progress(self) -> None:
        m = self.model
        self.progress.setValue(int(1000 * m.fraction))
        self.progress.setFormat(f"{m.fraction:.0%}  ({m.done:g} / {m.total:g})" if m.total else "")
        if m.running and m.total:
            self.clock.update(m.fraction)
            self.eta.setText("overall: " + self.clock.describe())

        for name, (xs, ys) in m.series.items():
            item = self._curves.get(name)
            if item is None:  # made once per metric; later records only setData
                colour = series_colour(len(self._curves))
                item = self.plot.plot([], [], pen=pg.mkPen(colour, width=2), symbol="o", symbolSize=4,
                                      symbolBrush=colour, name=name)
                self._curves[name] = item
            item.setData(np.asarray(xs), np.asarray(ys))
        groups = m.curve_groups()
        known = [self.group.itemText(i) for i in range(self.group.count())]
        for key in sorted(groups, key=lambda k: (k != "accuracy", k != "loss")):  # accuracy first
            if key not in known:
                self.group.addItem(key)
                if key == "accuracy":
                    self.group.setCurrentText(key)
        self._show_group()
        self._on_state()

    def _show_group(self) -> None:
        names = set(self.model.curve_groups().get(self.group.currentText(), []))
        for name, item in self._curves.items():
            item.setVisible(name in names)
        self.plot.setLabel("left", self.group.currentText())
        self.plot.setLabel("bottom", self.model.x_label)
        self.plot.enableAutoRange()  # fit the shown curves only

    def _on_report(self) -> None:
        m = self.model
        if m.report_path is not None:
            self.report.setSearchPaths([str(m.report_path.parent)])  # the report's plots/… images
            self.report.setMarkdown(m.report_text)
            if m.state == "finished":
                self.tabs.setCurrentWidget(self.report)
        else:
            self.report.setPlainText("")
        self.plot_choice.clear()
        for path in m.plots:
            self.plot_choice.addItem(path.name, str(path))
        if not m.plots:
            self.plot_image.setText("no plots yet")

    def _show_plot(self) -> None:
        path = self.plot_choice.currentData()
        if path:
            pixmap = QPixmap(path)
            if pixmap.isNull():
                self.plot_image.setText(f"{path}: unreadable")
                return
            width = max(320, self.plot_scroll.viewport().width() - 8)
            if pixmap.width() > width:  # fit the panel's width; taller plots scroll
                pixmap = pixmap.scaledToWidth(width, Qt.TransformationMode.SmoothTransformation)
            self.plot_image.setPixmap(pixmap)


def _home_relative(folder) -> str:
    """``~/…`` for a folder in the home folder (shorter in a placeholder), else the full path."""
    from pathlib import Path

    try:
        return "~/" + str(Path(folder).relative_to(Path.home()))
    except ValueError:
        return str(folder)
