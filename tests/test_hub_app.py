"""Hub downloads in the app: beside the real engine thread (the chat keeps answering), the
verdict before any weight byte, cancel and resume through the session, and the model
panel's progress row (offscreen Qt). Against tests/fake_hub.py's local server."""

from __future__ import annotations

import time

import pytest
from app_fakes import Pump, RecordingEngine

from hub_env import home, hub, leftovers, point_hub_at, tiny_repo_folder  # noqa: F401 - fixtures
from mlx_hooks.hub_progress import DownloadProgress
from mlx_hooks.loader import estimate_for
from mlx_hooks.sampling import SamplingSettings
from symbiont_app.engine.handlers.download.messages import DownloadModel, DownloadPlanned, DownloadStep, ModelDownloaded
from symbiont_app.engine.handlers.model.messages import LoadModel, ModelEstimate, ModelLoaded
from symbiont_app.engine.protocol import Failed, Finished
from symbiont_app.session.session import AppSession
from symbiont_app.session.settings import Settings


@pytest.fixture
def pump(tmp_path, tiny_folder):
    """A tiny model loaded from a folder: the model a download must not disturb."""
    p = Pump(tmp_path, timeout=60.0)
    rid = p.session.models.load(str(tiny_folder))
    assert isinstance(p.until(lambda e: isinstance(e, (ModelLoaded, Failed)) and e.request_id == rid), ModelLoaded)
    p.finish(rid)
    yield p
    p.worker.stop()


def test_chat_answers_while_a_download_is_in_flight_then_the_model_loads(pump, hub, tiny_repo_folder):
    models = pump.session.models
    hub.hold["model.safetensors"] = 64 * 1024
    rid = models.load("org/tiny", "float32")
    assert isinstance(pump.session.request(rid), DownloadModel)
    planned = pump.until(lambda e: isinstance(e, (DownloadPlanned, Failed)) and e.request_id == rid)
    assert isinstance(planned, DownloadPlanned) and planned.fits
    assert planned.estimate_bytes == estimate_for(str(tiny_repo_folder), "float32").total_bytes
    pump.until(lambda e: isinstance(e, DownloadStep) and e.progress.done_bytes > 0)
    assert hub.held.wait(30) and models.download_progress.done_bytes > 0
    # the download is stuck mid-file; the engine still serves the model loaded before
    reply = pump.session.conversation.send("hello", SamplingSettings(temp=0), 4, None)
    assert isinstance(pump.finish(reply), Finished)
    assert pump.session.conversation.turns[-1].text
    assert models.download_request == rid and pump.session.model_info.spec != "org/tiny"
    assert not any(isinstance(e, ModelDownloaded) for e in pump.seen)
    hub.release.set()
    loaded = pump.until(lambda e: isinstance(e, (ModelLoaded, Failed)), 120)
    assert isinstance(loaded, ModelLoaded) and loaded.info.spec == "org/tiny", loaded
    steps = [e.progress for e in pump.seen if isinstance(e, DownloadStep) and e.request_id == rid]
    assert [s.done_bytes for s in steps] == sorted(s.done_bytes for s in steps)
    assert steps[-1].done_bytes == steps[-1].total_bytes == planned.download_bytes
    order = [type(e).__name__ for e in pump.seen if e.request_id == rid]
    assert order.index("DownloadPlanned") < order.index("DownloadStep")
    assert order[-2:] == ["ModelDownloaded", "Finished"]
    assert pump.worker.state.loaded.name == "org/tiny" and models.download_request is None


def test_over_budget_download_is_refused_before_fetching(pump, hub, monkeypatch):
    monkeypatch.setenv("SYMBIONT_MEMORY_BUDGET_GB", str(100 * 1024 / 2**30))  # 100 KiB
    rid = pump.session.models.load("org/tiny", "float32")
    planned = pump.until(lambda e: isinstance(e, DownloadPlanned) and e.request_id == rid)
    assert not planned.fits
    failed = pump.finish(rid)
    assert isinstance(failed, Failed) and "org/tiny" in failed.message and "over the memory budget" in failed.message
    assert hub.full_gets("model.safetensors") == 0
    assert pump.session.models.download_request is None
    assert pump.session.last_error is not None and "over the memory budget" in pump.session.last_error.message


