"""Interventions: functions of one hook point's activation, correct under the KV cache.

Every forward call tells interventions the absolute positions it covers
(:class:`ForwardContext`), so a mask such as "generated tokens only" or "position 5"
means the same during a 40-token prefill as during 1-token decode steps.

An intervention is any callable ``(x, ctx) -> x'`` with ``x: [B, L, D]``. Built-ins:
:class:`AddVector` (steering), :class:`Patch` (replace with cached activations),
:class:`Ablate` (zero or a fixed value) and :class:`FunctionIntervention` (anything
else, e.g. SAE clamping). The hook layer casts every result back to the activation's
dtype, and the built-ins cast their own constants first, so a float32 vector never
promotes a bf16 model's residual stream.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence, Union

import mlx.core as mx
import numpy as np

PositionSpec = Union[str, Sequence[int]]
"""``"all"``, ``"prompt"``, ``"generated"``, ``"last"`` or explicit absolute positions."""


class ForwardContext:
    """Where in the sequence the current forward call is.

    ``length``: the call's tokens per row; ``start``: its first position (of the longest row, when
    rows are left-padded); ``prompt_length``: positions below it are prompt, the rest generated
    (None: everything is prompt); :attr:`positions`: every token's absolute position."""

    __slots__ = ("_offset", "length", "start", "prompt_length", "_positions")

    def __init__(self, offset, length: int, start: int, prompt_length: int | None = None):
        self._offset, self.length, self.start, self.prompt_length = offset, length, start, prompt_length
        self._positions: mx.array | None = None

    @classmethod
    def from_offset(cls, offset, length: int, prompt_length: int | None = None) -> "ForwardContext":
        """Positions ``offset .. offset+length-1``; ``offset`` may be per-row (``[B]`` array)."""
        if isinstance(offset, mx.array) and offset.ndim > 0:
            return cls(offset, length, int(mx.max(offset).item()), prompt_length)
        return cls(int(offset), length, int(offset), prompt_length)

    @property
    def positions(self) -> mx.array:
        """Absolute positions of the call's tokens, ``[B, L]`` int32 (negative = left padding).

        Made on first use: the hooks build a context for every forward call, and most calls
        (captures only) never ask for positions, so the two graph nodes were per-step waste."""
        if self._positions is None:
            steps = mx.arange(self.length, dtype=mx.int32)
            if isinstance(self._offset, mx.array):
                self._positions = self._offset.astype(mx.int32)[:, None] + steps[None]  # [B, L]
            else:
                self._positions = (steps + self._offset)[None]  # [1, L]
        return self._positions


def position_mask(spec: PositionSpec, ctx: ForwardContext) -> mx.array:
    """Boolean ``[B or 1, L, 1]`` mask of the positions ``spec`` selects in this call."""
    pos = ctx.positions  # [B, L]
    valid = pos >= 0
    if isinstance(spec, str):
        if spec == "all":
            mask = valid
        elif spec == "prompt":
            mask = valid if ctx.prompt_length is None else valid & (pos < ctx.prompt_length)
        elif spec == "generated":
            mask = mx.zeros_like(valid) if ctx.prompt_length is None else pos >= ctx.prompt_length
        elif spec == "last":
            # The newest token of this call: during decode, every step's token.
            mask = mx.arange(pos.shape[1])[None] == pos.shape[1] - 1
            mask = mx.broadcast_to(mask, pos.shape) & valid
        else:
            raise ValueError(f"unknown position mode {spec!r}: use all, prompt, generated, last or a list of indices")
    else:
        wanted = mx.array(np.asarray(list(spec), dtype=np.int32))  # [K]
        if wanted.size == 0:
            mask = mx.zeros_like(valid)
        else:
            mask = (pos[..., None] == wanted).any(axis=-1) & valid
    return mask[..., None]


class Intervention(Protocol):
    def __call__(self, x: mx.array, ctx: ForwardContext) -> mx.array: ...


