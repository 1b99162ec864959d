"""Check a GGUF file's header against the file's own length before any reader allocates for it.

gguf-py's ``GGUFReader`` (what conversion and control-vector import read GGUFs with) trusts
the counts and lengths in the header: an array whose length field says 2^40 made it walk
items past the end of the file, growing ~28 MB/s without end. No library bounds these
claims, so this pass is written by hand: one walk over the header that checks every count
and length against the bytes that remain, every tensor's dimensions and byte range against
the file size, and refuses with the byte offset of the first claim that cannot be true.
It allocates nothing proportional to a claim, only to what it has actually read.

The layout is GGUF v2/v3 as gguf-py reads it (``gguf/gguf_reader.py``): magic ``GGUF``,
version (u32), tensor count and key/value count (u64), the key/value pairs (key: u64 length
+ UTF-8; type u32; value, arrays as item type u32 + count u64 + items), the tensor infos
(name, n_dims u32, dims u64 × n_dims, type u32, offset u64), then the tensor data aligned
to ``general.alignment`` (default 32). The sizes of tensor types are gguf-py's
``GGML_QUANT_SIZES``.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from .errors import GGUFError

MAX_DIMS = 4
"""GGML tensors have at most 4 dimensions (``GGML_MAX_DIMS``)."""
MAX_KEY_BYTES = 65535
"""Longest key accepted (llama.cpp's keys are under 64 bytes)."""
MAX_ARRAY_DEPTH = 2
"""Arrays of arrays are legal GGUF; nothing we read nests deeper than that."""

_SCALARS = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}  # value type -> bytes
_STRING, _ARRAY, _UINT32, _UINT64 = 8, 9, 4, 10


@dataclass(frozen=True)
class HeaderSummary:
    version: int
    tensor_count: int
    kv_count: int
    data_offset: int
    """Where the tensor data starts (aligned)."""


class _Walker:
    def __init__(self, data, path: Path):
        self.data, self.path, self.pos, self.size = data, path, 0, len(data)

    def fail(self, problem: str) -> GGUFError:
        return GGUFError(f"{self.path}: not a valid GGUF file: {problem} (at byte {self.pos} of {self.size}); "
                         "the file is damaged or truncated")

    def need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > self.size:
            raise self.fail(f"{what} needs {n} bytes, {self.size - self.pos} remain")

    def unpack(self, fmt: str, what: str):
        n = struct.calcsize(fmt)
        self.need(n, what)
        value = struct.unpack_from(fmt, self.data, self.pos)[0]
        self.pos += n
        return value

    def string(self, what: str, limit: int | None = None) -> bytes:
        length = self.unpack("<Q", f"the length of {what}")
        if limit is not None and length > limit:
            raise self.fail(f"{what} claims {length} bytes (at most {limit})")
        self.need(length, what)
        raw = bytes(self.data[self.pos:self.pos + length])
        self.pos += length
        return raw

    def value(self, kind: int, what: str, depth: int = 0):
        """Skip (or, for the few values the walk needs, return) one value of type ``kind``."""
        if kind in _SCALARS:
            self.need(_SCALARS[kind], what)
            fmt = {4: "<I", 10: "<Q"}.get(kind)
            value = struct.unpack_from(fmt, self.data, self.pos)[0] if fmt else None
            self.pos += _SCALARS[kind]
            return value
        if kind == _STRING:
            self.string(what)
            return None
        if kind != _ARRAY:
            raise self.fail(f"{what} has unknown value type {kind}")
        if depth >= MAX_ARRAY_DEPTH:
            raise self.fail(f"{what} nests arrays deeper than {MAX_ARRAY_DEPTH}")
        item = self.unpack("<I", f"the item type of {what}")
        count = self.unpack("<Q", f"the length of {what}")
        if item in _SCALARS:
            self.need(count * _SCALARS[item], f"{what} ({count} items of {_SCALARS[item]} bytes)")
            self.pos += count * _SCALARS[item]
            return None
        if item not in (_STRING, _ARRAY):
            raise self.fail(f"{what} has unknown item type {item}")
        # every string or nested array takes at least 8 bytes: a count past that cannot be true
        self.need(count * 8, f"{what} ({count} items of at least 8 bytes)")
        for index in range(count):
            self.value(item, f"{what}[{index}]", depth + 1)
        return None