def test_estimate_of_an_uncached_repo_reads_headers_only(pump, hub, tiny_repo_folder):
    rid = pump.session.models.request_estimate("org/tiny", "float32")
    estimate = pump.until(lambda e: isinstance(e, (ModelEstimate, Failed)) and e.request_id == rid)
    assert isinstance(estimate, ModelEstimate), estimate
    assert estimate.total_bytes == estimate_for(str(tiny_repo_folder), "float32").total_bytes
    assert isinstance(pump.finish(rid), Finished)
    assert hub.full_gets("model.safetensors") == 0


def test_cancel_from_the_session_then_load_again_resumes(pump, hub, home, tiny_repo_folder):
    from huggingface_hub import try_to_load_from_cache

    def cached():
        return {p.name for p in tiny_repo_folder.iterdir()
                if isinstance(try_to_load_from_cache("org/tiny", p.name, cache_dir=str(home / "hub")), str)}

    models = pump.session.models
    hub.hold["model.safetensors"] = 64 * 1024
    rid = models.load("org/tiny")
    assert hub.held.wait(30)
    deadline = time.monotonic() + 30
    while "tokenizer.json" not in cached() and time.monotonic() < deadline:  # the small files complete meanwhile
        time.sleep(0.02)
    models.cancel_download()
    assert models.download_request is None
    hub.release.set()
    end = pump.finish(rid)
    assert isinstance(end, Finished) and end.reason == "cancelled"
    assert not any(isinstance(e, (ModelDownloaded, ModelLoaded)) and e.request_id >= rid for e in pump.seen)
    assert leftovers(home) == []
    kept = cached()
    assert "tokenizer.json" in kept and "model.safetensors" not in kept
    hub.hold.clear()
    hub.wait_idle()
    log_before = len(hub.log)
    again = models.load("org/tiny")
    loaded = pump.until(lambda e: isinstance(e, (ModelLoaded, Failed)) and e.request_id > again, 120)
    assert isinstance(loaded, ModelLoaded) and loaded.info.spec == "org/tiny"
    hub.wait_idle()
    fetched = {e.path.rsplit("/", 1)[-1] for e in hub.log[log_before:]
               if e.method == "GET" and "/resolve/" in e.path and not e.range}
    assert fetched == {p.name for p in tiny_repo_folder.iterdir()} - kept  # only what was missing


# -- the model panel (offscreen Qt, scripted engine) -------------------------------------------------------
@pytest.mark.gui
def test_model_panel_shows_the_download_row_and_cancels(qtbot, tmp_path):
    from PySide6.QtCore import Qt

    from symbiont_app.widgets.model_picker import ModelPickerPanel

    engine = RecordingEngine()
    session = AppSession(engine, Settings(path=tmp_path / "settings.json"))
    panel = ModelPickerPanel(session)
    qtbot.addWidget(panel)
    assert not panel.download_row.isVisibleTo(panel)
    panel.spec.setEditText("org/some-model")
    rid = panel.load()
    assert isinstance(engine.submitted[-1], DownloadModel) and engine.submitted[-1].spec == "org/some-model"
    assert panel.download_row.isVisibleTo(panel) and not panel.load_button.isEnabled()
    assert "reading the repo's config" in panel.download_label.text()
    gib = 2**30
    session.handle_event(DownloadPlanned(request_id=rid, spec="org/some-model", download_bytes=3 * gib, n_files=4,
                                         estimate_bytes=int(3.5 * gib), budget_bytes=12 * gib, description="weights …"))
    session.handle_event(DownloadStep(request_id=rid, progress=DownloadProgress("org/some-model", gib, 3 * gib,
                                                                                50 * 2**20, 40.96, 20.0)))
    text = panel.download_label.text()
    assert "4 files, 3.00 GiB to download" in text and "fits the budget" in text
    assert "1.00 GiB of 3.00 GiB (33%), 50.0 MiB/s, 0:41 left" in text
    assert panel.download_bar.value() == 333
    qtbot.mouseClick(panel.download_cancel, Qt.LeftButton)
    assert engine.cancelled == [rid]
    assert not panel.download_row.isVisibleTo(panel) and panel.load_button.isEnabled()
    session.handle_event(Finished(request_id=rid, reason="cancelled"))
    # a finished download queues the load on the engine thread
    again = panel.load()
    session.handle_event(ModelDownloaded(request_id=again, spec="org/some-model", folder="/cache/snapshot",
                                         cached=False))
    assert isinstance(engine.submitted[-1], LoadModel) and engine.submitted[-1].spec == "org/some-model"
    assert not panel.download_row.isVisibleTo(panel)

