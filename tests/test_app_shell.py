"""The engine thread, the main window, and the engine's independence from Qt."""

from __future__ import annotations

import queue

import pytest

from symbiont_app.engine.handlers.chat.messages import SendMessage, TokenStep
from symbiont_app.engine.handlers.model.messages import LoadModel, ModelLoaded
from symbiont_app.engine.protocol import Failed, Finished
from symbiont_app.engine.worker import EngineWorker
from mlx_hooks.sampling import SamplingSettings


def _collect(events: queue.Queue, until, timeout=60.0):
    seen = []
    while True:
        event = events.get(timeout=timeout)
        seen.append(event)
        if until(event):
            return seen


def test_engine_thread_loads_streams_and_cancels(tiny_folder):
    events: queue.Queue = queue.Queue()
    worker = EngineWorker(events.put)
    worker.start()
    try:
        load = worker.submit(LoadModel(request_id=worker.next_id(), spec=str(tiny_folder)))
        seen = _collect(events, lambda e: isinstance(e, (Finished, Failed)) and e.request_id == load)
        assert isinstance(seen[-1], Finished) and seen[-1].reason == "done"
        loaded = seen[-2]
        assert isinstance(loaded, ModelLoaded) and loaded.info.fingerprint.startswith("llama-3L-64d-")
        send = worker.submit(SendMessage(request_id=worker.next_id(), text="hi", max_tokens=8,
                                         sampling=SamplingSettings(temp=0)))
        seen = _collect(events, lambda e: isinstance(e, Finished) and e.request_id == send)
        steps = [e.step for e in seen if isinstance(e, TokenStep)]
        assert 1 <= len(steps) <= 8
        # Step records carry plain values: no MLX arrays cross the thread boundary
        assert all(type(e.logprobs).__module__ == "numpy" for e in seen if isinstance(e, TokenStep))
        assert isinstance(steps[0].prob, float)
        # Cancel: a long request stops early
        long = SendMessage(request_id=worker.next_id(), text="again", max_tokens=400,
                           sampling=SamplingSettings(temp=1.0, seed=1))
        worker.submit(long)
        first = _collect(events, lambda e: isinstance(e, TokenStep) and e.request_id == long.request_id)
        assert first
        worker.cancel(long.request_id)
        seen = _collect(events, lambda e: isinstance(e, Finished) and e.request_id == long.request_id)
        assert seen[-1].reason == "cancelled"
        assert sum(isinstance(e, TokenStep) for e in seen) < 399
    finally:
        worker.stop()


def test_engine_thread_reports_errors(tmp_path):
    events: queue.Queue = queue.Queue()
    worker = EngineWorker(events.put)
    worker.start()
    try:
        bad = tmp_path / "bad.gguf"
        bad.write_bytes(b"not a gguf at all")
        request = worker.submit(LoadModel(request_id=worker.next_id(), spec=str(bad)))
        failed = _collect(events, lambda e: isinstance(e, (Finished, Failed)) and e.request_id == request)[-1]
        assert isinstance(failed, Failed) and str(bad) in failed.message
    finally:
        worker.stop()



@pytest.mark.gui
def test_main_window_chats(qtbot, tiny_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("SYMBIONT_CONFIG_DIR", str(tmp_path))
    from symbiont_app.gui import build_window

    window = build_window(str(tiny_folder))
    qtbot.addWidget(window)
    qtbot.waitUntil(lambda: window.session.model_info is not None, timeout=60000)
    qtbot.waitUntil(lambda: "llama-3L" in window.status.text(), timeout=10000)
    window.chat.entry.setText("hello")
    assert window.chat.send() is not None
    qtbot.waitUntil(lambda: not window.session.active, timeout=60000)
    assert "you: hello" in window.chat.transcript.toPlainText()
    window.close()
