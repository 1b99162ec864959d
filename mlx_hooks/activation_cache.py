"""Per-position activation history across a whole (streamed) generation.

Every forward call appends a chunk per captured point: the prefill chunk covers the
prompt, each decode step adds one position. Chunks stay on the MLX device, or move
to host memory (numpy) once their step is evaluated, within a byte budget whose
overflow either raises or drops the oldest positions — the user's choice.

Moving to host happens in :meth:`ActivationRecorder.settle`, called between steps,
never inside a forward: converting a lazy array mid-forward would force evaluation
of a partial graph and break mlx-lm's asynchronous decode pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import mlx.core as mx
import numpy as np

from .errors import MemoryBudgetError

Storage = Literal["device", "host"]
OnBudget = Literal["error", "drop_oldest"]


@dataclass(frozen=True)
class CacheConfig:
    """How captured activations are kept."""

    storage: Storage = "device"
    """``device``: MLX arrays; ``host``: numpy copies (frees MLX's memory pool)."""
    budget_bytes: int | None = None
    """Upper bound on all captured bytes together; None: unbounded."""
    on_budget: OnBudget = "error"
    """Past the budget: ``error`` raises :class:`MemoryBudgetError`, ``drop_oldest`` forgets old positions."""


@dataclass
class _Chunk:
    start: int  # absolute position of the chunk's first column
    data: object  # mx.array [B, L, D] or np.ndarray (bf16 kept as uint16 bits)
    dtype: mx.Dtype

    @property
    def length(self) -> int:
        return self.data.shape[1]

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes)

    def to_mx(self) -> mx.array:
        if isinstance(self.data, mx.array):
            return self.data
        array = mx.array(self.data)
        return array.view(self.dtype) if self.dtype == mx.bfloat16 else array


class ActivationRecorder:
    """Collects activations of hook points; read back by point and absolute position."""

    def __init__(self, config: CacheConfig | None = None):
        self.config = config or CacheConfig()
        self._chunks: dict[str, list[_Chunk]] = {}
        self._device_tail: list[_Chunk] = []  # chunks not yet settled to host

    # -- writing (called from hooks, inside the forward) --------------------------
    def record(self, point: str, x: mx.array, start: int) -> None:
        chunk = _Chunk(start=start, data=x, dtype=x.dtype)  # x: [B, L, D]
        chunks = self._chunks.setdefault(point, [])
        # A re-run over positions already held (e.g. a cache rewound for a new turn)
        # replaces them: history is by position, not by call.
        while chunks and chunks[-1].start + chunks[-1].length > start:
            last = chunks[-1]
            if last.start < start:
                # Trim in place: a chunk still waiting in _device_tail must stay the same object.
                last.data = last.data[:, : start - last.start]
                break
            chunks.pop()
        chunks.append(chunk)
        if self.config.storage == "host":
            self._device_tail.append(chunk)
        self._enforce_budget()

    def settle(self) -> None:
        """Move evaluated chunks to host memory (storage ``host``); call between steps."""
        if self.config.storage != "host" or not self._device_tail:
            return
        pending, self._device_tail = self._device_tail, []
        mx.eval([c.data for c in pending])
        for chunk in pending:
            data = chunk.data.view(mx.uint16) if chunk.dtype == mx.bfloat16 else chunk.data
            chunk.data = np.array(data)

    # -- budget --------------------------------------------------------------------
    @property
    def nbytes(self) -> int:
        return sum(c.nbytes for chunks in self._chunks.values() for c in chunks)

    def _enforce_budget(self) -> None:
        budget = self.config.budget_bytes
        if budget is None:
            return
        total = self.nbytes
        if total <= budget:
            return
        if self.config.on_budget == "error":
            raise MemoryBudgetError(
                f"activation cache: {total / 2**20:.1f} MiB captured exceeds the budget of "
                f"{budget / 2**20:.1f} MiB ({len(self._chunks)} points, up to position {self.end - 1}); "
                "raise the budget, capture fewer points, or choose on_budget='drop_oldest'"
            )
        # drop_oldest: forget the earliest positions of every point, one position at a time
        # across points, until the total fits.
        while total > budget:
            oldest = min(c[0].start for c in self._chunks.values() if c)
            for chunks in self._chunks.values():
                if chunks and chunks[0].start == oldest:
                    head = chunks[0]
                    total -= head.nbytes
                    if head.length == 1:
                        chunks.pop(0)
                    else:  # in place, as in record()
                        head.start, head.data = head.start + 1, head.data[:, 1:]
                        total += head.nbytes

    # -- reading ---------------------------------------------------------------------
    @property
    def points(self) -> list[str]:
        return [p for p, c in self._chunks.items() if c]

    @property
    def start(self) -> int:
        """First position still held (after drops)."""
        return min((c[0].start for c in self._chunks.values() if c), default=0)

    @property
    def end(self) -> int:
        """One past the last position held."""
        return max((c[-1].start + c[-1].length for c in self._chunks.values() if c), default=0)

    def stack(self, point: str) -> mx.array:
        """All held positions of ``point`` in order, ``[B, T, D]``."""
        chunks = self._chunks.get(point)
        if not chunks:
            raise KeyError(f"no activations captured for {point!r}; captured: {self.points}")
        return mx.concatenate([c.to_mx() for c in chunks], axis=1)

    def positions(self, point: str) -> np.ndarray:
        """Absolute positions that :meth:`stack` returns, ``[T]``."""
        chunks = self._chunks.get(point, [])
        if not chunks:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate([np.arange(c.start, c.start + c.length) for c in chunks])

    def at(self, point: str, position: int) -> mx.array:
        """Activation of ``point`` at an absolute position, ``[B, D]``."""
        for chunk in reversed(self._chunks.get(point, [])):
            if chunk.start <= position < chunk.start + chunk.length:
                offset = position - chunk.start
                return chunk.to_mx()[:, offset]
        raise KeyError(f"position {position} of {point!r} is not held (held: {self.start}..{self.end - 1})")

    def clear(self) -> None:
        self._chunks.clear()
        self._device_tail.clear()


def estimate_capture_bytes(n_points: int, n_positions: int, d_model: int, dtype: mx.Dtype, batch: int = 1) -> int:
    """Bytes that capturing ``n_points`` points over ``n_positions`` positions will hold."""
    return n_points * n_positions * d_model * dtype.size * batch
