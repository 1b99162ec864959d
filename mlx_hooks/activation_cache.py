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


@dataclass(slots=True)
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


def _own_copy(data, lo: int, hi: int):
    """Columns ``lo:hi`` of a chunk in memory of their own. A plain slice is a view that keeps the
    whole original buffer alive (a 4096-position prefill chunk trimmed to 96 positions still held
    all 4096), so the budget counted bytes that were not the bytes held."""
    part = data[:, lo:hi]
    return part.copy() if isinstance(part, np.ndarray) else mx.contiguous(part)


class ActivationRecorder:
    """Collects activations of hook points; read back by point and absolute position.

    The budget is exact: the bytes held (views included) never exceed it after a :meth:`record`
    returns — in ``error`` mode the record is refused before anything is kept; in
    ``drop_oldest`` mode the oldest positions are cut off in one pass and the rest copied out
    of their old buffers (the copies are evaluated at the next :meth:`settle`)."""

    def __init__(self, config: CacheConfig | None = None):
        self.config = config or CacheConfig()
        self._chunks: dict[str, list[_Chunk]] = {}
        self._device_tail: list[_Chunk] = []  # chunks not yet settled to host
        self._unsettled_copies: list[_Chunk] = []  # device chunks trimmed by a lazy copy, evaluated in settle()
        self._total = 0  # bytes held, kept in step with every change (records run at every decode step)

    # -- writing (called from hooks, inside the forward) --------------------------
    def record(self, point: str, x: mx.array, start: int) -> None:
        chunks = self._chunks.setdefault(point, [])
        # A re-run over positions already held (e.g. a cache rewound for a new turn)
        # replaces them: history is by position, not by call.
        replaced = 0
        for c in reversed(chunks):  # chunks are in position order: only the tail can overlap (O(1) per step)
            if c.start + c.length <= start:
                break
            replaced += c.nbytes * (c.start + c.length - max(c.start, start)) // max(c.length, 1)
        budget = self.config.budget_bytes
        after = self._total - replaced + int(x.nbytes)
        if budget is not None and after > budget and self.config.on_budget == "error":
            raise MemoryBudgetError(  # before anything is kept: the cache stays within its budget
                f"activation cache: {after / 2**20:.1f} MiB captured exceeds the budget of "
                f"{budget / 2**20:.1f} MiB ({len(self._chunks)} points, up to position {start + x.shape[1] - 1}); "
                "raise the budget, capture fewer points, or choose on_budget='drop_oldest'"
            )
        while chunks and chunks[-1].start + chunks[-1].length > start:
            last = chunks[-1]
            if last.start < start:
                # Trim in place: a chunk still waiting in _device_tail must stay the same object.
                self._replace_data(last, last.start, _own_copy(last.data, 0, start - last.start))
                break
            self._total -= last.nbytes
            chunks.pop()
        self._append(chunks, _Chunk(start=start, data=x, dtype=x.dtype))  # x: [B, L, D]
        if budget is not None and self._total > budget:
            self._drop_oldest(budget)

    def record_forward(self, captures: dict[str, mx.array], start: int) -> None:
        """:meth:`record` for every point of one forward call (each ``[B, L, D_p]`` from ``start``).

        The hooks' path, once per forward call: with no budget and device storage, a call that
        continues the history is a plain append per point, with no budget or host move to track."""
        if self.config.budget_bytes is not None or self.config.storage != "device":
            for point, x in captures.items():
                self.record(point, x, start)
            return
        every_point, added = self._chunks, 0
        for point, x in captures.items():
            chunks = every_point.get(point)
            if chunks is None:
                chunks = every_point[point] = []
            elif chunks[-1].start + chunks[-1].length > start:
                self.record(point, x, start)  # overlaps what is held: the general path replaces it
                continue
            chunks.append(_Chunk(start, x, x.dtype))
            added += x.nbytes
        self._total += added

    def _append(self, chunks: list[_Chunk], chunk: _Chunk) -> None:
        chunks.append(chunk)
        self._total += chunk.nbytes
        if self.config.storage == "host":
            self._device_tail.append(chunk)

    def _replace_data(self, chunk: _Chunk, start: int, data) -> None:
        self._total += int(data.nbytes) - chunk.nbytes
        chunk.start, chunk.data = start, data
        if isinstance(data, mx.array) and chunk not in self._device_tail:
            self._unsettled_copies.append(chunk)

    def settle(self) -> None:
        """Evaluate trimmed copies (so the buffers they replaced are freed) and, with storage ``host``,
        move evaluated chunks to host memory; call between steps."""
        if self._unsettled_copies:
            copies, self._unsettled_copies = self._unsettled_copies, []
            mx.eval([c.data for c in copies if isinstance(c.data, mx.array)])
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
        """Bytes held: every kept chunk owns its memory (trims are copies), so this is what the cache holds."""
        return self._total

    def _bytes_from(self, cutoff: int) -> int:
        """Bytes held at positions >= ``cutoff``."""
        total = 0
        for chunks in self._chunks.values():
            for c in chunks:
                kept = c.start + c.length - max(c.start, cutoff)
                if kept > 0:
                    total += c.nbytes * kept // c.length
        return total

    def _drop_oldest(self, budget: int) -> None:
        # The earliest cutoff position whose remainder fits, by bisection, then one trim per chunk
        # (dropping one position at a time re-sliced a long prefill chunk thousands of times).
        low, high = self.start, self.end - 1  # keeping at least the newest position
        if self._bytes_from(high) > budget:
            raise MemoryBudgetError(
                f"activation cache: the budget of {budget} bytes is smaller than one position of the "
                f"{len(self.points)} captured points ({self._bytes_from(high)} bytes); raise it or capture fewer points")
        while low < high:
            middle = (low + high) // 2
            if self._bytes_from(middle) <= budget:
                high = middle
            else:
                low = middle + 1
        for chunks in self._chunks.values():
            while chunks and chunks[0].start + chunks[0].length <= low:
                self._total -= chunks.pop(0).nbytes
            if chunks and chunks[0].start < low:
                head = chunks[0]
                self._replace_data(head, low, _own_copy(head.data, low - head.start, head.length))

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
        self._unsettled_copies.clear()
        self._total = 0


def estimate_capture_bytes(n_points: int, n_positions: int, d_model: int, dtype: mx.Dtype, batch: int = 1) -> int:
    """Bytes that capturing ``n_points`` points over ``n_positions`` positions will hold."""
    return n_points * n_positions * d_model * dtype.size * batch
