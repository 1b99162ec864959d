"""Requests and events of the steering panel: steering vectors, SAE clamps and presets (Qt-free,
MLX-free: see :mod:`symbiont_app.engine.handlers`). Requests marked *live* are meant for
``post_live`` (they change engine state between generation steps, so a slider move acts on
the next token); the rest are submitted and may be cancelled."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...protocol import Event, Request

Positions = Any
"""``"all"``, ``"prompt"``, ``"generated"``, ``"last"`` or a tuple of absolute positions."""


@dataclass(frozen=True, kw_only=True)
class InterventionInfo:
    """One row of the intervention table as the steering panel lists it."""

    name: str
    kind: str
    """``vector`` or ``clamp``."""
    hook_point: str
    value: float
    """Coefficient (vector) or clamp value."""
    enabled: bool
    positions: Positions
    relative: bool
    """Vector: coefficient in units of the typical residual norm (False for a clamp)."""
    mode: str
    """Clamp: ``absolute`` or ``max_multiple`` (``absolute`` for a vector)."""
    latent: int | None
    """Clamp: the SAE latent (None for a vector)."""
    label: str
    sae_id: str
    """Clamp: the SAE (empty for a vector)."""
    detail: str
    """One line on where it came from."""


@dataclass(frozen=True, kw_only=True)
class InterventionsChanged(Event):
    items: tuple[InterventionInfo, ...]
    """The whole table, in order."""
    message: str
    """What changed, in words (empty for a plain listing)."""


@dataclass(frozen=True, kw_only=True)
class ListInterventions(Request):
    pass


@dataclass(frozen=True, kw_only=True)
class ClampLatent(Request):
    """*Live*: pin an SAE latent to ``value`` (0 ablates) at ``positions``; replaces an earlier clamp of it."""

    latent: int
    value: float
    mode: str = "absolute"
    positions: Positions = "all"


@dataclass(frozen=True, kw_only=True)
class BuildVector(Request):
    """Extract a steering vector from two prompt lists (or a built-in contrast set) and apply it."""

    name: str
    positive: tuple[str, ...]
    negative: tuple[str, ...]
    contrast_set: str
    """Built-in set name or a .json/.jsonl file; used when ``positive``/``negative`` are empty."""
    layer: int | None = None
    """``resid_post.{layer}``; None: the middle layer."""
    method: str = "mean_diff"
    tokens: str = "last"
    chat_template: bool = True
    coefficient: float = 0.2
    relative: bool = True
    positions: Positions = "all"
    enabled: bool = True
    """Apply it at once, or add it switched off."""


@dataclass(frozen=True, kw_only=True)
class VectorBuilt(Event):
    name: str
    hook_point: str
    norm: float
    typical_norm: float


@dataclass(frozen=True, kw_only=True)
class SetValue(Request):
    """*Live*: an intervention's coefficient (vector) or value (clamp)."""

    name: str
    value: float


@dataclass(frozen=True, kw_only=True)
class SetEnabled(Request):
    """*Live*: switch an intervention on or off (it keeps its settings and its place)."""

    name: str
    enabled: bool


@dataclass(frozen=True, kw_only=True)
class SetPositions(Request):
    """*Live*: where an intervention acts."""

    name: str
    positions: Positions


@dataclass(frozen=True, kw_only=True)
class RemoveIntervention(Request):
    """*Live*."""

    name: str


@dataclass(frozen=True, kw_only=True)
class ExportPreset(Request):
    path: str
    name: str
    description: str = ""
    sampling: Any = None
    """``SamplingSettings`` to store (None: the defaults)."""


@dataclass(frozen=True, kw_only=True)
class PresetExported(Event):
    paths: tuple[str, ...]
    count: int


@dataclass(frozen=True, kw_only=True)
class ImportPreset(Request):
    """Replace the active interventions with a preset's (all or nothing)."""

    path: str
    allow_different_weights: bool = False


@dataclass(frozen=True, kw_only=True)
class PresetImported(Event):
    path: str
    compatibility: str
    messages: tuple[str, ...]
    sampling: Any
    """The preset's ``SamplingSettings``."""
