"""What the SAE panel's handlers keep on the engine thread beside :class:`EngineState`: where the
loaded SAE came from and its feature records. Interventions are not here: they live in
``EngineState.table``. Kept in ``state.extras["panels"]``; engine thread only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class PanelState:
    sae_path: str = ""
    """The folder or file the loaded SAE was read from (empty when none is loaded)."""
    records: Any = None
    """``FeatureRecords`` of the loaded SAE, or None."""


def panel_state(state) -> PanelState:
    panels = state.extras.get("panels")
    if panels is None:
        panels = state.extras["panels"] = PanelState()
    return panels
