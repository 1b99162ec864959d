"""Every stream Symbiont hands mlx-lm's generation is on MLX's default device of the moment.

mlx-lm makes its own generation stream when it is first imported, on the default device of
that moment; a program that chooses the CPU afterwards (the macOS CI's tests, the app's
``--self-check --device cpu``) would still decode on the GPU unless it passes a stream.
Linux has only the CPU device, so these tests check what Symbiont passes (and, with the
default device reported as the GPU, that the stream follows it), and the order in which
``tests/conftest.py`` sets the device and imports mlx-lm.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import mlx.core as mx
import pytest

from conftest import make_byte_tokenizer, make_tiny_llama, make_untied_llama

ROOT = Path(__file__).resolve().parent.parent


class _Captured(Exception):
    """Raised by a spy once it has seen the stream (no generation needed)."""


@pytest.fixture()
def gpu_reported_as_default(monkeypatch):
    """MLX reports the GPU as its default device (Linux cannot make it the real default)."""
    gpu = mx.Device(mx.gpu)
    monkeypatch.setattr(mx, "default_device", lambda: gpu)
    return gpu


def test_conftest_chooses_the_cpu_before_mlx_lm_makes_its_generation_stream():
    script = f"""
import importlib.util, sys
import mlx.core as mx
seen = []
real = mx.set_default_device
def spy(device):
    seen.append("mlx_lm.generate" in sys.modules)
    real(device)
mx.set_default_device = spy
sys.path.insert(0, {str(ROOT / "tests")!r})
spec = importlib.util.spec_from_file_location("conftest", {str(ROOT / "tests" / "conftest.py")!r})
spec.loader.exec_module(importlib.util.module_from_spec(spec))
import json, importlib
stream = importlib.import_module("mlx_lm.generate").generation_stream
print(json.dumps([seen, str(mx.default_device()), str(stream.device)]))
"""
    env = dict(os.environ, SYMBIONT_TEST_DEVICE="cpu")
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    seen, default, stream_device = json.loads(out.stdout.strip().splitlines()[-1])
    # set once, and mlx-lm's generation module was not imported yet at that moment
    assert seen == [False]
    assert default == stream_device == "Device(cpu, 0)"


def test_generation_stream_is_per_device_and_per_thread():
    from mlx_hooks.streams import generation_stream

    cpu = generation_stream(mx.Device(mx.cpu))
    assert cpu is generation_stream(mx.Device(mx.cpu))
    assert cpu.device == mx.Device(mx.cpu)
    assert generation_stream(mx.Device(mx.gpu)).device == mx.Device(mx.gpu)
    assert generation_stream().device == mx.default_device()
    # a thread-local stream: usable from another thread (the app's engine thread)
    results = []
    thread = threading.Thread(target=lambda: results.append(mx.add(mx.array([1.0]), 1.0, stream=cpu).item()))
    thread.start()
    thread.join()
    assert results == [2.0]


def test_hooked_stream_generate_decodes_on_the_default_device(monkeypatch):
    from mlx_hooks import generate

    seen = []
    real = generate.stream_generate

    def spy(*args, **kwargs):
        seen.append(kwargs.get("stream"))
        return real(*args, **kwargs)

    monkeypatch.setattr(generate, "stream_generate", spy)
    model, tokenizer = make_tiny_llama(), make_byte_tokenizer()
    steps = list(generate.hooked_stream_generate(model, tokenizer, "hi", max_tokens=3, capture=["resid_post.0"]))
    assert len(steps) == 3
    assert len(seen) == 1 and seen[0] is not None, "no stream passed: mlx-lm would use its import-time device"
    assert seen[0].device == mx.default_device()


def test_the_stream_follows_the_default_device_not_mlx_lms_import_time_one(monkeypatch, gpu_reported_as_default):
    from mlx_lm.generate import generation_stream as mlx_lm_stream

    from mlx_hooks import generate

    def spy(*args, **kwargs):
        raise _Captured(kwargs.get("stream"))

    monkeypatch.setattr(generate, "stream_generate", spy)
    with pytest.raises(_Captured) as caught:
        next(generate.hooked_stream_generate(make_tiny_llama(), make_byte_tokenizer(), "hi", max_tokens=2))
    stream = caught.value.args[0]
    assert stream is not None and stream.device == gpu_reported_as_default
    assert stream is not mlx_lm_stream  # mlx-lm's own was made on the default device of its import


def test_the_engine_threads_chat_generation_uses_the_default_device(monkeypatch):
    """The app's chat runs on its engine thread: the stream it passes is on the default device too."""
    from mlx_hooks import generate
    from mlx_hooks.chat import ChatSession

    seen = []
    real = generate.stream_generate

    def spy(*args, **kwargs):
        seen.append((threading.current_thread().name, kwargs.get("stream")))
        return real(*args, **kwargs)

    monkeypatch.setattr(generate, "stream_generate", spy)
    chat = ChatSession(make_tiny_llama(), make_byte_tokenizer())
    errors = []

    def engine():
        try:
            list(chat.send("hello", max_tokens=2))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    thread = threading.Thread(target=engine, name="symbiont-engine")
    thread.start()
    thread.join(60)
    assert not errors and seen
    name, stream = seen[0]
    assert name == "symbiont-engine" and stream is not None and stream.device == mx.default_device()


def test_sae_corpus_batch_generation_follows_the_default_device(monkeypatch, tmp_path, gpu_reported_as_default):
    import importlib

    from mlx_hooks.sae.corpus import generate_texts

    def spy(*args, **kwargs):
        raise _Captured(kwargs.get("stream"))

    monkeypatch.setattr(importlib.import_module("mlx_lm.generate"), "batch_generate", spy)
    with pytest.raises(_Captured) as caught:
        generate_texts(make_tiny_llama(), make_byte_tokenizer(), ["a prompt"], tmp_path / "texts.jsonl", max_tokens=2)
    stream = caught.value.args[0]
    assert stream is not None and stream.device == gpu_reported_as_default


def test_lab_teacher_batch_generation_follows_the_default_device(monkeypatch, gpu_reported_as_default):
    from types import SimpleNamespace

    from mlx_hooks.fingerprint import fingerprint_model
    from symbiont_lab.subliminal import numbers
    from symbiont_lab.subliminal.teacher import TraitSpec

    def spy(*args, **kwargs):
        raise _Captured(kwargs.get("stream"))

    monkeypatch.setattr(numbers, "BatchGenerator", spy)
    model = make_untied_llama()
    loaded = SimpleNamespace(model=model, tokenizer=make_byte_tokenizer(), fingerprint=fingerprint_model(model))
    with pytest.raises(_Captured) as caught:
        list(numbers.generate_responses(loaded, TraitSpec("none"), ["1, 2, 3"], max_tokens=2, temperature=0))
    stream = caught.value.args[0]
    assert stream is not None and stream.device == gpu_reported_as_default
