"""What makes the window show the instrument working without any user action.

When a model loads and no SAE is attached, the SAE trained on exactly that model (the
shipped one for the default model, or one the user put in the SAE folders) is loaded, so
the Feature meters are live on the first reply. Matching is by the model fingerprint the
SAE's ``cfg.json`` records: only ``cfg.json`` files are read, the weights only once one
matches (loading checks it again, with the file named on any mismatch).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..engine.handlers.model.messages import ModelLoaded
from .observable import Observable
from .sae import SaeModel


def recorded_fingerprint_short(cfg_path: Path) -> str | None:
    """``ModelFingerprint.short`` of the model an SAE folder's ``cfg.json`` was trained on, else None."""
    from mlx_hooks.fingerprint import ModelFingerprint

    try:
        data = json.loads(cfg_path.read_text(encoding="utf-8"))
        return ModelFingerprint.from_dict(data["symbiont"]["config"]["model_fingerprint"]).short
    except (OSError, ValueError, KeyError, TypeError):
        return None  # not a Symbiont SAE, or unreadable: never attached automatically


def matching_saes(fingerprint_short: str, search_paths: list[Path] | None = None) -> list[str]:
    """Folders of the SAEs trained on the model with this fingerprint, in search order."""
    from mlx_hooks.sae.registry import find_saes

    return [str(folder) for folder in find_saes(search_paths).values()
            if recorded_fingerprint_short(folder / "cfg.json") == fingerprint_short]


class AutoAttachSae(Observable):
    """Loads the matching SAE after a model load when none is attached; :attr:`attached` is the
    folder it asked for (None: no SAE matches this model). Notifies ``attached``."""

    def __init__(self, session):
        super().__init__()
        self.session = session
        self.attached: str | None = None

    def handle_event(self, event) -> None:
        if not isinstance(event, ModelLoaded):
            return
        sae = SaeModel.of(self.session)
        if sae.info is not None or sae.load_request is not None:
            return
        found = matching_saes(event.info.fingerprint)
        self.attached = found[0] if found else None
        if self.attached is not None:
            sae.load(self.attached)  # queued after the load: in place before the first reply
        self.notify("attached")
