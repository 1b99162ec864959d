"""Applying a preset to a loaded model: fingerprint check, SAE resolution, interventions.

Everything is checked before anything is built, and the result is a new object: a
preset that fails any check leaves nothing attached and no SAE intervention created.

- Fingerprint: an exact match loads; the same architecture with different weights (a
  fine-tune, another quantization) loads only with ``allow_different_weights=True``, and
  then with a warning (``warnings.warn`` and :attr:`AppliedPreset.messages`); anything
  else is refused with the list of fields that differ.
- Steering entries: the vector's width must be the model's, the hook point must exist.
- SAE clamps: each SAE is found through the caller's ``sae_resolver(sae_id)``, which
  returns an object with ``cfg.sae_id``, ``cfg.hook_point``, ``cfg.d_in``, ``cfg.d_sae``,
  ``max_activations`` (``[d_sae]`` or None) and
  ``clamp_intervention(latents, values, positions) -> Intervention``. Its hook point
  must be the clamp's, its ``d_in`` the model's width, the latent below ``d_sae``, and
  ``max_multiple`` values need recorded maximum activations. Clamps of one SAE with the
  same positions become one intervention.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import mlx.nn as nn
import numpy as np

from .errors import HookPointError
from .fingerprint import ModelFingerprint
from .interventions import Intervention
from .points import ModelAdapter
from .presets import Preset, PresetError, SaeClampEntry, SteeringEntry, read_preset
from .sampling import SamplingSettings
from .steering import SteeringError, SteeringSet

SaeResolver = Callable[[str], Any]
"""``sae_id -> SAE object`` (see the module docstring); may raise or return None when it has none."""


@dataclass(frozen=True)
class Compatibility:
    """How a preset's target model relates to the loaded one."""

    status: str
    """``exact``, ``different_weights`` (same architecture and shapes) or ``incompatible``."""
    differences: tuple[str, ...] = ()
    """``field: preset's value != loaded model's value`` for each field that differs."""

    def describe(self) -> str:
        if self.status == "exact":
            return "exact match: same architecture and weights"
        kind = "same architecture, different weights" if self.status == "different_weights" else "incompatible"
        return f"{kind} ({'; '.join(self.differences)}; preset's value first)"


def check_compatibility(target: ModelFingerprint, loaded: ModelFingerprint) -> Compatibility:
    differences = tuple(target.differences(loaded))
    if not differences:
        return Compatibility("exact")
    return Compatibility("different_weights" if target.same_architecture(loaded) else "incompatible", differences)


@dataclass
class AppliedPreset:
    """A preset ready to use with ``hooked(...)`` / ``hooked_stream_generate(interventions=...)``."""

    preset: Preset
    interventions: dict[str, list[Intervention]]
    """``{hook_point: [interventions]}`` in the preset's order."""
    sampling: SamplingSettings
    steering: SteeringSet
    """The live steering vectors: change coefficients here between turns."""
    compatibility: Compatibility
    messages: list[str] = field(default_factory=list)
    """Warnings and notes for the user (different weights, migrations)."""


def _where(preset: Preset, index: int) -> str:
    return f"{preset.origin or 'preset ' + repr(preset.name)}: interventions[{index}]"


def _point(adapter: ModelAdapter, name: str, where: str) -> str:
    try:
        return adapter.parse(name).name
    except HookPointError as exc:
        raise PresetError(f"{where}: {exc}") from exc


def _resolve_sae(resolver: SaeResolver | None, entry: SaeClampEntry, where: str, cache: dict) -> Any:
    if entry.sae_id in cache:
        return cache[entry.sae_id]
    if resolver is None:
        raise PresetError(f"{where}: clamps SAE {entry.sae_id!r}, but no SAE resolver was given to find it")
    try:
        sae = resolver(entry.sae_id)
    except Exception as exc:  # noqa: BLE001 - any resolver failure means the same to the user
        raise PresetError(f"{where}: SAE {entry.sae_id!r} could not be found ({type(exc).__name__}: {exc})") from exc
    if sae is None:
        raise PresetError(f"{where}: SAE {entry.sae_id!r} could not be found")
    cache[entry.sae_id] = sae
    return sae


def _check_clamp(sae: Any, entry: SaeClampEntry, adapter: ModelAdapter, where: str) -> tuple[str, float]:
    """Validate one clamp against its SAE; returns (SAE hook point, absolute value)."""
    cfg = sae.cfg
    point = _point(adapter, entry.hook_point, where)
    sae_point = _point(adapter, cfg.hook_point, f"{where}: SAE {entry.sae_id!r}")
    if point != sae_point:
        raise PresetError(f"{where}: SAE {entry.sae_id!r} reads {sae_point}, but the clamp is at {point}")
    if int(cfg.d_in) != adapter.d_model:
        raise PresetError(f"{where}: SAE {entry.sae_id!r} has d_in {cfg.d_in}, the model's width is {adapter.d_model}")
    if not 0 <= entry.latent < int(cfg.d_sae):
        raise PresetError(f"{where}: latent {entry.latent} is out of range for SAE {entry.sae_id!r} (d_sae {cfg.d_sae})")
    if entry.value_mode == "absolute":
        return point, float(entry.value)
    maxima = sae.max_activations
    if maxima is None:
        raise PresetError(
            f"{where}: value_mode max_multiple needs the maximum activations of SAE {entry.sae_id!r}, and it has "
            "none recorded"
        )
    maxima = np.asarray(maxima)
    if maxima.shape != (int(cfg.d_sae),):
        raise PresetError(f"{where}: SAE {entry.sae_id!r} max_activations has shape {list(maxima.shape)}, expected [{cfg.d_sae}]")
    return point, float(entry.value) * float(maxima[entry.latent])


