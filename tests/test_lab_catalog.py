"""The lab panel's catalogue: each experiment's description and duration, the shipped configurations
offered in the panel, and overall progress with an ETA (ProgressClock) shown while a run goes."""

from __future__ import annotations

import sys
import time

import pytest

from symbiont_app.session.lab import EXPERIMENTS
from symbiont_app.session.lab_catalog import ProgressClock, describe, format_duration, shipped_configs
from symbiont_lab.progress import ProgressLog


def test_every_experiment_is_described_with_a_duration_where_one_is_known():
    aux = describe(EXPERIMENTS["aux-logits"])
    assert aux.description.startswith("The auxiliary-logit") and "459 s" in aux.duration
    assert "7 min" in describe(EXPERIMENTS["negation"]).duration
    assert "68 min" in describe(EXPERIMENTS["subliminal"]).duration
    inversion = describe(EXPERIMENTS["inversion"])
    assert inversion.description.startswith("The inversion lab") and "~1 h" in inversion.duration
    for spec in EXPERIMENTS.values():  # labs added later get their docstring and title's estimate, or nothing
        info = describe(spec)
        assert isinstance(info.description, str) and isinstance(info.duration, str)


def test_shipped_configs_are_found_with_their_comment():
    configs = {c.name: c for c in shipped_configs()}
    assert {"ci_small", "owl"} <= set(configs)
    assert configs["ci_small"].path.is_file() and "68 min" in configs["ci_small"].comment


def test_progress_clock_eta_from_the_rate_since_the_start():
    clock = ProgressClock(start_time=100.0)
    assert clock.eta() is None
    clock.update(0.2, now=100.0)  # a resumed run: it starts at 20%
    assert clock.eta() is None and "ETA after the first progress" in clock.describe()
    clock.update(0.5, now=160.0)  # 30% in 60 s: 50% left takes 100 s
    assert clock.eta() == pytest.approx(100.0)
    assert clock.describe() == "50% done, 1 min 00 s elapsed, about 1 min 40 s left"
    assert format_duration(3 * 3600 + 5 * 60) == "3 h 05 min" and format_duration(42) == "42 s"


@pytest.mark.gui
def test_panel_offers_configs_descriptions_and_shows_the_eta(qtbot, tmp_path):
    from symbiont_app.session.session import AppSession
    from symbiont_app.session.settings import Settings
    from symbiont_app.widgets.lab import LabPanel

    class NoEngine:
        def new_id(self):
            return 1

    widget = LabPanel(AppSession(NoEngine(), Settings(path=tmp_path / "settings.json")))
    qtbot.addWidget(widget)
    assert "auxiliary-logit" in widget.about.text() and "Duration: 4–8 min" in widget.about.text()
    widget.experiment.setCurrentIndex(widget.experiment.findData("subliminal"))
    assert widget.shipped.isEnabled()
    widget.shipped.setCurrentIndex(widget.shipped.findText("ci_small"))
    assert widget.config.text().endswith("ci_small.toml") and "Configuration ci_small: A small end-to-end" in widget.about.text()
    widget._sync_model()
    assert widget.model.command()[3:6] == ["lab", "run", widget.config.text()]
    # a run's progress: overall percentage and an ETA from the rate since it (re)started
    log = ProgressLog(tmp_path)
    widget.model.started([sys.executable, "-m", "symbiont_app.cli", "lab", "aux-logits", "--out", str(tmp_path)])
    widget.clock = ProgressClock(start_time=time.monotonic() - 60)
    log.emit("start", 0, 10)
    widget.model.poll()
    log.emit("teacher", 5, 10, "epoch 1", loss=1.5)
    widget.model.poll()
    assert widget.progress.format().startswith("50%")
    assert widget.clock.eta() == pytest.approx(60.0, abs=5) and "left" in widget.eta.text()
    widget.model.finished(0)
    assert widget.eta.text() == "overall: 50% done"


@pytest.mark.gui
def test_every_listed_experiment_has_its_description_and_duration_as_tooltip(qtbot, tmp_path):
    from PySide6.QtCore import Qt

    from symbiont_app.session.session import AppSession
    from symbiont_app.session.settings import Settings
    from symbiont_app.widgets.lab import LabPanel

    class NoEngine:
        def new_id(self):
            return 1

    widget = LabPanel(AppSession(NoEngine(), Settings(path=tmp_path / "settings.json")))
    qtbot.addWidget(widget)
    assert widget.experiment.count() == len(EXPERIMENTS)
    for i in range(widget.experiment.count()):
        tip = widget.experiment.itemData(i, Qt.ItemDataRole.ToolTipRole)
        assert "Duration: " in tip
    negation = widget.experiment.findData("negation")
    assert "~7 min" in widget.experiment.itemData(negation, Qt.ItemDataRole.ToolTipRole)