def check_gguf_header(path: str | os.PathLike) -> HeaderSummary:
    """Walk ``path``'s header and check every count, length and tensor range against the file size.

    Raises :class:`GGUFError` naming the file, the problem and the byte offset."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    path = Path(path)
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size < 24:
                raise GGUFError(f"{path}: not a GGUF file ({size} bytes, shorter than a GGUF header)")
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
                return _walk(_Walker(data, path), GGML_QUANT_SIZES, GGMLQuantizationType)
    except OSError as exc:
        raise GGUFError(f"{path}: cannot read ({exc})") from exc


def _walk(w: _Walker, quant_sizes, quant_types) -> HeaderSummary:
    if bytes(w.data[:4]) != b"GGUF":
        raise w.fail(f"magic {bytes(w.data[:4])!r}, expected b'GGUF'")
    w.pos = 4
    version = w.unpack("<I", "the version")
    if version not in (2, 3):
        raise w.fail(f"GGUF version {version} (this reader knows versions 2 and 3)")
    tensor_count = w.unpack("<Q", "the tensor count")
    kv_count = w.unpack("<Q", "the key/value count")
    w.need(kv_count * 13, f"{kv_count} key/value pairs (13 bytes each at least)")  # key length 8 + type 4 + 1
    alignment = 32
    for index in range(kv_count):
        key_bytes = w.string(f"key {index}", MAX_KEY_BYTES)
        try:
            key = key_bytes.decode("utf-8")
        except UnicodeDecodeError:
            raise w.fail(f"key {index} is not UTF-8") from None
        kind = w.unpack("<I", f"the type of {key}")
        value = w.value(kind, key)
        if key == "general.alignment":
            if kind != _UINT32 or not value or value & (value - 1):
                raise w.fail(f"general.alignment must be a u32 power of two, got {value!r}")
            alignment = value
    w.need(tensor_count * 24, f"{tensor_count} tensor infos (24 bytes each at least)")
    ranges = []
    for index in range(tensor_count):
        name = w.string(f"tensor {index}'s name", MAX_KEY_BYTES).decode("utf-8", "replace")
        n_dims = w.unpack("<I", f"{name}'s dimension count")
        if not 1 <= n_dims <= MAX_DIMS:
            raise w.fail(f"tensor {name!r} has {n_dims} dimensions (1 to {MAX_DIMS})")
        w.need(8 * n_dims, f"{name}'s dimensions")
        dims = struct.unpack_from(f"<{n_dims}Q", w.data, w.pos)
        w.pos += 8 * n_dims
        type_id = w.unpack("<I", f"{name}'s type")
        offset = w.unpack("<Q", f"{name}'s data offset")
        try:
            block, type_size = quant_sizes[quant_types(type_id)]
        except (ValueError, KeyError):
            raise w.fail(f"tensor {name!r} has unknown type {type_id}") from None
        elements = 1
        for dim in dims:
            elements *= dim
            if dim == 0 or elements > w.size * 64:  # 64 elements per byte is past any GGML type's density
                raise w.fail(f"tensor {name!r} has dimensions {list(dims)}, impossible in a {w.size}-byte file")
        if dims[0] % block:
            raise w.fail(f"tensor {name!r}: first dimension {dims[0]} is not a multiple of its block size {block}")
        ranges.append((name, offset, elements // block * type_size))
    data_offset = -(-w.pos // alignment) * alignment
    for name, offset, nbytes in ranges:
        if offset % alignment or data_offset + offset + nbytes > w.size:
            raise GGUFError(f"{w.path}: not a valid GGUF file: tensor {name!r} claims bytes "
                            f"{data_offset + offset}..{data_offset + offset + nbytes} of a {w.size}-byte file "
                            "(or an unaligned offset); the file is damaged or truncated")
    return HeaderSummary(version, tensor_count, kv_count, data_offset)
