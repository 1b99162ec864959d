"""What the other Symbiont processes on this machine hold, so that each budgets for the rest.

The chat window and a lab run are separate processes sharing one memory (on Apple silicon
the GPU's too); each checked its loads as if it were alone. Every process that loads a
model now writes ``<claims folder>/<pid>.json`` (atomically): the estimated bytes of the
models it holds and what they are. A model's claim lasts as long as the model object (a
weak-reference finalizer drops it when the model is freed: a model switch, the end of a
lab stage), and the file goes when the process exits. Readers count only the files of
processes still alive and delete the others (a process killed without clean-up).

No library keeps such a registry across processes; these are a few small JSON files.
"""

from __future__ import annotations

import atexit
import itertools
import json
import os
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path

CLAIMS_DIR_ENV = "SYMBIONT_MEMORY_CLAIMS_DIR"

_lock = threading.Lock()
_tokens = itertools.count(1)
_held: dict[int, tuple[str, int]] = {}
_owners: dict[int, int] = {}
"""id(owner) -> token while the claim lives (models are dicts: unhashable, so no WeakKeyDictionary)."""
"""This process's claims: token -> (what, bytes)."""
_written_to: set[Path] = set()


@dataclass(frozen=True)
class Claim:
    """What one other Symbiont process holds."""

    pid: int
    bytes: int
    what: tuple[str, ...]
    """One entry per model it holds (e.g. ``"SmolLM2-135M-Instruct"``)."""

    def describe(self) -> str:
        from .memory import format_bytes

        return f"pid {self.pid}: {', '.join(self.what) or 'a model'} ({format_bytes(self.bytes)})"


def claims_dir() -> Path:
    """``$SYMBIONT_MEMORY_CLAIMS_DIR``, else ``memory-claims`` in Symbiont's cache folder (per user)."""
    if env := os.environ.get(CLAIMS_DIR_ENV):
        return Path(env).expanduser()
    from .gguf_convert import default_cache_dir

    return default_cache_dir() / "memory-claims"


def hold_while_alive(owner: object, nbytes: int, what: str) -> None:
    """Claim ``nbytes`` for ``what`` until ``owner`` (the model object) is garbage-collected."""
    with _lock:
        token = next(_tokens)
        _held[token] = (what, int(nbytes))
        _owners[id(owner)] = token
        _write_locked()
    weakref.finalize(owner, _release, token, id(owner))


def claimed_by(owner: object) -> int:
    """The bytes claimed for ``owner`` (0 when it holds no claim)."""
    with _lock:
        token = _owners.get(id(owner))
        return _held[token][1] if token in _held else 0


def held_bytes() -> int:
    """The bytes this process claims now."""
    with _lock:
        return sum(b for _, b in _held.values())


def other_claims() -> list[Claim]:
    """Claims of the other live Symbiont processes using the same claims folder (stale files are removed)."""
    folder = claims_dir()
    try:
        files = sorted(folder.glob("*.json"))
    except OSError:
        return []
    found = []
    for file in files:
        if not file.stem.isdigit() or int(file.stem) == os.getpid():
            continue
        pid = int(file.stem)
        if not _alive(pid):
            file.unlink(missing_ok=True)
            continue
        try:
            raw = json.loads(file.read_text(encoding="utf-8"))
            found.append(Claim(pid, int(raw["bytes"]), tuple(str(w) for w in raw.get("what", []))))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # unreadable: written by something else; it is not ours to judge or delete
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, another user's (cannot be: the folder is per user, but not ours to delete)
    except OSError:
        return False
    return True


def _release(token: int, owner_id: int | None = None) -> None:
    with _lock:
        if _owners.get(owner_id) == token:
            del _owners[owner_id]
        if _held.pop(token, None) is not None:
            _write_locked()


def _write_locked() -> None:
    """Rewrite this process's file (or remove it when nothing is held). Never raises: a claim
    that cannot be written only makes other processes' budgets less exact."""
    from .atomic_io import atomic_write_bytes

    try:
        path = claims_dir() / f"{os.getpid()}.json"
    except Exception:  # noqa: BLE001 - no cache folder: nothing to share
        return
    try:
        if _held:
            path.parent.mkdir(parents=True, exist_ok=True)
            record = {"pid": os.getpid(), "bytes": sum(b for _, b in _held.values()),
                      "what": [w for w, _ in _held.values()]}
            atomic_write_bytes(path, json.dumps(record).encode("utf-8"))
            _written_to.add(path)
        else:
            path.unlink(missing_ok=True)
    except OSError:
        pass


@atexit.register
def _remove_own_files() -> None:
    for path in list(_written_to):
        try:
            path.unlink(missing_ok=True)
        except OSError:
            pass
