"""The app's engine thread protocol and the Qt-free session layer (no Qt imported here)."""

from __future__ import annotations

import json
import queue
import sys
import threading
import time
from dataclasses import dataclass

import numpy as np
import pytest

from mlx_hooks.generate import GenerationStep, TokenAlternative
from mlx_hooks.sampling import SamplingSettings
from symbiont_app.engine.handlers.chat.messages import ChatReset, ReplyStarted, SendMessage, TokenStep
from symbiont_app.engine.handlers.model.messages import LoadModel, ModelInfo, ModelLoaded
from symbiont_app.engine.protocol import Event, Failed, Finished, Progress, Request
from symbiont_app.engine.registry import handles
from symbiont_app.engine.worker import EngineWorker
from symbiont_app.session.observable import Observable
from symbiont_app.session.session import AppSession
from symbiont_app.session.settings import CONFIG_DIR_ENV, Settings, config_dir


# -- test-only requests on the real worker --------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class Count(Request):
    n: int
    delay: float = 0.0


@dataclass(frozen=True, kw_only=True)
class Tick(Event):
    i: int
    knob: float


@dataclass(frozen=True, kw_only=True)
class SetKnob(Request):
    value: float


@dataclass(frozen=True, kw_only=True)
class Explode(Request):
    pass


@handles(Count)
def _count(state, request, ctx):
    for i in range(request.n):
        if ctx.is_cancelled():
            return
        ctx.emit(Tick(request_id=request.request_id, i=i, knob=state.extras.get("knob", 0.0)))
        time.sleep(request.delay)


@handles(SetKnob)
def _set_knob(state, request, ctx):
    state.extras["knob"] = request.value


@handles(Explode)
def _explode(state, request, ctx):
    ctx.progress(1, 2, "about to fail")
    raise ValueError("boom")


def _until(events: queue.Queue, rid: int, timeout=30.0) -> list:
    out = []
    while True:
        event = events.get(timeout=timeout)
        out.append(event)
        if isinstance(event, (Finished, Failed)) and event.request_id == rid:
            return out


@pytest.fixture
def worker():
    events: queue.Queue = queue.Queue()
    w = EngineWorker(events.put)
    w.events = events
    w.start()
    yield w
    w.stop()


def test_worker_orders_results_then_one_terminal_event(worker):
    rid = worker.submit(Count(request_id=worker.new_id(), n=4))
    seen = _until(worker.events, rid)
    assert [type(e).__name__ for e in seen] == ["Tick"] * 4 + ["Finished"]
    assert [e.i for e in seen[:-1]] == [0, 1, 2, 3] and seen[-1].reason == "done"
    bad = worker.submit(Explode(request_id=worker.new_id()))
    seen = _until(worker.events, bad)
    assert isinstance(seen[0], Progress) and isinstance(seen[-1], Failed) and len(seen) == 2
    assert seen[-1].message == "boom" and "ValueError" in seen[-1].details


def test_cancelled_request_never_emits_its_results(worker):
    received: list = []
    cancelled_at = threading.Event()
    after_cancel: list = []
    worker._on_event = lambda e: (after_cancel if cancelled_at.is_set() else received).append(e) or worker.events.put(e)
    rid = worker.submit(Count(request_id=worker.new_id(), n=200, delay=0.01))
    first = worker.events.get(timeout=30)
    assert isinstance(first, Tick)
    worker.cancel(rid)
    cancelled_at.set()
    _until(worker.events, rid)
    assert after_cancel == [Finished(request_id=rid,
                                     reason="cancelled")]  # nothing but the terminal event after cancel()
    # A request cancelled before it starts emits only Finished(cancelled)
    blocker = worker.submit(Count(request_id=worker.new_id(), n=20, delay=0.01))
    queued = Count(request_id=worker.new_id(), n=3)
    worker.submit(queued)
    worker.cancel(queued.request_id)
    _until(worker.events, blocker)
    assert _until(worker.events, queued.request_id) == [Finished(request_id=queued.request_id, reason="cancelled")]


