"""Find SAEs by id: what presets refer to (``SaeClampEntry.sae_id``) resolved to folders.

Searched, in order: the folders in ``SYMBIONT_SAE_PATH`` (``os.pathsep``-separated), the
user's SAE folder (``<cache>/saes``, where trained SAEs can be put), and the SAEs shipped
with Symbiont (``sae_weights/``). Only ``cfg.json`` files are read while searching.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Callable

from ..errors import SAELoadError

SHIPPED_DIR = Path(getattr(sys, "_MEIPASS", Path(__file__).resolve().parents[2])) / "sae_weights"


def sae_search_paths() -> list[Path]:
    from ..gguf_convert import default_cache_dir

    extra = [Path(p) for p in os.environ.get("SYMBIONT_SAE_PATH", "").split(os.pathsep) if p]
    return [*extra, default_cache_dir() / "saes", SHIPPED_DIR]


def find_saes(paths: list[Path] | None = None) -> dict[str, Path]:
    """``{sae_id: folder}`` of every SAE folder (``cfg.json`` with an id) under ``paths``; first wins."""
    found: dict[str, Path] = {}
    for root in paths if paths is not None else sae_search_paths():
        if not root.is_dir():
            continue
        for cfg in sorted(root.rglob("cfg.json")):
            try:
                data = json.loads(cfg.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError, UnicodeDecodeError):
                continue  # not ours to judge here; loading it by path gives the precise error
            sae_id = (data.get("symbiont") or {}).get("config", {}).get("sae_id") or data.get("neuronpedia_id")
            if sae_id:
                found.setdefault(str(sae_id), cfg.parent)
    return found


def make_resolver(model: Any, paths: list[Path] | None = None) -> Callable[[str], Any]:
    """A ``sae_id -> SAE`` function for presets, checking each SAE against ``model``; cached."""
    from .formats import load_sae

    cache: dict[str, Any] = {}

    def resolve(sae_id: str):
        if sae_id not in cache:
            known = find_saes(paths)
            if sae_id not in known:
                searched = ", ".join(str(p) for p in (paths if paths is not None else sae_search_paths()))
                raise SAELoadError(
                    f"SAE {sae_id!r} not found (searched {searched}; found: {', '.join(sorted(known)) or 'none'}); "
                    "put its folder under one of those paths or in SYMBIONT_SAE_PATH"
                )
            cache[sae_id] = load_sae(known[sae_id], model)
        return cache[sae_id]

    return resolve
