"""The feature dashboard: a latent's label and its source, the user's label (saved, survives a
reload), activation density, top contexts, logit effects, and clamped/ablated latents marked in
the meters. Against a recording fake engine, and end to end on the tiny model with an SAE whose
feature records were built here."""

from __future__ import annotations


import numpy as np
import pytest
from app_fakes import RecordingEngine

from symbiont_app.engine.handlers.sae_dashboard.messages import (
    GetLatentDensity, LatentDensity, LatentLabelChanged, SetLatentLabel,
)
from symbiont_app.engine.handlers.sae.messages import ContextRow, LatentRecord
from symbiont_app.engine.handlers.steering.messages import InterventionInfo, InterventionsChanged
from symbiont_app.session.dashboard import AUTO_LABEL_SOURCE
from symbiont_app.session.session import AppSession
from symbiont_app.session.settings import Settings

pytestmark = pytest.mark.gui


def test_dashboard_shows_a_latent_and_saves_the_users_label(qtbot, tmp_path):
    from test_app_panels_gui import _sae_loaded, _token

    from symbiont_app.engine.handlers.chat.messages import ReplyStarted
    from symbiont_app.widgets.dashboard import DashboardPanel
    from symbiont_app.widgets.meters import MetersPanel

    engine = RecordingEngine()
    session = AppSession(engine, Settings(path=tmp_path / "settings.json"))
    panel = DashboardPanel(session)
    meters = MetersPanel(session)
    qtbot.addWidget(panel)
    qtbot.addWidget(meters)
    assert not panel.isEnabled() and "load an SAE" in panel.title.text()
    _sae_loaded(session)
    panel.latent.setValue(7)
    panel.show_button.click()
    assert engine.live[-1].latent == 7  # the record is asked for (live)
    density_request = engine.submitted[-1]
    assert isinstance(density_request, GetLatentDensity) and density_request.latent == 7
    session.handle_event(LatentRecord(
        request_id=engine.live[-1].request_id, latent=7, label="fox → jumps", has_record=True, frequency=0.02,
        max_activation=5.0, mean_activation=2.0,
        contexts=(ContextRow(value=5.0, before="the quick ", focus="fox", after=" jumps"),
                  ContextRow(value=1.0, before="a ", focus="fox", after="!")),
        promoted=(("jumps", 1.5), (" runs", 0.75)), suppressed=(("sleeps", -1.25),), auto_label="fox → jumps",
        user_label=""))
    assert "latent 7" in panel.title.text() and "fox → jumps" in panel.title.text()
    assert panel.source.text() == AUTO_LABEL_SOURCE and "tokens it fires on most" in panel.source.text()
    assert "2.000% of the records" in panel.stats.text()
    from symbiont_app.widgets.dashboard import contexts_html

    shown = contexts_html(session.sae.record)
    assert "the quick fox jumps" in panel.contexts.toPlainText()
    assert "rgba(255,170,40,1.00)" in shown and "rgba(255,170,40,0.40)" in shown  # shade = 0.25 + 0.75 value / max
    np.testing.assert_allclose(panel.promoted_bars.opts["width"], [1.5, 0.75])
    np.testing.assert_allclose(panel.suppressed_bars.opts["width"], [-1.25])
    # density arrives
    edges = np.linspace(0, 5, 6)
    session.handle_event(LatentDensity(request_id=density_request.request_id, latent=7, edges=edges,
                                       counts=np.array([3, 2, 0, 1, 1]), n_tokens=700, n_active=7, corpus="test text"))
    np.testing.assert_allclose(panel.density_bars.opts["height"], [3, 2, 0, 1, 1])
    np.testing.assert_allclose(panel.density_bars.opts["x"], [0.5, 1.5, 2.5, 3.5, 4.5])
    assert "1.00% of 700 tokens" in panel.density_plot.getPlotItem().titleLabel.text
    # the user's label
    panel.user_label.setText("  animal subject ")
    panel.save_button.click()
    request = engine.submitted[-1]
    assert request == SetLatentLabel(request_id=request.request_id, latent=7, text="animal subject")
    session.handle_event(LatentLabelChanged(request_id=request.request_id, latent=7, label="animal subject",
                                            source="user", path="/x/toy/labels.json"))
    assert session.sae.info.labels[7] == "animal subject" and "animal subject" in panel.title.text()
    assert panel.source.text() == "your label (saved in /x/toy/labels.json)"
    # clamped / ablated latents are marked in the meters and on the dashboard
    session.handle_event(ReplyStarted(request_id=1, prompt_tokens=10, user_text="hi"))
    _token(session, 1, 0, [(7, 4.0), (5, 0.5), (3, 0.25)])
    session.handle_event(InterventionsChanged(request_id=2, message="", items=(
        InterventionInfo(name="latent-7", kind="clamp", hook_point="resid_post.1", value=0.0, enabled=True,
                         positions="all", relative=False, mode="absolute", latent=7, label="", sae_id="toy-sae",
                         detail=""),
        InterventionInfo(name="latent-5", kind="clamp", hook_point="resid_post.1", value=3.0, enabled=True,
                         positions="all", relative=False, mode="max_multiple", latent=5, label="", sae_id="toy-sae",
                         detail=""))))
    meters.flush()
    assert [meters.table.item(r, 3).text() for r in range(3)] == ["ablated", "clamped to 3 × max", ""]
    brushes = meters.bars.opts["brushes"]
    assert [b for b in brushes] == ["#d62728", "#ff7f0e", "#4c72b0"]
    ticks = meters.bars_plot.getAxis("left")._tickLevels[0]
    assert ticks[0][1].startswith("⊘ 7") and ticks[1][1].startswith("⇥ 5") and ticks[2][1].startswith("3 ")
    assert "[ablated]" in panel.title.text()