def test_live_request_acts_between_steps(worker):
    rid = worker.submit(Count(request_id=worker.new_id(), n=60, delay=0.01))
    first = worker.events.get(timeout=30)
    assert first.knob == 0.0
    worker.post_live(SetKnob(request_id=worker.new_id(), value=2.5))
    seen = _until(worker.events, rid)
    knobs = [first.knob] + [e.knob for e in seen if isinstance(e, Tick)]
    assert len(knobs) == 60 and knobs[-1] == 2.5 and knobs[0] == 0.0  # changed mid-run, without waiting for the request to end
    assert knobs == sorted(knobs)
    worker.post_live(SetKnob(request_id=worker.new_id(), value=7.0))  # applied while idle
    rid = worker.submit(Count(request_id=worker.new_id(), n=1))
    assert _until(worker.events, rid)[0].knob == 7.0


def test_stop_cancels_what_runs_and_what_is_queued():
    events: queue.Queue = queue.Queue()
    w = EngineWorker(events.put)
    w.start()
    running = w.submit(Count(request_id=w.new_id(), n=1000, delay=0.01))
    queued = [w.submit(Count(request_id=w.new_id(), n=1000, delay=0.01)) for _ in range(3)]
    assert isinstance(events.get(timeout=30), Tick)
    began = time.perf_counter()
    w.stop(timeout=10)
    assert not w.running and time.perf_counter() - began < 5  # not 4 x 10 s of queued work
    seen = []
    while not events.empty():
        seen.append(events.get())
    assert Finished(request_id=running, reason="cancelled") in seen
    assert not [e for e in seen if isinstance(e, Tick) and e.request_id in queued]


def test_every_message_is_frozen_keyword_only_and_says_what_it_requires():
    import dataclasses
    import importlib
    import pkgutil

    import symbiont_app.engine.handlers as handlers
    from symbiont_app.engine import protocol

    features = [f.name for f in pkgutil.iter_modules(handlers.__path__) if f.ispkg]
    modules = [protocol] + [importlib.import_module(f"{handlers.__name__}.{name}.messages") for name in features]
    checked = []
    for module in modules:
        for obj in vars(module).values():
            if isinstance(obj, type) and dataclasses.is_dataclass(obj) and obj.__module__ == module.__name__:
                assert obj.__dataclass_params__.frozen, obj
                assert all(f.kw_only for f in dataclasses.fields(obj)), obj
                checked.append(obj.__name__)
    assert {"SendMessage", "LoadModel", "BuildVector", "InterventionInfo", "LatentDensity"} <= set(checked)
    with pytest.raises(TypeError, match="text"):
        SendMessage(request_id=1, max_tokens=8, sampling=SamplingSettings())  # no text: refused, not ""
    with pytest.raises(TypeError):
        LoadModel(1, "default")  # positional: refused


