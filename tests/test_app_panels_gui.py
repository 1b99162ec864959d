"""The meters, steering, SAE and lens panels (offscreen Qt): against a scripted fake engine whose
events the test feeds in strict order, and end to end against the real engine thread on the
tiny model and on the default model with the shipped SAE."""

from __future__ import annotations


import numpy as np
import pytest
from app_fakes import RecordingEngine
from PySide6.QtCore import Qt

from mlx_hooks.generate import GenerationStep
from mlx_hooks.sae.meters import LatentValue, MeterReading
from symbiont_app.engine.handlers.lens.messages import LensComputed, PatchingComputed
from symbiont_app.engine.handlers.sae.messages import (
    ContextRow, ContrastFound, GetLatentRecord, LatentRecord, SaeLoaded, SaeTrained, TrainSae, WatchedChanged,
    WatchLatents,
)
from symbiont_app.engine.handlers.steering.messages import (
    BuildVector, ClampLatent, InterventionInfo, InterventionsChanged, RemoveIntervention, SetEnabled, SetPositions,
    SetValue,
)
from symbiont_app.engine.handlers.chat.messages import ReplyStarted, TokenStep
from symbiont_app.engine.protocol import Finished, Progress
from symbiont_app.session.session import AppSession
from symbiont_app.session.settings import Settings

pytestmark = pytest.mark.gui

LABELS = tuple(f"label {i}" for i in range(40))


@pytest.fixture()
def fake(tmp_path):
    engine = RecordingEngine()
    return engine, AppSession(engine, Settings(path=tmp_path / "settings.json"))


def _sae_loaded(session, rid=900):
    freq = np.linspace(0.5, 0.01, len(LABELS)).astype(np.float32)
    session.handle_event(SaeLoaded(
        request_id=rid, sae_id="toy-sae", path="/x/toy", hook_point="resid_post.1", d_in=64, d_sae=len(LABELS),
        architecture="topk", k=4, labels=LABELS, frequencies=freq, max_activations=np.ones(len(LABELS), np.float32),
        messages=()))


def _token(session, rid, index, top, watched=None):
    reading = MeterReading(tuple(LatentValue(i, v, LABELS[i]) for i, v in top), dict(watched or {}), len(top))
    step = GenerationStep(index, 10 + index, 65 + index, chr(65 + index), 0.5, 0.5, 1.0, 1.0, (), {},
                          {"sae": reading})
    session.handle_event(TokenStep(request_id=rid, step=step, logprobs=None))


