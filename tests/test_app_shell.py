"""The engine thread, the minimal window, and the engine's independence from Qt."""

from __future__ import annotations

import queue
import subprocess
import sys

import pytest

from symbiont_app.engine_worker import EngineWorker, Failed, Finished, LoadModel, ModelLoaded, SendMessage, StepEvent
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
        load = worker.submit(LoadModel(worker.next_id(), str(tiny_folder)))
        loaded = _collect(events, lambda e: e.request_id == load)[-1]
        assert isinstance(loaded, ModelLoaded) and loaded.fingerprint.startswith("llama-3L-64d-")
        send = worker.submit(SendMessage(worker.next_id(), "hi", max_tokens=8, sampling=SamplingSettings(temp=0)))
        seen = _collect(events, lambda e: isinstance(e, Finished) and e.request_id == send)
        steps = [e.step for e in seen if isinstance(e, StepEvent)]
        assert 1 <= len(steps) <= 8
        # Step records carry plain values: no MLX arrays cross the thread boundary
        assert all(type(v).__module__ == "numpy" for s in steps for v in s.activations.values())
        assert isinstance(steps[0].prob, float)
        # Cancel: a long request stops early
        long = SendMessage(worker.next_id(), "again", max_tokens=400, sampling=SamplingSettings(temp=1.0, seed=1))
        worker.submit(long)
        first = _collect(events, lambda e: isinstance(e, StepEvent) and e.request_id == long.request_id)
        assert first
        worker.cancel(long.request_id)
        seen = _collect(events, lambda e: isinstance(e, Finished) and e.request_id == long.request_id)
        assert seen[-1].reason == "cancelled"
        assert sum(isinstance(e, StepEvent) for e in seen) < 399
    finally:
        worker.stop()


def test_engine_thread_reports_errors(tmp_path):
    events: queue.Queue = queue.Queue()
    worker = EngineWorker(events.put)
    worker.start()
    try:
        bad = tmp_path / "bad.gguf"
        bad.write_bytes(b"not a gguf at all")
        request = worker.submit(LoadModel(worker.next_id(), str(bad)))
        failed = _collect(events, lambda e: e.request_id == request)[-1]
        assert isinstance(failed, Failed) and str(bad) in failed.message
    finally:
        worker.stop()


def test_engine_package_never_imports_qt():
    code = (
        "import sys, pkgutil, importlib, mlx_hooks\n"
        "for m in pkgutil.iter_modules(mlx_hooks.__path__): importlib.import_module('mlx_hooks.' + m.name)\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('PySide6', 'pyqtgraph', 'symbiont_app')]\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.gui
def test_minimal_window_chats(qtbot, tiny_folder):
    from symbiont_app.gui import build_window

    window = build_window(str(tiny_folder))
    qtbot.addWidget(window)
    qtbot.waitUntil(lambda: window.worker.chat is not None, timeout=60000)
    qtbot.waitUntil(lambda: "llama-3L" in window.status.text(), timeout=10000)
    window.entry.setText("hello")
    window.send()
    assert window.current_request is not None
    qtbot.waitUntil(lambda: window.current_request is None, timeout=60000)
    assert "you: hello" in window.transcript.toPlainText()
    window.close()
