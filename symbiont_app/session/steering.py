"""The steering panel's Qt-free state: active interventions, vector building, presets.

Slider, toggle and position changes go through ``post_live`` (applied between
generation steps, so the next token feels them); building a vector and preset
import/export are ordinary requests. The engine answers every change with the full
list (:class:`InterventionsChanged`), which is what the panel shows.

Notifies ``items``, ``status`` and ``busy``.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from ..engine.handlers.steering.messages import (
    BuildVector, ExportPreset, ImportPreset, InterventionInfo, InterventionsChanged, ListInterventions, PresetExported,
    PresetImported, RemoveIntervention, SetEnabled, SetPositions, SetValue, VectorBuilt,
)
from ..engine.handlers.model.messages import ModelLoaded, ModelUnloaded
from ..engine.protocol import Failed, Finished
from .observable import Observable
from .sae import attach

POSITION_MODES = ("all", "prompt", "generated", "last")


def contrast_set_names() -> list[str]:
    """Built-in contrast sets (file names only: no engine needed)."""
    folder = resources.files("mlx_hooks") / "contrast_sets"
    return sorted(p.name[: -len(".json")] for p in folder.iterdir() if p.name.endswith(".json"))


def parse_positions(text: str):
    """``all``/``prompt``/``generated``/``last`` or comma-separated absolute positions."""
    text = (text or "all").strip()
    if text in POSITION_MODES:
        return text
    try:
        return tuple(int(p) for p in text.replace(" ", "").split(",") if p)
    except ValueError:
        raise ValueError(f"positions {text!r}: use {', '.join(POSITION_MODES)} or numbers like 3,4,5") from None


class SteeringModel(Observable):
    def __init__(self, session: Any = None):
        super().__init__()
        self.session = session
        self.items: tuple[InterventionInfo, ...] = ()
        self.status = ""
        self.pending: dict[int, str] = {}
        """Requests in flight -> what they do (for status lines)."""
        self.last_import: PresetImported | None = None
        self.last_export: PresetExported | None = None
        self._live_ids: set[int] = set()

    @classmethod
    def of(cls, session) -> "SteeringModel":
        return attach(session, "steering", cls)

    def item(self, name: str) -> InterventionInfo | None:
        return next((i for i in self.items if i.name == name), None)

    # -- live changes -----------------------------------------------------------------------------
    def _live(self, request) -> None:
        self._live_ids.add(request.request_id)
        self.session.post_live(request)

    def refresh(self) -> None:
        self._live(ListInterventions(request_id=self.session.new_id()))

    def set_value(self, name: str, value: float) -> None:
        self._live(SetValue(request_id=self.session.new_id(), name=name, value=float(value)))

    def set_enabled(self, name: str, enabled: bool) -> None:
        self._live(SetEnabled(request_id=self.session.new_id(), name=name, enabled=bool(enabled)))

    def set_positions(self, name: str, positions) -> None:
        if isinstance(positions, str) and positions not in POSITION_MODES:
            positions = parse_positions(positions)
        self._live(SetPositions(request_id=self.session.new_id(), name=name, positions=positions))

    def remove(self, name: str) -> None:
        self._live(RemoveIntervention(request_id=self.session.new_id(), name=name))

    # -- requests ---------------------------------------------------------------------------------
    def _submit(self, request, what: str, channel: str) -> int:
        rid = self.session.submit(request, channel=channel)
        self.pending[rid] = what
        self.status = what + "…"
        self.notify("status")
        self.notify("busy")
        return rid

    def build(self, name: str, positive=(), negative=(), contrast_set: str = "", layer: int | None = None,
              coefficient: float = 0.2, relative: bool = True, positions="all", method: str = "mean_diff",
              tokens: str = "last", chat_template: bool = True, enabled: bool = True) -> int:
        request = BuildVector(
            request_id=self.session.new_id(), name=name, positive=tuple(p for p in positive if p.strip()),
            negative=tuple(n for n in negative if n.strip()), contrast_set=contrast_set, layer=layer, method=method,
            tokens=tokens, chat_template=chat_template, coefficient=float(coefficient), relative=relative,
            positions=positions, enabled=enabled,
        )
        return self._submit(request, f"building vector {name}", "steer-build")

    def export_preset(self, path: str, name: str, description: str = "") -> int:
        sampling = None
        settings = getattr(self.session, "settings", None)
        if settings is not None:
            sampling = settings.data.sampling.sampling()
        return self._submit(ExportPreset(request_id=self.session.new_id(), path=str(path), name=name,
                                         description=description, sampling=sampling),
                            f"exporting preset to {path}", "preset")

    def import_preset(self, path: str, allow_different_weights: bool = False) -> int:
        return self._submit(ImportPreset(request_id=self.session.new_id(), path=str(path),
                                         allow_different_weights=allow_different_weights),
                            f"importing {path}", "preset")

    @property
    def busy(self) -> bool:
        return bool(self.pending)

    # -- events -------------------------------------------------------------------------------------
    def handle_event(self, event) -> None:
        if isinstance(event, InterventionsChanged):
            self._live_ids.discard(event.request_id)
            self.items = tuple(event.items)
            if event.message:
                self.status = event.message
                self.notify("status")
            self.notify("items")
        elif isinstance(event, VectorBuilt):
            self.status = (f"built {event.name} at {event.hook_point} (norm {event.norm:.3g}, typical residual "
                           f"{event.typical_norm:.3g})")
            self.notify("status")
        elif isinstance(event, PresetExported):
            self.last_export = event
            self.status = f"exported {event.count} intervention(s) to {', '.join(event.paths)}"
            settings = getattr(self.session, "settings", None)
            if settings is not None and event.paths:
                settings.add_recent_file("preset", event.paths[0])
            self.notify("status")
        elif isinstance(event, PresetImported):
            self.last_import = event
            notes = "".join(f"\n{m}" for m in event.messages)
            self.status = f"imported {event.path}: {event.compatibility}{notes}"
            settings = getattr(self.session, "settings", None)
            if settings is not None:
                settings.add_recent_file("preset", event.path)
            self.notify("status")
        elif isinstance(event, (ModelLoaded, ModelUnloaded)):
            self.items = ()
            self.notify("items")
        elif isinstance(event, (Finished, Failed)) and event.request_id in self.pending:
            what = self.pending.pop(event.request_id)
            if isinstance(event, Failed):
                self.status = f"{what} failed: {event.message}"
                self.notify("status")
            elif event.reason == "cancelled":
                self.status = f"{what}: cancelled"
                self.notify("status")
            self.notify("busy")
        elif isinstance(event, Failed) and event.request_id in self._live_ids:
            # a live change that failed (e.g. a bad position list): say so next to the controls
            self._live_ids.discard(event.request_id)
            self.status = event.message
            self.notify("status")
