"""The MLX stream Symbiont's generation runs on: one that follows the default device.

mlx-lm makes its module-level ``generation_stream`` when ``mlx_lm.generate`` is first
imported, on whatever device was the default *then*, and ``stream_generate`` /
``BatchGenerator`` use it unless given another. A program that picks its device after
mlx-lm was imported (the app's ``--self-check --device cpu``, a test run on a Mac's
CPU) would still decode on the GPU. Every call into mlx-lm's generation therefore
passes :func:`generation_stream`.
"""

from __future__ import annotations

import threading

import mlx.core as mx

_lock = threading.Lock()
_streams: dict[str, mx.ThreadLocalStream] = {}
"""``str(device)`` (``"Device(gpu, 0)"``) -> the generation stream made for that device (one per device,
like mlx-lm's: a thread-local stream, so each thread that generates gets its own)."""


def _key(device: mx.Device) -> str:
    return str(device)  # names type and index; Device objects hash by identity


def generation_stream(device: mx.Device | None = None) -> mx.ThreadLocalStream:
    """A stream on ``device`` (default: MLX's default device *now*) for mlx-lm's generation.

    Thread-local, as mlx-lm's own: MLX streams belong to the thread that uses them, and
    the app generates on its engine thread while tests and the CLI use the main thread.
    """
    device = mx.default_device() if device is None else device
    key = _key(device)
    with _lock:
        stream = _streams.get(key)
        if stream is None:
            stream = _streams[key] = mx.new_thread_local_stream(device)
        return stream

