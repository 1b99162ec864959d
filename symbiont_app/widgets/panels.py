"""The window's dock panels, as a list other modules append to.

``PanelSpec.factory(session, parent) -> QWidget`` builds the panel over the Qt-free
session (``symbiont_app.session.session.AppSession``); the main window makes one dock
per spec in list order, and ``symbiont-app --screenshots DIR`` saves ``DIR/<name>.png``
for each. Add a panel by appending a spec here (import the widget inside the factory,
so this module stays cheap to import).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class PanelSpec:
    name: str
    """File-name-safe id (screenshots, saved dock layout)."""
    title: str
    """Dock title."""
    area: str
    """``right`` or ``bottom``."""
    factory: Callable
    """``factory(session, parent) -> QWidget``."""

    def __post_init__(self):
        if self.area not in ("right", "bottom"):
            raise ValueError(f"panel {self.name!r}: area must be 'right' or 'bottom', not {self.area!r}")


def _model_picker(session, parent):
    from .model_picker import ModelPickerPanel

    return ModelPickerPanel(session, parent)


def _temperature(session, parent):
    from .temperature import TemperaturePanel

    return TemperaturePanel(session, parent)


PANELS: list[PanelSpec] = [
    PanelSpec("model", "Model", "right", _model_picker),
    PanelSpec("temperature", "Temperature / entropy", "bottom", _temperature),
]


# -- APP-PANELS: live feature meters, lens/patching, steering/presets, SAE -----------------------------
def _meters(session, parent):
    from .meters import MetersPanel

    return MetersPanel(session, parent)


def _lens(session, parent):
    from .lens import LensPanel

    return LensPanel(session, parent)


def _steering(session, parent):
    from .steering import SteeringPanel

    return SteeringPanel(session, parent)


def _sae(session, parent):
    from .sae import SaePanel

    return SaePanel(session, parent)


def _dashboard(session, parent):
    from .dashboard import DashboardPanel

    return DashboardPanel(session, parent)


PANELS += [
    PanelSpec("meters", "Feature meters", "right", _meters),
    PanelSpec("dashboard", "Feature dashboard", "right", _dashboard),
    PanelSpec("steering", "Steering", "right", _steering),
    PanelSpec("sae", "SAE", "right", _sae),
    PanelSpec("lens", "Lens / patching", "bottom", _lens),
]


# -- LAB-AUX: lab experiments in their own process (progress, curves, report, plots) --------------------
def _lab(session, parent):
    from .lab import LabPanel

    return LabPanel(session, parent)


PANELS.append(PanelSpec("lab", "Lab", "bottom", _lab))
