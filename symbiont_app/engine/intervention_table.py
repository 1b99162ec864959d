"""The engine's one ordered list of interventions: steering vectors, SAE clamps and ablations.

Everything else is derived from it: the ``{hook point: [intervention]}`` a generation runs
(enabled entries, in table order, so two interventions at one point compose in the order
the user added them), the steering panel's list (:class:`InterventionInfo`) and a preset's
entries. A switched-off entry stays in the table with its settings and its live
intervention, and is only left out of what a generation reads.

Each entry holds its live intervention object. A vector's coefficient and positions live
on its ``AddVector`` (``entry.applied``), so a slider move changes them in place and the
next forward reads them: nothing is rebuilt. A clamp's target is baked into its
intervention when it is built, so a clamp's value or positions change by replacing the
entry (in place: it keeps its row).

Lives in ``EngineState.table``; engine thread only. Holds MLX objects but imports no MLX
itself: the objects are made by the handlers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

from .handlers.steering.messages import InterventionInfo


def clamp_name(latent: int) -> str:
    """The table name of a clamp of the loaded SAE's latent (one clamp per latent)."""
    return f"latent-{int(latent)}"


@dataclass(eq=False)
class VectorEntry:
    """A steering vector being applied."""

    name: str
    applied: Any
    """``mlx_hooks.steering.AppliedVector``: the vector, its hook point and the live ``AddVector``
    (its ``scale`` is the coefficient, its ``positions`` where it acts)."""
    enabled: bool = True

    kind = "vector"

    @property
    def hook_point(self) -> str:
        return self.applied.hook_point

    @property
    def intervention(self) -> Any:
        return self.applied.intervention

    @property
    def value(self) -> float:
        """The coefficient (read from the live ``AddVector``)."""
        return self.applied.coefficient

    @property
    def positions(self) -> Any:
        return self.applied.positions

    def info(self) -> InterventionInfo:
        applied, vector = self.applied, self.applied.vector
        origin = vector.source.get("contrast_set") or "prompts"
        return InterventionInfo(
            name=self.name, kind=self.kind, hook_point=applied.hook_point, value=applied.coefficient,
            enabled=self.enabled, positions=applied.positions, relative=applied.relative, mode="absolute", latent=None,
            label="", sae_id="",
            detail=f"{vector.method} from {origin}, norm {vector.norm:.3g}, typical residual {vector.typical_norm:.3g}",
        )


@dataclass(eq=False)
class ClampEntry:
    """An SAE latent pinned to a value (an ablation when the value is 0)."""

    name: str
    latent: int
    value: float
    """As the user gave it: absolute, or a multiple of the latent's recorded maximum (``mode``)."""
    mode: str
    """``absolute`` or ``max_multiple``."""
    positions: Any
    label: str
    sae_id: str
    hook_point: str
    """The SAE's hook point."""
    intervention: Any
    """The live clamp (``mlx_hooks.sae.meters.clamp``), built from the fields above."""
    enabled: bool = True

    kind = "clamp"

    def info(self) -> InterventionInfo:
        return InterventionInfo(
            name=self.name, kind=self.kind, hook_point=self.hook_point, value=self.value, enabled=self.enabled,
            positions=self.positions, relative=False, mode=self.mode, latent=self.latent, label=self.label,
            sae_id=self.sae_id,
            detail=f"SAE {self.sae_id} latent {self.latent}" + (f" ({self.label})" if self.label else ""),
        )


Entry = Union[VectorEntry, ClampEntry]


class InterventionTable:
    """Interventions in the order the user added them (the panel's rows, the order they apply)."""

    def __init__(self) -> None:
        self.entries: list[Entry] = []

    def __iter__(self):
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def names(self) -> list[str]:
        return [e.name for e in self.entries]

    def find(self, name: str) -> Entry | None:
        return next((e for e in self.entries if e.name == name), None)

    def unique_name(self, base: str) -> str:
        """``base``, or ``base-2``, ``base-3``... if the table has it already."""
        names = set(self.names())
        name, n = base, 2
        while name in names:
            name, n = f"{base}-{n}", n + 1
        return name

    def append(self, entry: Entry) -> None:
        if self.find(entry.name) is not None:
            raise ValueError(f"the intervention table has {entry.name!r} already")
        self.entries.append(entry)

    def put(self, entry: Entry) -> None:
        """Replace the entry of the same name where it stands, else append."""
        for i, e in enumerate(self.entries):
            if e.name == entry.name:
                self.entries[i] = entry
                return
        self.entries.append(entry)

    def remove(self, name: str) -> Entry | None:
        entry = self.find(name)
        if entry is not None:
            self.entries.remove(entry)
        return entry

    def clear(self) -> None:
        self.entries.clear()

    def clamps(self) -> list[ClampEntry]:
        return [e for e in self.entries if isinstance(e, ClampEntry)]

    def interventions(self) -> dict[str, list]:
        """Enabled entries' live interventions as ``{hook point: [intervention, ...]}``, in table order."""
        out: dict[str, list] = {}
        for entry in self.entries:
            if entry.enabled:
                out.setdefault(entry.hook_point, []).append(entry.intervention)
        return out

    def infos(self) -> tuple[InterventionInfo, ...]:
        """Every entry (switched-off ones too) as the steering panel lists it."""
        return tuple(e.info() for e in self.entries)

    def preset_entries(self) -> tuple[list, dict]:
        """Enabled entries as preset entries in table order, and the vectors they name
        (``mlx_hooks.presets`` ``SteeringEntry`` / ``SaeClampEntry``, ``{name: SteeringVector}``)."""
        from mlx_hooks.presets import SaeClampEntry, SteeringEntry

        entries, vectors = [], {}
        for e in self.entries:
            if not e.enabled:
                continue
            if isinstance(e, VectorEntry):
                a = e.applied
                entries.append(SteeringEntry(a.vector.name, a.hook_point, a.coefficient, a.relative, a.positions))
                vectors[a.vector.name] = a.vector
            else:
                entries.append(SaeClampEntry(e.sae_id, e.hook_point, e.latent, e.label, e.value, e.mode, e.positions))
        return entries, vectors
