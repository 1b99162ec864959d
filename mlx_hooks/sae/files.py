"""Reading and writing the files SAEs come in: JSON, safetensors, npz — with errors that name the file.

Safetensors are validated by the safetensors library itself before anything is read
(so a truncated download is named as such); ``.npz`` files are opened with
``allow_pickle=False``; text files are written atomically (a temporary file in the same
folder, then ``os.replace``).
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import mlx.core as mx
import numpy as np

from ..atomic_io import atomic_write_bytes
from ..errors import SAELoadError


def read_json(path: Path) -> dict:
    if not path.is_file():
        raise SAELoadError(f"{path}: file not found")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SAELoadError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise SAELoadError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data


def read_safetensors(path: Path) -> dict[str, mx.array]:
    """All tensors of a safetensors file, after safetensors' own header/length validation."""
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        raise SAELoadError(f"{path}: file not found")
    try:
        # safe_open checks the header and that every tensor's byte range lies inside the
        # file, so a truncated download is caught here with safetensors' own message.
        with safe_open(str(path), framework="numpy") as handle:
            dtypes = {key: handle.get_slice(key).get_dtype() for key in handle.keys()}
            if "BF16" not in dtypes.values():  # numpy reads everything but bfloat16
                arrays = {key: handle.get_tensor(key) for key in dtypes}
    except (SafetensorError, OSError, ValueError) as exc:
        raise SAELoadError(f"{path}: corrupt or truncated safetensors file ({exc})") from exc
    if "BF16" in dtypes.values():
        try:
            return dict(mx.load(str(path), format="safetensors"))
        except (RuntimeError, ValueError) as exc:
            raise SAELoadError(f"{path}: cannot read this safetensors file with MLX ({exc})") from exc
    out = {}
    for key, value in arrays.items():
        if not np.issubdtype(value.dtype, np.floating):
            raise SAELoadError(f"{path}: tensor {key!r} has dtype {value.dtype}, expected floating point")
        out[key] = mx.array(value.astype(np.float32) if value.dtype == np.float64 else value)
    return out


def read_npz(path: Path) -> dict[str, mx.array]:
    if not path.is_file():
        raise SAELoadError(f"{path}: file not found")
    try:
        with np.load(path, allow_pickle=False) as data:  # never unpickle
            arrays = {key: np.asarray(data[key]) for key in data.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise SAELoadError(f"{path}: not a readable .npz file ({exc})") from exc
    out = {}
    for key, value in arrays.items():
        if value.dtype == np.float64:
            value = value.astype(np.float32)
        if not np.issubdtype(value.dtype, np.floating):
            raise SAELoadError(f"{path}: array {key!r} has dtype {value.dtype}, expected floating point")
        out[key] = mx.array(value)
    return out


def atomic_write_gzip_text(path: Path, text: str) -> None:
    """Like :func:`atomic_write_text`, gzip-compressed with a fixed timestamp (same bytes every time)."""
    import gzip

    atomic_write_bytes(path, gzip.compress(text.encode("utf-8"), mtime=0))


def read_gzip_json(path: Path) -> dict:
    """A gzip-compressed JSON file; errors name the file."""
    import gzip

    try:
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, EOFError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SAELoadError(f"{path}: corrupt or truncated compressed JSON ({exc})") from exc


def atomic_write_text(path: Path, text: str) -> None:
    """Write a UTF-8 text file atomically (temporary file in the same folder, then ``os.replace``)."""
    atomic_write_bytes(path, text.encode("utf-8"))