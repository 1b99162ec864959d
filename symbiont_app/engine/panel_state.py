"""What the steering/SAE handlers keep on the engine thread, beside :class:`EngineState`.

The engine state holds what generation reads: ``state.steering`` (the enabled vectors)
and ``state.clamps`` (the enabled clamps, ``name -> {hook point: [intervention]}``).
This module keeps the full list — disabled entries included, with the settings the
panel shows — so a switched-off intervention keeps its coefficient and position mode,
and a preset can be written from it. Lives in ``state.extras["panels"]``; engine thread only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .panels_protocol import InterventionInfo


@dataclass
class VectorItem:
    applied: Any
    """``mlx_hooks.steering.AppliedVector`` (its ``intervention`` is the live ``AddVector``)."""
    enabled: bool = True


@dataclass
class ClampItem:
    latent: int
    value: float
    mode: str = "absolute"
    positions: Any = "all"
    label: str = ""
    sae_id: str = ""
    hook_point: str = ""
    enabled: bool = True


@dataclass
class PanelState:
    order: list[str] = field(default_factory=list)
    """Intervention names in the order they were added (the panel's list order)."""
    vectors: dict[str, VectorItem] = field(default_factory=dict)
    clamps: dict[str, ClampItem] = field(default_factory=dict)
    sae_path: str = ""
    records: Any = None
    """``FeatureRecords`` of the loaded SAE, or None."""


def panel_state(state) -> PanelState:
    panels = state.extras.get("panels")
    if panels is None:
        panels = state.extras["panels"] = PanelState()
    return panels


def clamp_name(latent: int) -> str:
    return f"latent-{int(latent)}"


def describe_positions(positions) -> str:
    return positions if isinstance(positions, str) else ",".join(str(p) for p in positions)


def infos(state) -> tuple[InterventionInfo, ...]:
    panels = panel_state(state)
    out = []
    for name in panels.order:
        if name in panels.vectors:
            item = panels.vectors[name]
            applied = item.applied
            vector = applied.vector
            origin = vector.source.get("contrast_set") or "prompts"
            out.append(InterventionInfo(
                name=name, kind="vector", hook_point=applied.hook_point, value=applied.coefficient,
                enabled=item.enabled, positions=applied.positions, relative=applied.relative,
                detail=f"{vector.method} from {origin}, norm {vector.norm:.3g}, typical residual {vector.typical_norm:.3g}",
            ))
        elif name in panels.clamps:
            c = panels.clamps[name]
            out.append(InterventionInfo(
                name=name, kind="clamp", hook_point=c.hook_point, value=c.value, enabled=c.enabled,
                positions=c.positions, relative=False, mode=c.mode, latent=c.latent, label=c.label, sae_id=c.sae_id,
                detail=f"SAE {c.sae_id} latent {c.latent}" + (f" ({c.label})" if c.label else ""),
            ))
    return tuple(out)
