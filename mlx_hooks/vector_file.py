"""Steering vectors on disk: one ``.safetensors`` file, also used as a preset's sidecar.

Layout: one float32 ``[D]`` tensor per vector, keyed by the vector's name, and the
safetensors metadata entry ``symbiont`` holding canonical JSON (sorted keys, no spaces)::

    {"format": "symbiont.steering_vectors", "version": 1, "preset": "<name or null>",
     "vectors": {"<name>": {"hook_point": ..., "method": ..., "token_mode": ...,
                            "typical_norm": ..., "source": {...}}}}

All metadata sits under that single key because safetensors stores the metadata as a
hash map whose key order changes from run to run: with one key, the same vectors give
the same bytes every time (presets are byte-stable, see :mod:`mlx_hooks.presets`).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Sequence

import numpy as np

from .atomic_io import atomic_write_bytes
from .steering import SteeringError, SteeringVector

FORMAT = "symbiont.steering_vectors"
VERSION = 1
METADATA_KEY = "symbiont"


class VectorFileError(SteeringError):
    """A vector file that cannot be read or does not hold what it should."""


def canonical_json(data, indent: int | None = None) -> str:
    """JSON with sorted keys, fixed separators and finite floats only (repr: shortest round-trip form)."""
    separators = (",", ": ") if indent is not None else (",", ":")
    return json.dumps(data, sort_keys=True, indent=indent, separators=separators, ensure_ascii=False, allow_nan=False)


def vectors_to_bytes(vectors: Sequence[SteeringVector], preset: str | None = None) -> bytes:
    """Serialize ``vectors`` (names must be unique) to safetensors bytes, deterministically."""
    from safetensors.numpy import save

    names = [v.name for v in vectors]
    if len(set(names)) != len(names):
        raise VectorFileError(f"duplicate steering vector names: {sorted(n for n in names if names.count(n) > 1)}")
    meta = {
        "format": FORMAT, "version": VERSION, "preset": preset,
        "vectors": {
            v.name: {
                "hook_point": v.hook_point, "method": v.method, "token_mode": v.token_mode,
                "typical_norm": float(v.typical_norm), "source": v.source,
            }
            for v in vectors
        },
    }
    tensors = {v.name: np.ascontiguousarray(v.vector, dtype=np.float32) for v in vectors}
    return save(tensors, metadata={METADATA_KEY: canonical_json(meta)})


def save_vectors(path: str | Path, vectors: Sequence[SteeringVector], preset: str | None = None) -> Path:
    """Write a vector file atomically; returns the path."""
    path = Path(path)
    atomic_write_bytes(path, vectors_to_bytes(vectors, preset))
    return path


def _header_metadata(data: bytes, where: str) -> dict:
    """The ``__metadata__`` of safetensors bytes (the header is 8-byte length + JSON)."""
    if len(data) < 8:
        raise VectorFileError(f"{where}: too short to be a safetensors file ({len(data)} bytes)")
    (length,) = struct.unpack("<Q", data[:8])
    if length > len(data) - 8:
        raise VectorFileError(f"{where}: truncated safetensors header")
    try:
        header = json.loads(data[8 : 8 + length])
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise VectorFileError(f"{where}: corrupt safetensors header ({exc})") from exc
    return header.get("__metadata__") or {}


def vectors_from_bytes(data: bytes, where: str) -> tuple[dict[str, SteeringVector], dict]:
    """Parse a vector file's bytes; ``where`` names the file in errors. Returns (vectors, metadata)."""
    from safetensors import SafetensorError
    from safetensors.numpy import load

    meta_raw = _header_metadata(data, where).get(METADATA_KEY)
    if meta_raw is None:
        raise VectorFileError(f"{where}: not a Symbiont vector file (no '{METADATA_KEY}' metadata)")
    try:
        meta = json.loads(meta_raw)
    except json.JSONDecodeError as exc:
        raise VectorFileError(f"{where}: its '{METADATA_KEY}' metadata is not valid JSON ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or not isinstance(meta.get("vectors"), dict):
        raise VectorFileError(f"{where}: metadata does not describe a {FORMAT} file")
    if not isinstance(meta.get("version"), int) or meta["version"] > VERSION:
        raise VectorFileError(
            f"{where}: vector file version {meta.get('version')!r} is newer than this Symbiont reads ({VERSION})"
        )
    try:
        tensors = load(data)
    except (SafetensorError, ValueError, OSError) as exc:
        raise VectorFileError(f"{where}: corrupt safetensors data ({exc})") from exc
    described, stored = set(meta["vectors"]), set(tensors)
    if described != stored:
        raise VectorFileError(
            f"{where}: tensors {sorted(stored)} do not match the vectors described in its metadata {sorted(described)}"
        )
    vectors = {}
    for name, info in sorted(meta["vectors"].items()):
        array = tensors[name]
        if array.ndim != 1 or array.dtype != np.float32:
            raise VectorFileError(f"{where}: tensor {name!r} is {array.dtype}{list(array.shape)}, expected float32 [D]")
        try:
            vectors[name] = SteeringVector(
                name=name, hook_point=str(info["hook_point"]), vector=array, method=str(info.get("method", "mean_diff")),
                token_mode=str(info.get("token_mode", "last")), typical_norm=float(info.get("typical_norm", 0.0)),
                source=dict(info.get("source") or {}),
            )
        except (KeyError, TypeError, ValueError, SteeringError) as exc:
            raise VectorFileError(f"{where}: vector {name!r}: {exc}") from exc
    return vectors, meta


def load_vectors(path: str | Path) -> dict[str, SteeringVector]:
    """Read a vector file written by :func:`save_vectors` (or a preset's sidecar)."""
    path = Path(path)
    if not path.is_file():
        raise VectorFileError(f"{path}: vector file not found")
    return vectors_from_bytes(path.read_bytes(), str(path))[0]