def test_meters_panel_bars_record_and_actions(qtbot, fake):
    from symbiont_app.widgets.meters import MetersPanel

    engine, session = fake
    panel = MetersPanel(session)
    qtbot.addWidget(panel)
    assert panel.table.rowCount() == 0 and "load an SAE" in panel.header.text()
    _sae_loaded(session)
    session.handle_event(ReplyStarted(request_id=1, prompt_tokens=10, user_text="hi"))
    _token(session, 1, 0, [(3, 2.0), (7, 1.0)])
    _token(session, 1, 1, [(7, 4.0), (5, 0.5), (3, 0.25)])
    assert panel.reading_redraw.pending  # per-token readings are coalesced into one redraw
    panel.flush()
    # The newest token's latents, strongest first, with their labels
    assert [panel.table.item(r, 0).text() for r in range(3)] == ["7", "5", "3"]
    assert panel.table.item(0, 2).text() == "label 7"
    np.testing.assert_allclose(panel.bars.opts["width"], [4.0, 0.5, 0.25])
    # Clicking a token in the chat moves the meters to it
    session.conversation.selected_position = 10
    panel.flush()
    assert [panel.table.item(r, 0).text() for r in range(panel.table.rowCount())] == ["3", "7"]
    # Click a latent -> its record is asked for, then shown
    qtbot.mouseClick(panel.table.viewport(), Qt.LeftButton, pos=panel.table.visualItemRect(panel.table.item(1, 0)).center())
    assert isinstance(engine.live[-1], GetLatentRecord) and engine.live[-1].latent == 7  # live: answered mid-reply
    session.handle_event(LatentRecord(
        request_id=engine.live[-1].request_id, latent=7, label="label 7", has_record=True, frequency=0.1,
        max_activation=5.0, mean_activation=2.0,
        contexts=(ContextRow(value=4.5, before="the quick ", focus="fox", after=" jumps"),), promoted=(("fox", 1.5),),
        suppressed=(), auto_label="label 7", user_label=""))
    assert "fox" in panel.record.toPlainText() and "latent 7" in panel.record.toPlainText()
    # Watch, clamp and ablate are live requests for the selected latent
    assert panel.actions.latent.value() == 7
    panel.actions.watch_button.click()
    assert engine.live[-1] == WatchLatents(request_id=engine.live[-1].request_id, latents=(7,), watch=True)
    session.handle_event(WatchedChanged(request_id=engine.live[-1].request_id, watched=(7,)))
    assert panel.actions.watch_button.text() == "Unwatch" and 7 in panel.curves
    _token(session, 1, 2, [(1, 1.0)], watched={7: 0.75})
    panel.flush()
    x, y = panel.curves[7].getData()
    np.testing.assert_allclose(y, [1.0, 4.0, 0.75])  # from the tops before watching, then the watched value
    panel.actions.value.setValue(3.0)
    panel.actions.mode.setCurrentText("max_multiple")
    panel.actions.clamp_button.click()
    assert engine.live[-1] == ClampLatent(request_id=engine.live[-1].request_id, latent=7, value=3.0,
                                          mode="max_multiple", positions="all")
    panel.actions.ablate_button.click()
    assert engine.live[-1] == ClampLatent(request_id=engine.live[-1].request_id, latent=7, value=0.0, mode="absolute",
                                          positions="all")


def _items():
    return (InterventionInfo(name="happy", kind="vector", hook_point="resid_post.15", value=0.2, enabled=True,
                             positions="all", relative=True, mode="absolute", latent=None, label="", sae_id="",
                             detail="mean_diff"),
            InterventionInfo(name="latent-7", kind="clamp", hook_point="resid_post.15", value=3.0, enabled=True,
                             positions="generated", relative=False, mode="max_multiple", latent=7, label="label 7",
                             sae_id="toy-sae", detail=""))


def test_steering_panel_rows_are_live_controls(qtbot, fake):
    from symbiont_app.widgets.steering import SteeringPanel

    engine, session = fake
    panel = SteeringPanel(session)
    qtbot.addWidget(panel)
    assert panel.empty.isVisibleTo(panel)
    session.handle_event(InterventionsChanged(request_id=1, items=_items(), message=""))
    assert list(panel.rows) == ["happy", "latent-7"] and not panel.empty.isVisibleTo(panel)
    assert engine.live == []  # showing the engine's state sends nothing back
    row = panel.rows["happy"]
    assert row.slider_value() == pytest.approx(0.2, abs=1e-3)
    row.slider.setValue(row.slider.value() + 100)  # +0.1 of the ±1 range
    assert isinstance(engine.live[-1], SetValue) and engine.live[-1].value == pytest.approx(0.3, abs=1e-3)
    row.enabled.setChecked(False)
    assert engine.live[-1] == SetEnabled(request_id=engine.live[-1].request_id, name="happy", enabled=False)
    clamp_row = panel.rows["latent-7"]
    assert clamp_row.positions.currentText() == "generated" and "× max activation" in clamp_row.detail.text()
    clamp_row.positions.setEditText("3,4")
    clamp_row.positions.lineEdit().editingFinished.emit()
    assert engine.live[-1] == SetPositions(request_id=engine.live[-1].request_id, name="latent-7", positions=(3, 4))
    clamp_row.positions.setEditText("everywhere")
    clamp_row.positions.lineEdit().editingFinished.emit()
    assert "positions 'everywhere'" in session.last_error.message
    clamp_row.remove_button.click()
    assert engine.live[-1] == RemoveIntervention(request_id=engine.live[-1].request_id, name="latent-7")
    session.handle_event(InterventionsChanged(request_id=2, items=_items()[:1], message="removed latent-7"))
    assert list(panel.rows) == ["happy"] and panel.status.text() == "removed latent-7"
    # Building: no prompts -> an error in the window, nothing sent; a contrast set -> a request
    panel.build()
    assert "positive and one negative" in session.last_error.message and not engine.submitted
    panel.contrast.setCurrentText("happy_sad")
    panel.layer.setValue(3)
    panel.build()
    request = engine.submitted[-1]
    assert isinstance(request, BuildVector) and request.contrast_set == "happy_sad" and request.layer == 3
    assert not panel.build_button.isEnabled()
    session.handle_event(Finished(request_id=request.request_id, reason="done"))
    assert panel.build_button.isEnabled()