def apply_preset(
    preset: Preset, model: nn.Module, fingerprint: ModelFingerprint, *, sae_resolver: SaeResolver | None = None,
    allow_different_weights: bool = False,
) -> AppliedPreset:
    """Check ``preset`` against the loaded model and build its interventions (all or nothing)."""
    name = preset.origin or f"preset {preset.name!r}"
    compatibility = check_compatibility(preset.fingerprint, fingerprint)
    messages = list(preset.notes)
    if compatibility.status == "incompatible":
        raise PresetError(
            f"{name}: made for {preset.target_model_name} ({preset.fingerprint.short}), which is not the loaded model "
            f"({fingerprint.short}): {'; '.join(compatibility.differences)} (preset's value first)"
        )
    if compatibility.status == "different_weights":
        if not allow_different_weights:
            raise PresetError(
                f"{name}: made for {preset.target_model_name}, which has the loaded model's architecture but different "
                f"weights ({'; '.join(compatibility.differences)}); allow different weights to load it anyway"
            )
        message = (f"{name}: loading a preset made for {preset.target_model_name} ({preset.fingerprint.short}) onto "
                   f"different weights ({fingerprint.short}); steering may act differently")
        messages.append(message)
        warnings.warn(message, stacklevel=2)

    # 1. check everything
    adapter = ModelAdapter(model)
    steering_checks, clamp_checks, saes = [], [], {}
    for index, entry in enumerate(preset.interventions):
        where = _where(preset, index)
        if isinstance(entry, SteeringEntry):
            vector = preset.vectors.get(entry.vector)
            if vector is None:
                raise PresetError(f"{where}: vector {entry.vector!r} is not among the preset's vectors")
            if vector.d_model != adapter.d_model:
                raise PresetError(f"{where}: vector {entry.vector!r} has shape [{vector.d_model}], the model's width is "
                                  f"{adapter.d_model}")
            if entry.relative and vector.typical_norm <= 0:
                raise PresetError(f"{where}: relative coefficient, but vector {entry.vector!r} has no typical norm")
            steering_checks.append((index, entry, vector, _point(adapter, entry.hook_point, where)))
        else:
            sae = _resolve_sae(sae_resolver, entry, where, saes)
            point, value = _check_clamp(sae, entry, adapter, where)
            clamp_checks.append((index, entry, point, value))
    groups: dict[tuple, dict] = {}
    for index, entry, point, value in clamp_checks:
        key = (entry.sae_id, repr(entry.positions))
        group = groups.setdefault(key, {"first": index, "point": point, "latents": [], "values": [], "entry": entry})
        if entry.latent in group["latents"]:
            raise PresetError(f"{_where(preset, index)}: latent {entry.latent} of SAE {entry.sae_id!r} is clamped twice")
        group["latents"].append(entry.latent)
        group["values"].append(value)

    # 2. build (nothing above has created an intervention)
    steering = SteeringSet(model)
    ordered: list[tuple[int, str, Intervention]] = []
    try:
        for index, entry, vector, point in steering_checks:
            applied = steering.add(vector, entry.coefficient, relative=entry.relative, positions=entry.positions,
                                   hook_point=point)
            ordered.append((index, point, applied.intervention))
    except SteeringError as exc:
        raise PresetError(f"{name}: {exc}") from exc
    for (sae_id, _), group in groups.items():
        positions = group["entry"].positions
        intervention = saes[sae_id].clamp_intervention(list(group["latents"]), list(group["values"]), positions)
        ordered.append((group["first"], group["point"], intervention))
    interventions: dict[str, list[Intervention]] = {}
    for _, point, intervention in sorted(ordered, key=lambda item: item[0]):
        interventions.setdefault(point, []).append(intervention)
    return AppliedPreset(preset, interventions, preset.sampling, steering, compatibility, messages)


def import_preset(
    path: str | Path, model: nn.Module, fingerprint: ModelFingerprint, *, sae_resolver: SaeResolver | None = None,
    allow_different_weights: bool = False,
) -> AppliedPreset:
    """Read a preset file and apply it to the loaded model (see :func:`apply_preset`)."""
    return apply_preset(read_preset(path), model, fingerprint, sae_resolver=sae_resolver,
                        allow_different_weights=allow_different_weights)