@dataclass
class AddVector:
    """x ← x + scale·v at the masked positions (activation steering).

    With ``relative=True`` the added vector is ``scale · ‖x‖ · v/‖v‖`` per position, so a
    scale means "this fraction of the residual's own norm" on any model.
    Mutable on purpose: changing ``scale`` takes effect on the next forward call. In
    ``hooked_stream_generate`` that is the one producing the token after the next: mlx-lm
    builds step k+1's forward before it hands out token k.
    """

    vector: mx.array
    """Direction to add, ``[D]``."""
    scale: float = 1.0
    """Coefficient c (absolute, or a fraction of the residual norm when ``relative``)."""
    positions: PositionSpec = "all"
    """Which positions get the vector."""
    relative: bool = False
    """Scale by each position's residual norm (and use the unit vector)."""

    def __call__(self, x: mx.array, ctx: ForwardContext) -> mx.array:  # x: [B, L, D]
        v = self.vector.astype(x.dtype)  # [D]
        if self.relative:
            v = v / mx.maximum(mx.linalg.norm(v.astype(mx.float32)), 1e-12).astype(x.dtype)
            norms = mx.linalg.norm(x.astype(mx.float32), axis=-1, keepdims=True).astype(x.dtype)  # [B, L, 1]
            delta = (self.scale * norms) * v  # [B, L, D]
        else:
            delta = mx.array(self.scale, dtype=x.dtype) * v  # [D]
        return mx.where(position_mask(self.positions, ctx), x + delta, x)


@dataclass
class Ablate:
    """Replace the masked positions with zero, or with a fixed vector (mean ablation)."""

    positions: PositionSpec = "all"
    value: mx.array | None = None
    """``[D]`` replacement (e.g. the mean activation); None means zero."""

    def __call__(self, x: mx.array, ctx: ForwardContext) -> mx.array:
        replacement = mx.zeros_like(x) if self.value is None else mx.broadcast_to(self.value.astype(x.dtype), x.shape)
        return mx.where(position_mask(self.positions, ctx), replacement, x)


@dataclass
class Patch:
    """Replace activations with ones cached from another run (activation patching).

    ``source[..., p, :]`` replaces position ``p`` for every ``p`` in ``positions`` (default:
    all positions the source covers). ``source`` is ``[T, D]`` (same for every row) or
    ``[B, T, D]``. With ``per_row``, row ``b`` of the batch patches only position
    ``per_row[b]``: one batched forward then tries a patch at many positions at once.
    """

    source: mx.array
    positions: PositionSpec | None = None
    per_row: Sequence[int] | None = None

    def __call__(self, x: mx.array, ctx: ForwardContext) -> mx.array:  # x: [B, L, D]
        source = self.source if self.source.ndim == 3 else self.source[None]  # [B|1, T, D]
        pos = ctx.positions  # [B|1, L]
        inside = (pos >= 0) & (pos < source.shape[1])
        gathered = mx.take_along_axis(
            mx.broadcast_to(source, (max(source.shape[0], x.shape[0]), *source.shape[1:])),
            mx.broadcast_to(mx.clip(pos, 0, source.shape[1] - 1), (x.shape[0], pos.shape[1]))[..., None],
            axis=1,
        )  # [B, L, D]
        mask = inside[..., None]
        if self.positions is not None:
            mask = mask & position_mask(self.positions, ctx)
        if self.per_row is not None:
            wanted = mx.array(np.asarray(self.per_row, dtype=np.int32))[:, None]  # [B, 1]
            mask = mask & (pos == wanted)[..., None]
        return mx.where(mask, gathered.astype(x.dtype), x)


@dataclass
class FunctionIntervention:
    """Any ``fn(x, ctx) -> x`` (SAE clamps, custom edits); the hook casts the result."""

    fn: Callable[[mx.array, ForwardContext], mx.array]
    name: str = field(default="function")

    def __call__(self, x: mx.array, ctx: ForwardContext) -> mx.array:
        return self.fn(x, ctx)