def test_sae_panel_search_and_cancelled_training(qtbot, fake, tmp_path):
    from symbiont_app.widgets.sae import SaePanel

    engine, session = fake
    panel = SaePanel(session)
    qtbot.addWidget(panel)
    _sae_loaded(session)
    assert panel.table.rowCount() == len(LABELS) and "toy-sae" in panel.summary.text()
    panel.search.setText("label 12")
    assert panel.table.item(0, 0).text() == "12"
    panel.search.setText("31")
    assert [panel.table.item(r, 0).text() for r in range(panel.table.rowCount())] == ["31"]
    # Contrast search: prompts from both boxes go out; the answer fills the table
    panel.texts_a.setPlainText("happy\nglad")
    panel.texts_b.setPlainText("sad")
    panel.contrast_button.click()
    request = engine.submitted[-1]
    assert request.texts_a == ("happy", "glad") and request.texts_b == ("sad",)
    session.handle_event(ContrastFound(request_id=request.request_id, latents=((4, 0.5, 0.1, 0.4, "label 4"),)))
    assert panel.table.rowCount() == 1 and panel.table.item(0, 2).text() == "+0.4000"
    # Training: progress and metrics stream in; a cancel drops whatever result was still in flight
    panel.out.setText(str(tmp_path / "new-sae"))
    panel.train_button.click()
    request = engine.submitted[-1]
    assert isinstance(request, TrainSae) and request.out == str(tmp_path / "new-sae")
    rid = request.request_id
    assert not panel.train_button.isEnabled() and panel.cancel_button.isEnabled()
    session.handle_event(Progress(request_id=rid, done=3, total=10, message="activations",
                                  metrics={"stage": "activations"}))
    assert panel.progress.value() == 300
    for step in (50, 100):
        session.handle_event(Progress(request_id=rid, done=step, total=200, message="training", metrics={
            "stage": "training", "step": step, "mse": 1 / step, "variance_explained": step / 200, "l0": 30.0,
            "dead_fraction": 0.1}))
    assert panel.progress.value() == 500 and "variance explained 0.500" in panel.progress_label.text()
    np.testing.assert_allclose(panel.ve_curve.getData()[1], [0.25, 0.5])
    panel.cancel_button.click()
    assert engine.cancelled == [rid]
    session.handle_event(Progress(request_id=rid, done=150, total=200, message="training",
                                  metrics={"stage": "training", "step": 150, "mse": 0.1,
                                                               "variance_explained": 0.9, "l0": 30.0,
                                                               "dead_fraction": 0.0}))
    session.handle_event(SaeTrained(request_id=rid, out=str(tmp_path / "new-sae"), finished=True, run_dir="run",
                                    evaluation={"variance_explained": 0.9}))
    session.handle_event(Finished(request_id=rid, reason="done"))  # it had finished before the cancel arrived
    assert panel.model.train_result is None and len(panel.model.train_metrics["step"]) == 2
    assert "resume" in panel.status.text() and panel.train_button.isEnabled()


