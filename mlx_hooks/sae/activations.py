"""Activations of one hook point over a text corpus, buffered on disk for SAE training.

Texts are tokenized, joined with the end-of-sequence token between documents and cut
into fixed windows (the usual SAE recipe). Each window's first position is dropped:
the first token of a context carries an outsized "attention sink" residual that an
SAE would spend latents on and that no live conversation position resembles.

The forward pass stops at the hook point (:func:`activations_at`): for a middle-layer
SAE that halves the cost of reading the corpus. The buffer is a float16 memmap plus a
small JSON progress file, so an interrupted extraction resumes where it stopped.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from ..atomic_io import atomic_write_bytes
from ..hooks import hooked
from ..interventions import FunctionIntervention


class _ReachedPoint(Exception):
    """Raised inside the forward once the wanted activation is in hand."""


def activations_at(model: nn.Module, tokens: mx.array, point: str) -> mx.array:
    """``point``'s activation for ``tokens`` ``[B, L]`` -> ``[B, L, D]``, skipping later layers.

    MLX builds the graph lazily, so stopping the Python forward at the hook (by raising)
    means the layers after it are never even built, let alone computed.
    """
    found: dict[str, mx.array] = {}

    def grab(x, ctx):
        found["x"] = x
        raise _ReachedPoint

    with hooked(model, interventions={point: FunctionIntervention(grab, name="stop-at-point")}):
        try:
            model(tokens)
        except _ReachedPoint:
            pass
    return found["x"]


def token_windows(tokenizer, texts: Sequence[str], context_length: int) -> np.ndarray:
    """``[N, context_length]`` token windows over the concatenated documents."""
    eos = tokenizer.eos_token_ids
    separator = [next(iter(eos))] if eos else []
    stream: list[int] = []
    for text in texts:
        stream += list(tokenizer.encode(text)) + separator
    n = len(stream) // context_length
    return np.asarray(stream[: n * context_length], dtype=np.int32).reshape(n, context_length)


@dataclass
class ActivationBuffer:
    """A float16 ``[n_rows, d]`` memmap on disk and how much of it is filled."""

    folder: Path
    d: int
    n_rows: int

    @property
    def data_path(self) -> Path:
        return self.folder / "activations.f16"

    @property
    def progress_path(self) -> Path:
        return self.folder / "activations.json"

    def open(self, mode: str = "r+") -> np.memmap:
        return np.memmap(self.data_path, dtype=np.float16, mode=mode, shape=(self.n_rows, self.d))

    @property
    def filled(self) -> int:
        if not self.progress_path.exists():
            return 0
        return int(json.loads(self.progress_path.read_text())["filled_rows"])

    def mark(self, filled_rows: int, windows_done: int, meta: dict) -> None:
        record = {"filled_rows": filled_rows, "windows_done": windows_done, "n_rows": self.n_rows, "d": self.d, **meta}
        atomic_write_bytes(self.progress_path, json.dumps(record).encode("utf-8"))

    def windows_done(self) -> int:
        if not self.progress_path.exists():
            return 0
        return int(json.loads(self.progress_path.read_text())["windows_done"])


def extract_activations(
    model: nn.Module,
    windows: np.ndarray,
    point: str,
    folder: str | os.PathLike,
    d: int,
    batch_windows: int = 8,
    should_stop: Callable[[], bool] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ActivationBuffer:
    """Fill (or resume filling) the on-disk buffer with ``point``'s activations."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    per_window = windows.shape[1] - 1
    buffer = ActivationBuffer(folder, d, windows.shape[0] * per_window)
    done = buffer.windows_done()
    if done == 0:
        buffer.open("w+").flush()  # allocate the file
    data = buffer.open("r+")
    meta = {"point": point, "context_length": int(windows.shape[1])}
    while done < windows.shape[0]:
        if should_stop is not None and should_stop():
            break
        batch = windows[done : done + batch_windows]
        acts = activations_at(model, mx.array(batch), point)[:, 1:, :]  # [B, L-1, D]: drop the sink position
        rows = np.array(acts.astype(mx.float16)).reshape(-1, d)
        start = done * per_window
        data[start : start + rows.shape[0]] = rows
        data.flush()
        done += batch.shape[0]
        buffer.mark(done * per_window, done, meta)
        if progress is not None:
            progress(done, windows.shape[0])
    return buffer
