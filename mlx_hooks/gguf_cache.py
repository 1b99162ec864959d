"""The cache of converted GGUF files, keyed by the file's content.

:func:`converted_dir_for` names a model's folder after the SHA-256 of its bytes, so a
copy under another name or path reuses one conversion and an edited file never
reuses a stale one; :func:`content_digest` remembers each file's digest by its
inode, size, mtime and ctime so an unchanged file is read once. A finished folder
carries ``symbiont_source.json`` (written last); :func:`move_into_place` swaps a
new conversion in atomically, whoever finishes first.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from .atomic_io import atomic_write_bytes
from .errors import GGUFError, ModelLoadError

FORMAT_VERSION = 2  # bump when the folder layout changes, so old conversions are redone
SOURCE_RECORD = "symbiont_source.json"


def content_digest(path: str | os.PathLike) -> str:
    """SHA-256 of the file's bytes.

    Hashing reads the whole file (benchmarks/gguf_convert.py measures it against
    the conversion), so the digest is remembered next to the cache, keyed by the
    file's device, inode, size, mtime and ctime: an unchanged file is read once,
    and any write (which moves ctime, which no tool can set back) means a re-read.
    """
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise GGUFError(f"{path}: file not found") from None
    stamp = [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]
    real = os.path.realpath(path)
    memo = default_cache_dir() / "models" / "gguf-digests" / f"{hashlib.sha256(real.encode()).hexdigest()[:32]}.json"
    try:
        record = json.loads(memo.read_text(encoding="utf-8"))
        if record.get("stat") == stamp and record.get("path") == real:
            return str(record["sha256"])
    except (OSError, ValueError, KeyError):
        pass
    try:
        with open(path, "rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
    except OSError as e:
        raise GGUFError(f"{path}: cannot read ({e})") from e
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(memo, json.dumps({"path": real, "stat": stamp, "sha256": digest}).encode())
    except OSError:
        pass  # a read-only cache only costs re-hashing next time
    return digest


def source_record(path: Path) -> dict:
    return {"sha256": content_digest(path), "format_version": FORMAT_VERSION}


def read_record(folder: Path) -> dict | None:
    try:
        return json.loads((folder / SOURCE_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def same_source(record: dict | None, source: dict) -> bool:
    return record is not None and all(record.get(k) == v for k, v in source.items())


def move_into_place(tmp: Path, out_dir: Path, source: dict) -> None:
    try:
        os.replace(tmp, out_dir)  # works when out_dir is absent or an empty folder
        return
    except OSError:
        if same_source(record := read_record(out_dir), {k: source[k] for k in ("sha256", "format_version")}):
            shutil.rmtree(tmp, ignore_errors=True)  # another process finished first
            return
        if record is None:  # appeared meanwhile, and is not ours to delete
            raise ModelLoadError(f"{out_dir}: exists and is not a converted model; not overwriting it")
    # A stale conversion: move it aside, put the new one in, then delete the old.
    old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".old", dir=out_dir.parent))
    os.replace(out_dir, old / "stale")
    try:
        os.replace(tmp, out_dir)
    except OSError:
        os.replace(old / "stale", out_dir)  # put the old one back
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)


OWNER_FILE = ".owner"
"""In a conversion's temporary folder: locked (``flock``) by the converting process while it runs."""
STALE_UNOWNED_S = 3600
"""A temporary folder with no owner file (killed in the instant before claiming it, or a ``.old``
folder left mid-swap) older than this is a leftover."""


def claim_partial(tmp: Path) -> int | None:
    """Mark ``tmp`` as this process's work in progress; returns the descriptor holding the lock
    (close it when done). None where ``flock`` does not exist: leftovers then age out instead."""
    try:
        import fcntl
    except ImportError:
        return None
    fd = os.open(tmp / OWNER_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _abandoned(folder: Path) -> bool:
    owner = folder / OWNER_FILE
    try:
        import fcntl

        fd = os.open(owner, os.O_RDONLY)
    except (ImportError, FileNotFoundError):
        try:
            return time.time() - folder.stat().st_mtime > STALE_UNOWNED_S
        except OSError:
            return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the kernel dropped the owner's lock: it is dead
        return True
    except BlockingIOError:
        return False  # a conversion is running in it
    finally:
        os.close(fd)


def remove_stale_partials(parent: Path) -> list[Path]:
    """Delete conversions that were killed mid-way (``.<name>.*.partial``, ``.<name>.*.old`` folders
    whose process is gone): an 85 MB hidden leftover per kill used to stay forever. Returns them."""
    removed = []
    for folder in sorted([*parent.glob(".*.partial"), *parent.glob(".*.old")]) if parent.is_dir() else []:
        if folder.is_dir() and _abandoned(folder):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def default_cache_dir() -> Path:
    """Where Symbiont keeps converted models: ``$SYMBIONT_CACHE_DIR``, else the
    platform's user cache (``~/Library/Caches/Symbiont`` on macOS,
    ``$XDG_CACHE_HOME/symbiont`` or ``~/.cache/symbiont`` on Linux)."""
    if env := os.environ.get("SYMBIONT_CACHE_DIR"):
        return Path(env).expanduser()
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "Symbiont"
    if sys.platform == "win32":
        local = os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local"
        return Path(local) / "Symbiont" / "Cache"
    xdg = os.environ.get("XDG_CACHE_HOME")
    # The XDG spec says to ignore relative paths.
    return (Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache") / "symbiont"


def converted_dir_for(path: str | os.PathLike) -> Path:
    """The cache folder for a GGUF file: ``<cache>/models/gguf/<stem>-<content hash>``.

    Named after the file's content (:func:`content_digest`): a copy under another
    name or path finds the folder converted for the first one, and an edited file
    gets a fresh folder.
    """
    path = Path(path)
    digest = content_digest(path)[:16]
    root = default_cache_dir() / "models" / "gguf"
    for folder in sorted(root.glob(f"*-{digest}")) if root.is_dir() else []:
        if folder.is_dir() and not folder.name.startswith("."):
            return folder  # converted (or being converted) from a copy with another name
    return root / f"{path.stem}-{digest}"