def test_lens_panel_heatmap_column_and_patching(qtbot, fake):
    from symbiont_app.widgets.lens import LensPanel

    engine, session = fake
    panel = LensPanel(session)
    qtbot.addWidget(panel)
    probs = np.sort(np.random.default_rng(0).random((3, 4, 2)), axis=-1)[..., ::-1].astype(np.float32)
    texts = tuple(tuple(tuple(f"L{p}T{t}k{j}" for j in range(2)) for t in range(4)) for p in range(3))
    rid = panel.model.run_lens()
    assert engine.submitted[-1].request_id == rid
    session.handle_event(LensComputed(
        request_id=rid, points=("resid_post.0", "resid_post.1", "resid_post.2"), positions=np.arange(6, 10),
        tokens=("a", "b", "c", "d"), top_texts=texts, top_probs=probs, target_probs=None, source="re-run of 10 tokens"))
    np.testing.assert_allclose(panel.lens_map.image.image, probs[:, :, 0].T)
    assert [c[2] for c in panel.lens_map.texts.cells[:2]] == ["L0T0k0", "L0T1k0"]
    assert len(panel.lens_map.texts.cells) == 12
    assert not panel.lens_map.grab().isNull()  # paints
    assert panel.column.item(2, 0).text().startswith("L2T3k0")  # no token selected: the last column
    session.conversation.selected_position = 7
    assert panel.column.item(0, 1).text().startswith("L0T1k1") and "position 7" in panel.column_title.text()
    assert panel.lens_map.marker.value() == 1.5
    assert "re-run of 10 tokens" in panel.status.text()
    panel.run_patching()
    patch = engine.submitted[-1]
    assert patch.clean == "The capital of France is" and patch.clean_answer == " Paris"
    scores = np.array([[0.0, 1.0], [0.5, 0.25]], dtype=np.float32)
    session.handle_event(PatchingComputed(
        request_id=patch.request_id, layers=(0, 1), scores=scores, tokens=("x", "z"), clean_tokens=("x", "y"),
        clean_logit_diff=2.0, corrupted_logit_diff=-1.0, answers=(" Paris", " Rome"), kind="resid_pre", notes=()))
    np.testing.assert_allclose(panel.patch_map.image.image, scores.T)
    assert "clean logit diff +2.000" in panel.status.text()


# -- end to end ----------------------------------------------------------------------------------------
def _window(qtbot, spec, tmp_path, monkeypatch):
    monkeypatch.setenv("SYMBIONT_CONFIG_DIR", str(tmp_path / "config"))
    from symbiont_app.gui import build_window

    window = build_window(spec)
    qtbot.addWidget(window)
    qtbot.waitUntil(lambda: window.session.model_info is not None, timeout=120000)
    return window


def _idle(qtbot, window, timeout=120000):
    qtbot.waitUntil(lambda: not window.session.active, timeout=timeout)


def _reply(qtbot, window, text, max_tokens):
    chat = window.chat
    chat.temp.setValue(0.0)
    chat.max_tokens.setValue(max_tokens)
    chat.entry.setText(text)
    rid = chat.send()
    assert rid is not None
    _idle(qtbot, window)
    return [t for t in window.session.conversation.tokens if t.turn == len(window.session.conversation.turns) - 1]


def test_end_to_end_tiny_model(qtbot, tiny_folder, tmp_path, monkeypatch):
    folder = _tiny_sae(tmp_path)  # before the engine thread starts: MLX is used by one thread at a time
    window = _window(qtbot, str(tiny_folder), tmp_path, monkeypatch)
    sae_panel, meters, steering = window.panels["sae"], window.panels["meters"], window.panels["steering"]
    sae_panel.available.setEditText(str(folder))
    sae_panel.load_button.click()
    _idle(qtbot, window)
    assert sae_panel.model.info is not None and sae_panel.table.rowCount() > 0
    _reply(qtbot, window, "hello", 4)
    qtbot.waitUntil(lambda: meters.table.rowCount() > 0, timeout=2000)  # meters show latents (coalesced redraw)
    steering.positive.setPlainText("I love it\ngreat")
    steering.negative.setPlainText("I hate it\nawful")
    steering.layer.setValue(1)
    steering.coefficient.setValue(0.0)
    steering.build()
    _idle(qtbot, window)
    row = steering.rows["steering"]
    window.chat.reset()
    _idle(qtbot, window)
    first = _reply(qtbot, window, "hi", 1)
    before = window.session.conversation.logprobs_at(first[0].position)
    row.slider.setValue(row.slider.value() + 500)  # live: +0.5 × typical norm
    qtbot.waitUntil(lambda: steering.model.items[0].value > 0.4, timeout=30000)
    window.chat.reset()
    _idle(qtbot, window)
    second = _reply(qtbot, window, "hi", 1)
    after = window.session.conversation.logprobs_at(second[0].position)
    assert np.abs(after - before).max() > 1e-3  # the next token's logits moved
    lens = window.panels["lens"]
    assert lens.model.lens is not None and lens.lens_map.image.image is not None  # ran after the reply
    window.close()