def test_no_third_party_package_brings_qt_or_mlx_in_at_run_time():
    """What import-linter cannot see. Its contracts (pyproject.toml: the app's layers, the session
    and engine without Qt, the messages without MLX or Qt, mlx_hooks without Qt) read our own import
    statements only; a package we import could still import Qt or MLX itself. So: import every
    feature's messages (no MLX, no Qt loaded), then the session layer and every mlx_hooks module
    (no Qt loaded), in a fresh interpreter."""
    import subprocess

    code = (
        "import sys, pkgutil, importlib\n"
        "import symbiont_app.engine.handlers as h, symbiont_app.session as s, mlx_hooks\n"
        "def loaded(*tops): return sorted(m for m in sys.modules if m.split('.')[0] in tops)\n"
        "for f in pkgutil.iter_modules(h.__path__): importlib.import_module(f'{h.__name__}.{f.name}.messages')\n"
        "bad = loaded('mlx', 'mlx_lm', 'PySide6', 'pyqtgraph')\n"
        "for m in pkgutil.iter_modules(s.__path__): importlib.import_module('symbiont_app.session.' + m.name)\n"
        "for m in pkgutil.iter_modules(mlx_hooks.__path__): importlib.import_module('mlx_hooks.' + m.name)\n"
        "bad += loaded('PySide6', 'pyqtgraph')\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


# -- the session layer, fed by hand ------------------------------------------------------------------------
class FakeWorker:
    def __init__(self):
        self.ids = iter(range(1, 10_000))
        self.submitted: list = []
        self.cancelled: list = []
        self.live: list = []

    def new_id(self):
        return next(self.ids)

    def submit(self, request):
        self.submitted.append(request)
        return request.request_id

    def cancel(self, rid):
        self.cancelled.append(rid)

    def post_live(self, request):
        self.live.append(request)


def _step(index, position, token, prob, vocab=50, seed=0):
    rng = np.random.default_rng(seed + index)
    logits = rng.normal(size=vocab) * 3
    logprobs = (logits - np.log(np.exp(logits).sum())).astype(np.float32)
    order = np.argsort(-logprobs)[:20]
    alternatives = tuple(TokenAlternative(int(i), float(np.exp(logprobs[i])), f"t{i}") for i in order)
    step = GenerationStep(index=index, position=position, token=token, text=f"t{token}", prob=prob,
                          sampling_prob=prob, entropy=1.0, raw_entropy=1.5, top_k=alternatives)
    return step, logprobs


@pytest.fixture
def session(tmp_path):
    return AppSession(FakeWorker(), Settings(path=tmp_path / "settings.json"))


def _info(spec="tiny"):
    return ModelInfo(name="tiny", spec=spec, fingerprint="llama-fp", n_layers=3, d_model=64, vocab_size=259,
                     hook_points=("resid_post.0",), runtime_dtype="float32", backend="cpu", slow_blas_warning=None,
                     memory_bytes=0, budget_bytes=0)


def test_session_streams_a_reply_and_drops_cancelled_answers(session):
    calls: list[str] = []
    session.conversation.subscribe(calls.append)
    session.handle_event(ModelLoaded(request_id=1, info=_info()))
    assert session.model_info.fingerprint == "llama-fp"
    rid = session.conversation.send("hi", SamplingSettings(temp=1.0), 10, None)
    assert isinstance(session.worker.submitted[-1], SendMessage) and session.busy(SendMessage)
    assert session.conversation.send("again", SamplingSettings(), 10, None) is None  # one reply at a time
    session.handle_event(ReplyStarted(request_id=rid, prompt_tokens=7, user_text="hi"))
    for i in range(3):
        step, lp = _step(i, 7 + i, 5 + i, 0.5)
        session.handle_event(TokenStep(request_id=rid, step=step, logprobs=lp))
    conv = session.conversation
    assert [t.position for t in conv.tokens] == [7, 8, 9] and conv.turns[-1].text == "t5t6t7"
    assert calls.count("token") == 3
    conv.stop()
    assert session.worker.cancelled == [rid]
    step, lp = _step(3, 10, 9, 0.5)
    session.handle_event(TokenStep(request_id=rid, step=step,
                                   logprobs=lp))  # in flight when the cancel was sent: dropped
    assert len(conv.tokens) == 3
    session.handle_event(Finished(request_id=rid,
                                  reason="length"))  # ran to the end before the cancel: still "cancelled"
    assert conv.turns[-1].finish_reason == "cancelled" and not session.busy()


def test_superseded_request_is_cancelled_and_ignored(session):
    first = session.models.load("a")
    second = session.models.load("b")
    assert session.worker.cancelled == [first]
    session.handle_event(Progress(request_id=first, done=1, total=4, message="old"))
    assert session.models.progress is None
    session.handle_event(Progress(request_id=second, done=2, total=4, message="loading weights"))
    assert session.models.progress.message == "loading weights"
    session.handle_event(ModelLoaded(request_id=second, info=_info("b")))
    session.handle_event(Finished(request_id=second, reason="done"))
    assert session.models.loading_request is None and session.settings.data.recent_models == ["b"]


def test_errors_reach_the_session(session):
    seen = []
    session.subscribe(seen.append)
    rid = session.submit(LoadModel(request_id=session.new_id(), spec="nope"))
    session.handle_event(Failed(request_id=rid, message="nope: no such file", details="trace"))
    assert session.last_error.message == "nope: no such file" and "error" in seen and not session.active


def test_temperature_view_redraws_without_the_model(session):
    conv, view = session.conversation, session.temperature
    rid = conv.send("hi", SamplingSettings(temp=1.0), 10, None)
    session.handle_event(ReplyStarted(request_id=rid, prompt_tokens=3, user_text="hi"))
    step, lp = _step(0, 3, 1, 0.4)
    session.handle_event(TokenStep(request_id=rid, step=step, logprobs=lp))
    view.set_params(temp=1.0, top_p=0.0, min_p=0.0)
    at_one = view.distribution
    np.testing.assert_allclose(at_one.probs, at_one.raw_probs, rtol=1e-5)
    assert at_one.probs[0] >= at_one.probs[-1]
    view.set_params(temp=0.3)
    cold = view.distribution
    assert cold.probs[0] > at_one.probs[0] and cold.entropy < at_one.entropy
    assert cold.effective_choices == pytest.approx(2 ** cold.entropy)
    view.set_params(temp=3.0)
    assert view.distribution.entropy > at_one.entropy
    view.set_params(temp=1.0, min_p=0.5)
    assert view.distribution.kept < 50 and view.distribution.probs.sum() <= 1.0 + 1e-6
    view.set_params(temp=0.0, min_p=0.0)
    assert view.distribution.probs[0] == 1.0 and view.distribution.entropy == 0.0


def test_conversation_keeps_a_bounded_number_of_full_distributions(session):
    conv = session.conversation
    conv.keep_full = 4
    rid = conv.send("hi", SamplingSettings(temp=1.0), 10, None)
    session.handle_event(ReplyStarted(request_id=rid, prompt_tokens=0, user_text="hi"))
    for i in range(10):
        step, lp = _step(i, i, 1, 0.3)
        session.handle_event(TokenStep(request_id=rid, step=step, logprobs=lp))
    assert conv.logprobs_at(9) is not None and conv.logprobs_at(5) is None and len(conv._logprobs) == 4
    conv.selected_position = 2
    assert session.temperature.distribution is None and "no longer kept" in session.temperature.missing
    conv.selected_position = 8
    assert session.temperature.distribution.position == 8
    positions, entropy, prob = session.temperature.series()
    assert len(positions) == 10 and entropy[0] == 1.5 and prob[0] == pytest.approx(0.3)
    session.handle_event(ChatReset(request_id=99))
    assert conv.tokens == [] and conv.selected_position is None


def test_settings_round_trip_atomically(tmp_path, monkeypatch):
    monkeypatch.setenv(CONFIG_DIR_ENV, str(tmp_path / "cfg"))
    assert config_dir() == tmp_path / "cfg"
    settings = Settings.load()
    settings.data.sampling.temp = 0.3
    for spec in ["a", "b", "a"] + [f"m{i}" for i in range(12)]:
        settings.add_recent_model(spec)
    settings.add_recent_file("preset", "/x/p.json")
    settings.save()
    assert not [p for p in (tmp_path / "cfg").iterdir() if p.name != "settings.json"]  # no temp files left
    again = Settings.load()
    assert again.data.sampling.temp == 0.3 and len(again.data.recent_models) == 10
    assert again.data.recent_models[0] == "m11" and again.data.recent_files == {"preset": ["/x/p.json"]}
    (tmp_path / "cfg" / "settings.json").write_text("{not json")
    broken = Settings.load()
    assert broken.problem and "settings.json" in broken.problem and broken.data.sampling.temp == 0.7


def test_observable_unsubscribe():
    seen = []
    obs = Observable()
    unsubscribe = obs.subscribe(seen.append)
    obs.notify("a")
    unsubscribe()
    obs.notify("b")
    assert seen == ["a"]
