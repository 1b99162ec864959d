"""The app's lab panel: the Qt-free model (command, progress, report) and the widget running real
`symbiont lab aux-logits` processes (tiny settings) to completion, and cancelled then resumed."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from symbiont_app.session.lab import EXPERIMENTS, LabInputError, LabModel
from symbiont_lab.progress import PROGRESS_FILE, ProgressLog


class FakeSession:
    def __init__(self):
        self.errors = []

    def error(self, message, details=""):
        self.errors.append((message, details))


# -- the Qt-free model -------------------------------------------------------------------------------
def test_commands_for_each_experiment(tmp_path):
    model = LabModel(FakeSession())
    model.experiment, model.out, model.extra_args = "aux-logits", str(tmp_path / "a"), "--seeds 2 --aux '1,3'"
    assert model.command() == [sys.executable, "-m", "symbiont_app.cli", "lab", "aux-logits", "--out",
                               str(tmp_path / "a"), "--seeds", "2", "--aux", "1,3"]
    model.experiment, model.extra_args = "negation", ""
    assert model.command()[3:] == ["lab", "negation", "--out", str(tmp_path / "a")]
    model.experiment = "subliminal"
    with pytest.raises(LabInputError, match="choose a run configuration"):
        model.command()
    model.config_path = str(tmp_path / "missing.toml")
    with pytest.raises(LabInputError, match="missing.toml: no such configuration file"):
        model.command()
    (tmp_path / "run.toml").write_text("name = 'x'\n")
    model.config_path = str(tmp_path / "run.toml")
    assert model.command()[3:] == ["lab", "run", str(tmp_path / "run.toml"), "--out", str(tmp_path / "a")]
    model.extra_args = "--out elsewhere"
    with pytest.raises(LabInputError, match="run folder in its own field"):
        model.command()
    model.extra_args = "--seeds 'unclosed"
    with pytest.raises(LabInputError, match="extra options"):
        model.command()
    assert set(EXPERIMENTS) == {"aux-logits", "negation", "subliminal", "inversion", "emergence", "superposition", "probe",
                                "nmf"}
    model.experiment, model.config_path, model.extra_args = "emergence", "", "--p 13"
    assert model.command()[3:] == ["lab", "emergence", "--out", str(tmp_path / "a"), "--p", "13"]


def test_progress_is_tailed_into_fraction_and_curves(tmp_path):
    model = LabModel(FakeSession())
    seen = []
    model.subscribe(seen.append)
    log = ProgressLog(tmp_path)
    log.emit("start", 0, 10)
    model.started([sys.executable, "-m", "symbiont_app.cli", "lab", "aux-logits", "--out", str(tmp_path)])
    assert model.state == "running" and model.fraction == 0.0 and model.run_experiment == "aux-logits"
    log.emit("teacher", 4, 10, "epoch 1", loss=1.5, teacher_accuracy=0.5)
    with open(tmp_path / PROGRESS_FILE, "ab") as handle:
        handle.write(b'{"stage": "half a li')  # still being written
    assert model.poll() and model.fraction == pytest.approx(0.4)
    # x: the run's own progress count (4 of 10), not the record's number
    assert model.series == {"loss": ([4.0], [1.5]), "teacher_accuracy": ([4.0], [0.5])}
    assert model.x_label.startswith("run progress")
    assert not model.poll()  # nothing complete since
    log.emit("students", 10, 10, "epoch 1", loss=0.5, same_init_accuracy=0.3)
    assert model.poll() and model.stage == "students" and model.fraction == 1.0
    assert model.curve_groups() == {"loss": ["loss"], "accuracy": ["teacher_accuracy", "same_init_accuracy"]}
    assert "progress" in seen
    # a "step" metric is the x of the record's other metrics; "group: curve" names share a plot
    log.emit("train", 10, 10, "", step=250, **{"accuracy: main test": 0.75, "weight norm: main": 30.0,
                                              "weight norm: control": 41.0})
    assert model.poll() and model.series["weight norm: main"] == ([250.0], [30.0]) and "step" not in model.series
    assert model.x_label == "step"
    assert model.curve_groups()["weight norm"] == ["weight norm: main", "weight norm: control"]
    assert "accuracy: main test" in model.curve_groups()["accuracy"]

    (tmp_path / "report.md").write_text("# Report\n| m | seeds |\n")
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "sweep.png").write_bytes(b"\x89PNG")
    model.finished(0)
    assert model.state == "finished" and model.report_text.startswith("# Report")
    assert model.plots == [tmp_path / "plots" / "sweep.png"] and not model.session.errors


def test_a_failed_run_is_reported_in_the_window(tmp_path):
    model = LabModel(FakeSession())
    model.started([sys.executable, "-m", "symbiont_app.cli", "lab", "run", "x.toml", "--out", str(tmp_path)])
    model.append_output("symbiont: error: x.toml: no such file\n")
    model.finished(1)
    assert model.state == "failed" and model.run_experiment == "subliminal"
    (message, details), = model.session.errors
    assert "lab subliminal failed (exit code 1)" in message and "no such file" in details
    model.started(model.resume_command())
    model.cancelling()
    model.finished(15, crashed=True)  # SIGTERM: not an error
    assert model.state == "cancelled" and len(model.session.errors) == 1


# -- the widget, with real lab processes ------------------------------------------------------------------
TINY = "--seeds 2 --aux 2,3 --epochs 1 --hidden 16 --quiet"


@pytest.fixture()
def panel(qtbot, tmp_path):
    from symbiont_app.session.session import AppSession
    from symbiont_app.session.settings import Settings
    from symbiont_app.widgets.lab import LabPanel

    class NoEngine:
        def new_id(self):
            return 1

    session = AppSession(NoEngine(), Settings(path=tmp_path / "settings.json"))
    widget = LabPanel(session)
    qtbot.addWidget(widget)
    yield widget, session
    widget.shutdown()


@pytest.mark.gui
def test_panel_runs_aux_logits_to_completion_and_shows_the_report(panel, qtbot, tmp_path):
    widget, session = panel
    assert widget.experiment.currentData() == "aux-logits"
    widget.out.setText(str(tmp_path / "run"))
    widget.extra.setText(TINY)
    widget.start()
    assert widget.model.running and not widget.start_button.isEnabled()
    qtbot.waitUntil(lambda: widget.model.state == "finished", timeout=120_000)
    assert session.last_error is None, session.last_error
    assert widget.progress.value() == 1000
    assert "same init (published)" in widget.report.toPlainText()  # the sweep table, rendered
    assert widget.tabs.currentWidget() is widget.report
    assert [widget.plot_choice.itemText(i) for i in range(widget.plot_choice.count())] == ["sweep.png", "training.png"]
    assert widget.plot_image.pixmap() is not None and not widget.plot_image.pixmap().isNull()
    curves = widget._curves
    assert {"loss", "teacher_accuracy", "same_init_accuracy"} <= set(curves)
    assert len(curves["loss"].getData()[0]) == len(widget.model.series["loss"][0]) > 0
    assert "lab aux-logits" in widget.output.toPlainText()


@pytest.mark.gui
def test_panel_cancel_then_resume_completes(panel, qtbot, tmp_path, monkeypatch):
    import symbiont_app.widgets.lab as lab_widget

    monkeypatch.setattr(lab_widget, "KILL_AFTER_MS", 300)  # the kill timer fires after the process is gone
    widget, session = panel
    out = tmp_path / "run"
    widget.out.setText(str(out))
    widget.extra.setText("--seeds 3 --aux 2,3,5 --epochs 2 --hidden 32 --chunk-seeds 1 --no-plots")
    widget.start()
    first = out / "results" / "m002" / "seed_000.json"
    qtbot.waitUntil(first.exists, timeout=120_000)
    widget.cancel()
    qtbot.waitUntil(lambda: widget.model.state == "cancelled", timeout=30_000)
    qtbot.wait(600)  # a kill timer outliving its (deleted) process would raise in the event loop here
    assert session.last_error is None and widget.resume_button.isEnabled()
    done_before = sorted(p.relative_to(out) for p in (out / "results").rglob("*.json"))
    assert 1 <= len(done_before) < 9
    widget.resume()
    qtbot.waitUntil(lambda: widget.model.state == "finished", timeout=120_000)
    assert session.last_error is None, session.last_error
    assert "already done" in widget.model.output  # the resumed run skipped the saved seeds
    assert len(list((out / "results").rglob("*.json"))) == 9
    assert "## Did the published effects reproduce?" in widget.model.report_text
    assert widget.progress.value() == 1000 and not widget.resume_button.isEnabled()


def test_frozen_entry_runs_cli_sub_commands(capsys):
    from symbiont_app.frozen_main import main

    with pytest.raises(SystemExit) as info:
        main(["--cli", "lab", "aux-logits", "--help"])
    assert info.value.code == 0 and "--mnist DIR" in capsys.readouterr().out


@pytest.mark.gui
@pytest.mark.slow
def test_panel_runs_emergence_with_curves_against_the_training_step(panel, qtbot, tmp_path):
    widget, session = panel
    widget.experiment.setCurrentIndex(widget.experiment.findData("emergence"))
    widget.out.setText(str(tmp_path / "run"))
    widget.extra.setText("--p 11 --steps 60 --no-language-model --prompts 16 --n-boot 50 --quiet")
    widget.start()
    qtbot.waitUntil(lambda: widget.model.state == "finished", timeout=180_000)
    assert session.last_error is None, session.last_error
    xs, ys = widget.model.series["accuracy: grokking test"]
    assert xs == [0.0, 50.0, 60.0] and len(ys) == 3  # x is the step the lab reported
    groups = widget.model.curve_groups()
    assert {"accuracy", "log10 loss", "weight norm", "Fourier sparsity", "EI bits"} <= set(groups)
    assert len(groups["weight norm"]) == 3  # one curve per arm, in one plot
    assert "## Did the published grokking effects reproduce?" in widget.model.report_text
    assert "accuracy.png" in [widget.plot_choice.itemText(i) for i in range(widget.plot_choice.count())]