def _tiny_sae(tmp_path):
    import mlx.core as mx

    from mlx_hooks.sae.formats import save_sae
    from mlx_hooks.sae.model import SAE, SAEConfig

    # The engine loads its own copy from disk.
    mx.random.seed(5)
    sae = SAE(SAEConfig(d_in=64, d_sae=32, architecture="topk", k=4, hook_point="resid_post.1", sae_id="tiny-e2e"))
    mx.eval(sae.parameters())
    save_sae(sae, tmp_path / "tiny-sae")
    return tmp_path / "tiny-sae"


@pytest.mark.integration
def test_end_to_end_default_model_with_shipped_sae(qtbot, tmp_path, monkeypatch):
    from conftest import default_model_available

    if not default_model_available():
        pytest.skip("the default model is not installed")
    window = _window(qtbot, "default", tmp_path, monkeypatch)
    session = window.session
    sae_panel, meters, steering = window.panels["sae"], window.panels["meters"], window.panels["steering"]
    assert sae_panel.model.available, "the shipped SAE is found by the registry"
    sae_panel.load(sae_panel.model.available[0].sae_id)
    window.panels["lens"].model.auto_update = False  # keep this test short
    _idle(qtbot, window)
    assert sae_panel.model.info.d_sae == 4608 and any(sae_panel.model.info.labels)
    before = [t.token for t in _reply(qtbot, window, "Name a colour.", 8)]
    qtbot.waitUntil(lambda: meters.table.rowCount() > 0, timeout=2000)  # coalesced redraw
    assert meters.table.item(0, 2).text()  # labelled latents
    latent = int(meters.table.item(0, 0).text())
    meters.model.select(latent)
    meters.actions.value.setValue(10.0)
    meters.actions.mode.setCurrentText("max_multiple")
    meters.actions.clamp_button.click()
    qtbot.waitUntil(lambda: len(steering.model.items) == 1, timeout=30000)
    window.chat.reset()
    _idle(qtbot, window)
    after = [t.token for t in _reply(qtbot, window, "Name a colour.", 8)]
    assert after != before  # the clamp changed the reply (greedy)
    # Export a preset, remove the clamp, import it back: the same interventions are active
    items = steering.model.items
    steering.model.export_preset(str(tmp_path / "clamp.symbiont-preset"), "clamp")
    _idle(qtbot, window)
    steering.rows[items[0].name].remove_button.click()
    qtbot.waitUntil(lambda: not steering.model.items, timeout=30000)
    steering.model.import_preset(str(tmp_path / "clamp.symbiont-preset"))
    _idle(qtbot, window)
    assert steering.model.items == items and "exact match" in steering.status.text()
    # A steering vector from two prompt lists; its slider moves the next token's logits
    steering.rows[items[0].name].enabled.setChecked(False)  # the clamp off: only the vector acts
    steering.positive.setPlainText("I am so happy today!")
    steering.negative.setPlainText("I am so sad today.")
    steering.layer.setValue(15)
    steering.coefficient.setValue(0.0)
    steering.build()
    _idle(qtbot, window)
    window.chat.reset()
    _idle(qtbot, window)
    first = _reply(qtbot, window, "Today I feel", 1)[0]
    before = session.conversation.logprobs_at(first.position)
    row = steering.rows["steering"]
    row.slider.setValue(row._ticks(0.3))
    qtbot.waitUntil(lambda: abs(steering.model.item("steering").value - 0.3) < 0.01, timeout=30000)
    window.chat.reset()
    _idle(qtbot, window)
    second = _reply(qtbot, window, "Today I feel", 1)[0]
    assert np.abs(session.conversation.logprobs_at(second.position) - before).max() > 0.1
    window.close()
