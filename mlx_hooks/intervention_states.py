"""Intervention scales: n units, each set off or on, enumerated as 2^n states (one per batch row).

An effective-information measurement (:mod:`mlx_hooks.effective_information`) needs every
combination of its units' settings, drawn uniformly. A *scale* says what the units are and
what "off" and "on" do to an activation ``x`` (``[S, ..., W]``; row s gets state s):

- :class:`SetCoordinates` (micro): units are coordinates of ``x`` (``mlp_hidden`` neurons,
  residual dimensions), each *set* to its low or high value: ``do(x_i = v)``, exactly;
- :class:`SetProjections`: units are directions; each one's projection is set to its low or
  high value (``x ← x + Uᵀ(UUᵀ)⁻¹(v − Ux)``, so every listed projection equals its value
  afterwards, whatever the directions' overlap), the rest of ``x`` untouched;
- :class:`AddDirections` (macro: steering vectors, or their random-direction control): "on"
  adds the unit's vector, "off" adds nothing;
- :class:`ClampLatents` (macro): SAE latents clamped to 0 ("off") or to a value ("on") with
  the SAE's own clamp (:meth:`mlx_hooks.sae.model.SAE.clamp_intervention`: the decoder
  directions move, the reconstruction error stays).

:func:`state_intervention` turns a scale and a state table into one
:class:`~mlx_hooks.interventions.FunctionIntervention` for a batch of 2^n copies of a prompt,
so one forward pass tries every state; :func:`transition_samples` does that for each prompt
of a hooked mlx-lm model and returns the per-prompt transition matrices.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

import mlx.core as mx
import numpy as np

from .effective_information import EffectiveInformationError, one_hot_outputs
from .hooks import hooked
from .interventions import ForwardContext, FunctionIntervention, PositionSpec, position_mask

MAX_UNITS = 10
"""At most 2^10 = 1024 states (rows of one batch)."""


def state_table(n_units: int) -> np.ndarray:
    """Every off/on combination of ``n_units`` units, ``[2^n, n]`` of 0/1; row k is k in binary (unit 0 first)."""
    if not 1 <= n_units <= MAX_UNITS:
        raise EffectiveInformationError(f"an intervention scale needs 1 to {MAX_UNITS} units, got {n_units}")
    k = np.arange(2 ** n_units)[:, None]
    return ((k >> np.arange(n_units - 1, -1, -1)[None]) & 1).astype(np.int8)


def _row_states(states: np.ndarray, x: mx.array) -> mx.array:
    """``states`` ``[S, n]`` as a float mask broadcastable against ``x`` ``[S, ..., W]``: ``[S, 1.., n]``."""
    s = np.asarray(states, dtype=np.float32)
    if s.ndim != 2 or s.shape[0] != x.shape[0]:
        raise EffectiveInformationError(f"state table of shape {list(s.shape)} for a batch of {x.shape[0]} rows")
    return mx.array(s.reshape(s.shape[0], *([1] * (x.ndim - 2)), s.shape[1]))


class Scale(Protocol):
    name: str
    n_units: int

    def edit(self, x: mx.array, states: np.ndarray, ctx: ForwardContext) -> mx.array: ...


def _vector(values, n: int, what: str) -> np.ndarray:
    v = np.asarray(values, dtype=np.float32).reshape(-1)
    if v.size == 1:
        v = np.full(n, float(v[0]), np.float32)
    if v.size != n or not np.isfinite(v).all():
        raise EffectiveInformationError(f"{what}: expected {n} finite values, got {v.tolist()}")
    return v


@dataclass
class SetCoordinates:
    """do(x[i] = low[i] or high[i]) for each listed coordinate i; other coordinates unchanged."""

    name: str
    indices: Sequence[int]
    low: Any
    """One value, or one per unit."""
    high: Any

    def __post_init__(self):
        self.indices = [int(i) for i in self.indices]
        if len(set(self.indices)) != len(self.indices):
            raise EffectiveInformationError(f"{self.name}: coordinate listed twice in {self.indices}")
        self.n_units = len(self.indices)
        self.low = _vector(self.low, self.n_units, f"{self.name} low")
        self.high = _vector(self.high, self.n_units, f"{self.name} high")

    def edit(self, x: mx.array, states: np.ndarray, ctx: ForwardContext) -> mx.array:  # x: [S, ..., W]
        width = x.shape[-1]
        if max(self.indices) >= width or min(self.indices) < -width:
            raise EffectiveInformationError(f"{self.name}: coordinate out of range for width {width}")
        on = np.asarray(states, dtype=bool)  # [S, n]
        values = np.where(on, self.high[None], self.low[None])  # [S, n]
        full = np.zeros((x.shape[0], width), np.float32)
        chosen = np.zeros(width, bool)
        full[:, self.indices] = values
        chosen[self.indices] = True
        shape = (x.shape[0], *([1] * (x.ndim - 2)), width)
        # mx.where copies the set value itself (x + (v − x) would round)
        return mx.where(mx.array(chosen), mx.array(full.reshape(shape)).astype(x.dtype), x)


@dataclass
class SetProjections:
    """do(⟨x, uᵢ⟩ = low[i] or high[i]) along directions ``U`` ``[n, W]`` (linearly independent)."""

    name: str
    directions: Any
    low: Any
    high: Any

    def __post_init__(self):
        u = np.asarray(self.directions, dtype=np.float64)
        if u.ndim != 2 or not np.isfinite(u).all():
            raise EffectiveInformationError(f"{self.name}: directions must be a finite [n, W] array")
        gram = u @ u.T
        if np.linalg.matrix_rank(gram) < u.shape[0]:
            raise EffectiveInformationError(f"{self.name}: the {u.shape[0]} directions are linearly dependent")
        self.n_units = u.shape[0]
        self._u = mx.array(u.astype(np.float32))  # [n, W]
        self._lift = mx.array((np.linalg.inv(gram) @ u).astype(np.float32))  # [n, W]: (UUᵀ)⁻¹U
        self.low = _vector(self.low, self.n_units, f"{self.name} low")
        self.high = _vector(self.high, self.n_units, f"{self.name} high")

    def edit(self, x: mx.array, states: np.ndarray, ctx: ForwardContext) -> mx.array:  # x: [S, ..., W]
        on = _row_states(states, x)  # [S, 1.., n]
        target = on * mx.array(self.high) + (1 - on) * mx.array(self.low)  # [S, 1.., n]
        now = x.astype(mx.float32) @ self._u.T  # [S, ..., n]
        return (x.astype(mx.float32) + (target - now) @ self._lift).astype(x.dtype)


@dataclass
class AddDirections:
    """x ← x + Σ_{i on} vᵢ for vectors ``V`` ``[n, W]`` (their norms are the strengths)."""

    name: str
    vectors: Any

    def __post_init__(self):
        v = np.asarray(self.vectors, dtype=np.float32)
        if v.ndim != 2 or not np.isfinite(v).all():
            raise EffectiveInformationError(f"{self.name}: vectors must be a finite [n, W] array")
        self.n_units = v.shape[0]
        self._v = mx.array(v)

    def edit(self, x: mx.array, states: np.ndarray, ctx: ForwardContext) -> mx.array:
        return (x.astype(mx.float32) + _row_states(states, x) @ self._v).astype(x.dtype)


@dataclass
class ClampLatents:
    """SAE latents clamped to 0 (off) or to ``on_values`` (on), with the SAE's own clamp."""

    name: str
    sae: Any
    latents: Sequence[int]
    on_values: Any
    _clamps: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        self.latents = [int(i) for i in self.latents]
        self.n_units = len(self.latents)
        self.on_values = _vector(self.on_values, self.n_units, f"{self.name} on values")

    def clamp_for(self, state: tuple[int, ...]) -> FunctionIntervention:
        """The SAE clamp of one state (built once, at every position: masking is the caller's)."""
        if state not in self._clamps:
            values = [float(v) if on else 0.0 for v, on in zip(self.on_values, state)]
            self._clamps[state] = self.sae.clamp_intervention(self.latents, values, "all")
        return self._clamps[state]

    def edit(self, x: mx.array, states: np.ndarray, ctx: ForwardContext) -> mx.array:
        rows = [self.clamp_for(tuple(int(b) for b in s))(x[k:k + 1], ctx) for k, s in enumerate(states)]
        return mx.concatenate(rows, axis=0)


