"""Settings that persist between runs, in one JSON file written atomically.

The file is ``settings.json`` in ``$SYMBIONT_CONFIG_DIR`` (tests set it to a temporary
folder), else the platform's config folder: ``~/Library/Application Support/Symbiont``
(macOS: ``~/Library/Preferences`` belongs to the system's own preference files),
``%APPDATA%/Symbiont`` (Windows), ``$XDG_CONFIG_HOME/symbiont`` or ``~/.config/symbiont``
(Linux). Settings an older version wrote to ``~/Library/Preferences/Symbiont`` are read
from there until the first save writes the new place. A file that cannot be read is
reported and replaced by defaults, never a reason not to start.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from .observable import Observable

CONFIG_DIR_ENV = "SYMBIONT_CONFIG_DIR"
MAX_RECENT = 10


def config_dir() -> Path:
    if env := os.environ.get(CONFIG_DIR_ENV):
        return Path(env).expanduser()
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "Symbiont"
    if sys.platform == "win32":
        return Path(os.environ.get("APPDATA") or Path.home() / "AppData" / "Roaming") / "Symbiont"
    xdg = os.environ.get("XDG_CONFIG_HOME")
    return (Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".config") / "symbiont"


@dataclass
class SamplingPrefs:
    temp: float = 0.7
    """Sampling temperature (0 = greedy)."""
    top_p: float = 0.0
    """Nucleus mass kept (0 = off)."""
    min_p: float = 0.0
    """Drop tokens below this fraction of the top token's probability (0 = off)."""
    top_k: int = 0
    """Keep only the k most likely tokens (0 = off)."""
    max_tokens: int = 200
    """Longest reply, in tokens."""

    def sampling(self):
        from mlx_hooks.sampling import SamplingSettings

        return SamplingSettings(temp=self.temp, top_p=self.top_p, min_p=self.min_p, top_k=self.top_k)


@dataclass
class AppSettings:
    sampling: SamplingPrefs = field(default_factory=SamplingPrefs)
    """Sampling settings of the chat."""
    system_prompt: str = ""
    """Chat system prompt (empty: none)."""
    color_mode: str = "probability"
    """Token colouring in the chat: ``probability``, ``entropy`` or ``none``."""
    recent_models: list[str] = field(default_factory=list)
    """Model specs loaded recently, newest first."""
    recent_files: dict[str, list[str]] = field(default_factory=dict)
    """Recent files by kind (``preset``, ``sae``, ...), newest first."""
    window_geometry: str = ""
    """``QMainWindow.saveGeometry()`` as base64."""
    window_state: str = ""
    """``QMainWindow.saveState()`` (dock layout) as base64."""
    extras: dict = field(default_factory=dict)
    """Panels' own settings, keyed by panel name."""


def legacy_settings_file() -> Path | None:
    """Where earlier builds kept the settings on macOS (read while the new file is missing, never written)."""
    if sys.platform == "darwin" and not os.environ.get(CONFIG_DIR_ENV):
        return Path.home() / "Library" / "Preferences" / "Symbiont" / "settings.json"
    return None


class Settings(Observable):
    """Notifies ``settings`` after a change. Call :meth:`save` to write the file."""

    def __init__(self, data: AppSettings | None = None, path: Path | None = None, problem: str | None = None):
        super().__init__()
        self.data = data or AppSettings()
        self.path = path or config_dir() / "settings.json"
        self.problem = problem
        """Why the file could not be read (the window shows it), else None."""

    @classmethod
    def load(cls, path: Path | None = None) -> "Settings":
        """Read ``path`` (default: ``settings.json`` in :func:`config_dir`); saving writes there."""
        path = path or config_dir() / "settings.json"
        source = path
        if not path.is_file():
            legacy = legacy_settings_file() if path == config_dir() / "settings.json" else None
            if legacy is None or not legacy.is_file():
                return cls(path=path)
            source = legacy  # moved: read the old file, save to the new place
        try:
            raw = json.loads(source.read_text(encoding="utf-8"))
            if not isinstance(raw, dict):
                raise ValueError("not a JSON object")
            return cls(_from_dict(raw), path)
        except (OSError, ValueError, TypeError) as exc:
            return cls(path=path, problem=f"{source}: settings could not be read ({exc}); using defaults")

    def save(self) -> None:
        from mlx_hooks.atomic_io import atomic_write_bytes

        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.path, json.dumps(asdict(self.data), indent=2, sort_keys=True).encode("utf-8"))

    def changed(self) -> None:
        self.notify("settings")

    def add_recent_model(self, spec: str) -> None:
        self.data.recent_models = _push(self.data.recent_models, spec)
        self.changed()

    def add_recent_file(self, kind: str, path: str) -> None:
        self.data.recent_files[kind] = _push(self.data.recent_files.get(kind, []), path)
        self.changed()


def _push(items: list[str], item: str) -> list[str]:
    return [item, *[x for x in items if x != item]][:MAX_RECENT]


def _from_dict(raw: dict) -> AppSettings:
    known = {f.name for f in fields(AppSettings)}
    values = {k: v for k, v in raw.items() if k in known}
    sampling = values.pop("sampling", {}) or {}
    sampling_known = {f.name for f in fields(SamplingPrefs)}
    prefs = SamplingPrefs(**{k: v for k, v in sampling.items() if k in sampling_known})
    return AppSettings(sampling=prefs, **values)