def _sae_with_records(tmp_path, folder_name="tiny-sae"):
    """A tiny TopK SAE at resid_post.1 of the tiny llama, with feature records built on a few texts."""
    import mlx.core as mx
    from conftest import make_byte_tokenizer, make_tiny_llama

    from mlx_hooks.sae.features import build_feature_records
    from mlx_hooks.sae.formats import save_sae
    from mlx_hooks.sae.model import SAE, SAEConfig

    mx.random.seed(5)
    sae = SAE(SAEConfig(d_in=64, d_sae=32, architecture="topk", k=4, hook_point="resid_post.1", sae_id="tiny-dash"))
    mx.eval(sae.parameters())
    folder = tmp_path / folder_name
    save_sae(sae, folder)
    texts = ["the quick brown fox jumps over the lazy dog", "hello world, hello again", "one two three four five"]
    records = build_feature_records(sae, make_tiny_llama(), make_byte_tokenizer(), texts, max_seq_len=32,
                                    folder=folder)
    return folder, records


def test_dashboard_end_to_end_tiny_model(qtbot, tiny_folder, tmp_path, monkeypatch):
    """Real engine: density from the built-in prompts, the user's label written to labels.json and
    kept across a reload of the SAE, the record's label source, an ablation marked in the meters."""
    monkeypatch.setenv("SYMBIONT_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("SYMBIONT_DATA_DIR", str(tmp_path / "data"))
    folder, records = _sae_with_records(tmp_path)  # before the engine thread starts
    from symbiont_app.gui import build_window

    window = build_window(str(tiny_folder))
    qtbot.addWidget(window)
    qtbot.waitUntil(lambda: window.session.model_info is not None, timeout=120000)
    session = window.session
    idle = lambda: qtbot.waitUntil(lambda: not session.active, timeout=120000)  # noqa: E731
    sae_panel, dashboard, meters = window.panels["sae"], window.panels["dashboard"], window.panels["meters"]
    sae_panel.load(str(folder))
    idle()
    latent = int(np.argmax([r.frequency for r in records.records]))
    dashboard.latent.setValue(latent)
    dashboard.show_button.click()
    idle()
    qtbot.waitUntil(lambda: dashboard.model.record is not None and dashboard.model.density is not None, timeout=60000)
    record, density = dashboard.model.record, dashboard.model.density
    assert record.auto_label == records.records[latent].auto_label and record.user_label == ""
    assert dashboard.source.text() == AUTO_LABEL_SOURCE
    assert density.n_tokens > 1000 and 0 < density.n_active == int(density.counts.sum()) <= density.n_tokens
    assert density.edges[0] == 0 and len(density.counts) == 40
    assert len(dashboard.density_bars.opts["height"]) == 40
    # the same values the engine computes, checked independently: encode the built-in prompts here
    import mlx.core as mx
    from conftest import make_byte_tokenizer, make_tiny_llama

    from mlx_hooks import hooked
    from mlx_hooks.sae.corpus import builtin_prompts
    from mlx_hooks.sae.formats import load_sae

    # the tiny_folder model is conftest's tiny llama with seed 0 (save_tiny_folder)
    model, tokenizer = make_tiny_llama(), make_byte_tokenizer()
    sae = load_sae(folder, model, attach_records=False)
    active = total = 0
    prompts = builtin_prompts()
    per_text = np.zeros((len(prompts), 32), np.float32)  # [texts, latents] largest value in each text
    for t, text in enumerate(prompts):
        ids = tokenizer.encode(text)
        for start in range(0, len(ids), 64):
            piece = ids[start:start + 64]
            if len(piece) < 2:
                continue
            with hooked(model, capture=["resid_post.1"]) as hs:
                model(mx.array([piece]))
                acts = hs.recorder.stack("resid_post.1")[0, 1:]  # the first position of each window skipped
            every = np.array(sae.encode(acts.astype(mx.float32)))  # [L, 32]
            per_text[t] = np.maximum(per_text[t], every.max(axis=0))
            values = every[:, latent]
            active += int((values > 0).sum())
            total += values.shape[0]
    assert (density.n_tokens, density.n_active) == (total, active)
    # the user's label: saved beside the weights, shown, and back after the SAE is loaded again
    dashboard.user_label.setText("my label")
    dashboard.save_button.click()
    idle()
    qtbot.waitUntil(lambda: dashboard.model.record.user_label == "my label", timeout=10000)
    import json

    assert json.loads((folder / "labels.json").read_text())["labels"] == {str(latent): "my label"}
    assert session.sae.info.labels[latent] == "my label" and "your label" in dashboard.source.text()
    sae_panel.load(str(folder))
    idle()
    assert session.sae.info.labels[latent] == "my label"
    dashboard.clear_button.click()  # a reload deselects the latent: nothing to clear, and the window says so
    assert "select a latent first" in session.last_error.message
    dashboard.show_button.click()
    idle()
    qtbot.waitUntil(lambda: dashboard.model.record is not None, timeout=10000)
    assert dashboard.model.record.user_label == "my label"
    dashboard.clear_button.click()
    idle()
    assert session.sae.info.labels[latent] == records.records[latent].auto_label
    assert json.loads((folder / "labels.json").read_text())["labels"] == {}
    # the model-written explanation, scored by detection on held-out built-in prompts; a latent that
    # fires strongly in some prompts and hardly at all in others (from the independent encode above)
    top = per_text.max(axis=0)
    strong, quiet = (per_text >= 0.5 * top).sum(axis=0), (per_text < 0.1 * top).sum(axis=0)
    explained = int(np.argmax(np.minimum(strong, quiet)))
    assert min(strong[explained], quiet[explained]) >= 2
    dashboard.latent.setValue(explained)
    dashboard.show_button.click()
    idle()
    dashboard.explain_button.click()
    idle()
    assert dashboard.model.explanation is not None, session.last_error
    e = dashboard.model.explanation
    n = len(e.scored)
    assert e.latent == explained and e.explanation and n == 2 * min(8, strong[explained], quiet[explained])
    firing = {prompts[i] for i in np.argsort(-per_text[:, explained], kind="stable")[: n // 2]}
    assert {s.text for s in e.scored if s.fires} == firing  # the strongest prompts, as encoded here
    assert all(per_text[prompts.index(s.text), explained] < 0.1 * top[explained] for s in e.scored if not s.fires)
    assert e.accuracy == pytest.approx(np.mean([(s.margin > 0) == s.fires for s in e.scored]))
    assert 0.0 <= e.auroc <= 1.0 and "detection accuracy" in dashboard.explanation.text()
    assert session.last_error is None or "select a latent" in session.last_error.message
    # ablate it: the dashboard says so
    meters.model.ablate(explained)
    qtbot.waitUntil(lambda: "[ablated]" in dashboard.title.text(), timeout=10000)
    window.close()
    assert window.wait_for_engine(60)


def test_detection_scoring_pieces():
    from symbiont_app.engine.handlers.sae_dashboard.handler import CorpusValues
    from symbiont_app.engine.handlers.sae_explain.handler import auroc, held_out_texts

    assert auroc(np.array([3.0, 2.0, -1.0, -2.0]), np.array([True, True, False, False])) == 1.0
    assert auroc(np.array([1.0, 1.0]), np.array([True, False])) == 0.5  # a tie counts half
    assert auroc(np.array([-1.0, 1.0, 0.0]), np.array([True, False, False])) == 0.0
    # latent 2 fires in texts 0 (4.0), 1 (1.0: under half its max), 3 (2.5); texts 2, 4, 5 are silent
    kept = CorpusValues(ids=np.array([2, 2, 2, 5, 2]), values=np.array([4.0, 1.0, 2.5, 9.0, 0.5], np.float32),
                        texts=np.array([0, 1, 3, 2, 0]), n_tokens=50, corpus=tuple(f"t{i}" for i in range(6)))
    firing, silent = held_out_texts(kept, 2, n_each=8)
    assert firing == [0, 3] and len(silent) == 2 and set(silent) <= {2, 4, 5}
    with pytest.raises(Exception, match="never fires"):
        held_out_texts(kept, 7, n_each=8)