def state_intervention(scale: Scale, states: np.ndarray, positions: PositionSpec = "last") -> FunctionIntervention:
    """One intervention for a batch whose row s is set to ``states[s]`` at ``positions``."""
    def apply(x: mx.array, ctx: ForwardContext) -> mx.array:  # x: [S, L, W]
        return mx.where(position_mask(positions, ctx), scale.edit(x, states, ctx), x)

    return FunctionIntervention(apply, name=f"states of {scale.name}")


@dataclass
class TransitionSamples:
    """What each prompt did under each state."""

    per_prompt: np.ndarray
    """``[prompts, states, outputs]``: P(output | do(state), prompt)."""
    outputs: list
    """The output columns: token ids (top-1) or class names."""
    states: np.ndarray
    """``[states, units]`` 0/1."""


def transition_samples(model, prompts: Sequence[Sequence[int]], point: str, scale: Scale, *,
                       positions: PositionSpec = "last", classes: dict[str, Sequence[int]] | None = None,
                       ) -> TransitionSamples:
    """Run each prompt (token ids) once as a batch of every state of ``scale`` at hook ``point``.

    Outputs: without ``classes``, the top-1 next token (the observed tokens become the columns);
    with ``classes`` (name → token ids), the next-token probability summed within each class and
    renormalised over the classes.
    """
    states = state_table(scale.n_units)
    intervention = state_intervention(scale, states, positions)
    rows = []
    with hooked(model, interventions={point: [intervention]}):
        for tokens in prompts:
            batch = mx.array(np.tile(np.asarray(tokens, dtype=np.int32)[None], (len(states), 1)))  # [S, L]
            logits = model(batch)[:, -1, :].astype(mx.float32)  # [S, V]
            if classes is None:
                rows.append(np.array(mx.argmax(logits, axis=-1)))
            else:
                probs = np.array(mx.softmax(logits, axis=-1), dtype=np.float64)
                mass = np.stack([probs[:, list(ids)].sum(axis=1) for ids in classes.values()], axis=1)  # [S, C]
                rows.append(mass / np.maximum(mass.sum(axis=1, keepdims=True), 1e-300))
    if classes is None:
        per_prompt, outputs = one_hot_outputs(np.stack(rows))
    else:
        per_prompt, outputs = np.stack(rows), list(classes)
    return TransitionSamples(per_prompt, outputs, states)


__all__ = ["AddDirections", "ClampLatents", "MAX_UNITS", "Scale", "SetCoordinates", "SetProjections",
           "TransitionSamples", "state_intervention", "state_table", "transition_samples"]
