"""GGUF tensors into MLX arrays and safetensors shards, a slice of rows at a time.

Float tensors are kept as stored. Block-quantized 2-D tensors become MLX affine
quantized triplets (packed codes, float16 scales and biases, group size 32):

* Where a GGUF block is itself an affine grid over 32 weights - Q4_0, Q4_1, Q5_0,
  Q5_1, Q8_0, and the 32-weight sub-blocks of Q4_K and Q5_K - its integer codes
  and its scale and offset are carried over unchanged. Exact, except that a
  K-quant sub-block scale (float16 ``d`` x 6-bit scale) is rounded to float16.
* Q2_K, Q3_K and Q6_K scale 16-weight sub-blocks, which MLX cannot express (its
  smallest group is 32). They are dequantized with gguf's ``gguf.quants.dequantize``
  and re-quantized with ``mx.quantize`` at the MLX width nearest their bits per
  weight (2.625 -> 3, 3.4375 -> 3, 6.5625 -> 6): each weight moves by at most one
  step of its new 32-group (mx.quantize keeps zero exact, which can cost a whole
  step at a group's far end; measured on random blocks: +1.7% relative RMS error
  for Q6_K, +10-11% for Q2_K and Q3_K, on top of their own).

Group size 32 is the GGUF block size: the exact types stay exact (64 would merge
blocks with different scales) and the re-quantized ones lose the least. Peak
memory is one slice of rows in float32 plus the current shard of the output.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import GGUFError

GROUP_SIZE = 32
SLICE_ELEMENTS = 1 << 22  # weights dequantized at once (16 MiB of float32; numpy temporaries take a few times that)
SHARD_BYTES = 2 << 30  # the output is written in safetensors files of at most ~2 GiB


@dataclass(frozen=True)
class TypePlan:
    """What a GGUF tensor type becomes in MLX."""

    bits: int | None
    """Bits of the MLX affine quantization; None for float tensors, kept as stored."""
    exact: bool = True
    """True when the GGUF codes and group scales are carried over; False when re-quantized."""


PLANS = {
    "F32": TypePlan(None), "F16": TypePlan(None), "BF16": TypePlan(None),
    "Q4_0": TypePlan(4), "Q4_1": TypePlan(4), "Q5_0": TypePlan(5), "Q5_1": TypePlan(5), "Q8_0": TypePlan(8),
    "Q4_K": TypePlan(4), "Q5_K": TypePlan(5),
    "Q2_K": TypePlan(3, exact=False), "Q3_K": TypePlan(3, exact=False), "Q6_K": TypePlan(6, exact=False),
}
SUPPORTED_TENSOR_TYPES = frozenset(PLANS)
QUANTIZED_TENSOR_TYPES = frozenset(k for k, p in PLANS.items() if p.bits is not None)
# Offset of the signed codes of the formats without a stored minimum: w = d * (code - offset).
_SYMMETRIC_OFFSET = {"Q4_0": 8, "Q5_0": 16, "Q8_0": 128}


def _halves(blocks: np.ndarray, start: int) -> np.ndarray:
    """The float16 field at byte ``start`` of each block, as float32 ``[n_blocks, 1]``."""
    return np.ascontiguousarray(blocks[:, start:start + 2]).view(np.float16).astype(np.float32)


def group_affine(blocks: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Scale and offset of every 32-weight group, read from the block headers.

    ``w = scale * code + offset`` with ``code`` in ``[0, 2**bits)``; layouts as in
    ggml-common.h (and gguf-py's dequantizers). Returns two ``[n_blocks, groups_per_block]``.
    """
    import gguf

    if kind in _SYMMETRIC_OFFSET:
        d = _halves(blocks, 0)
        return d, d * -_SYMMETRIC_OFFSET[kind]
    if kind in ("Q4_1", "Q5_1"):
        return _halves(blocks, 0), _halves(blocks, 2)
    # Q4_K / Q5_K: super-block scale d and minimum dmin, then eight 6-bit (scale, min) pairs.
    sc, m = gguf.quants.Q4_K.get_scale_min(np.ascontiguousarray(blocks[:, 4:16]))
    return _halves(blocks, 0) * sc.astype(np.float32), -_halves(blocks, 2) * m.astype(np.float32)


def pack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """Pack ``[rows, cols]`` codes as MLX does: a little-endian bit stream per row, in uint32 words.

    Written by hand because MLX only packs codes it chose itself (``mx.quantize``);
    tests check the layout against ``mx.dequantize`` for every width.
    """
    rows, cols = codes.shape
    if 32 % bits == 0:
        per_word = 32 // bits
        words = codes.astype(np.uint32).reshape(rows, cols // per_word, per_word)
        return np.bitwise_or.reduce(words << (np.arange(per_word, dtype=np.uint32) * bits), axis=-1)
    # 3, 5, 6 bits: eight codes fill exactly `bits` bytes.
    eights = codes.astype(np.uint64).reshape(rows, cols // 8, 8)
    stream = np.bitwise_or.reduce(eights << (np.arange(8, dtype=np.uint64) * bits), axis=-1)
    as_bytes = stream.astype("<u8").view(np.uint8).reshape(rows, cols // 8, 8)[..., :bits]
    return np.ascontiguousarray(as_bytes).reshape(rows, -1).view("<u4").astype(np.uint32)


def _exact_slice(blocks, w, kind, bits, where):
    scale, offset = group_affine(blocks, kind)  # [n_blocks, groups per block]
    rows, cols = w.shape
    scale, offset = scale.reshape(rows, cols // GROUP_SIZE), offset.reshape(rows, cols // GROUP_SIZE)
    if not (np.isfinite(scale).all() and np.isfinite(offset).all()):
        raise GGUFError(f"{where}: a block has a non-finite scale")
    groups = w.reshape(rows, cols // GROUP_SIZE, GROUP_SIZE)
    safe = np.where(scale == 0, 1, scale)[..., None]
    # The codes are integers by construction; dividing recovers them (rint absorbs rounding).
    codes = np.rint((groups - offset[..., None]) / safe)
    codes = np.where(scale[..., None] == 0, 0, np.clip(codes, 0, (1 << bits) - 1)).astype(np.uint8)
    return pack_codes(codes.reshape(rows, cols), bits), scale, offset


def _requantized_slice(w, bits):
    import mlx.core as mx

    packed, scale, offset = mx.quantize(mx.array(w), group_size=GROUP_SIZE, bits=bits)
    return np.array(packed), np.array(scale), np.array(offset)


def _float(tensor) -> "mx.array":
    import gguf
    import mlx.core as mx

    kind = tensor.tensor_type.name
    data = np.asarray(tensor.data)
    if kind == "BF16":  # numpy has no bfloat16: carry the bits over exactly
        return mx.array(np.ascontiguousarray(data).view(np.uint16)).view(mx.bfloat16)
    if kind in ("F32", "F16"):
        return mx.array(data)
    return mx.array(gguf.quants.dequantize(data, tensor.tensor_type))  # a quantized vector -> float32


def convert_tensor(tensor, where: str) -> dict[str, "mx.array"]:
    """One GGUF tensor as ``{"weight": ...}`` or an MLX triplet ``{"weight", "scales", "biases"}``.

    ``where`` names the file and tensor in errors. Rows keep GGUF's order.
    """
    import gguf
    import mlx.core as mx

    plan = PLANS[tensor.tensor_type.name]
    if plan.bits is None or len(tensor.shape) != 2:
        return {"weight": _float(tensor)}
    cols, rows = (int(n) for n in tensor.shape)  # GGUF lists dims innermost first
    if cols % GROUP_SIZE:
        raise GGUFError(f"{where}: rows of {cols} weights do not split into groups of {GROUP_SIZE}")
    packed = np.empty((rows, cols * plan.bits // 32), np.uint32)
    scales = np.empty((rows, cols // GROUP_SIZE), np.float16)
    biases = np.empty_like(scales)
    step = max(1, SLICE_ELEMENTS // cols)
    for r in range(0, rows, step):
        blocks = np.asarray(tensor.data[r:r + step])  # [n_rows, bytes per row], from the memory map
        with np.errstate(invalid="ignore", over="ignore"):  # bad scales are reported below, by name
            w = gguf.quants.dequantize(blocks, tensor.tensor_type)  # [n_rows, cols] float32
        if plan.exact:
            blocks = blocks.reshape(-1, gguf.GGML_QUANT_SIZES[tensor.tensor_type][1])
            p, s, b = _exact_slice(blocks, w, tensor.tensor_type.name, plan.bits, where)
        else:
            p, s, b = _requantized_slice(w, plan.bits)
        packed[r:r + step], scales[r:r + step], biases[r:r + step] = p, s, b
    return {"weight": mx.array(packed), "scales": mx.array(scales), "biases": mx.array(biases)}


class ShardWriter:
    """Writes named arrays into safetensors shards of at most :data:`SHARD_BYTES` each.

    Names the files as Hugging Face does (``model.safetensors``, or
    ``model-00001-of-00003.safetensors`` plus ``model.safetensors.index.json``)
    once the count is known; ``mlx_lm.load`` reads either.
    """

    def __init__(self, folder: Path, max_bytes: int | None = None):
        self.folder, self.max_bytes = folder, max_bytes or SHARD_BYTES
        self.pending: dict = {}
        self.pending_bytes = 0
        self.shards: list[list[str]] = []

    def add(self, name: str, array) -> None:
        if self.pending and self.pending_bytes + array.nbytes > self.max_bytes:
            self._flush()
        self.pending[name] = array
        self.pending_bytes += array.nbytes

    def _flush(self) -> None:
        import mlx.core as mx

        mx.save_safetensors(str(self._part(len(self.shards))), self.pending, {"format": "mlx"})
        self.shards.append(list(self.pending))
        self.pending, self.pending_bytes = {}, 0

    def _part(self, index: int) -> Path:
        return self.folder / f".part-{index:05d}.safetensors"

    def close(self) -> None:
        if self.pending or not self.shards:
            self._flush()
        n = len(self.shards)
        names = ["model.safetensors"] if n == 1 else [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
        for i, name in enumerate(names):
            os.replace(self._part(i), self.folder / name)
        if n > 1:
            index = {"metadata": {"total_size": sum((self.folder / f).stat().st_size for f in names)},
                     "weight_map": {k: names[i] for i, keys in enumerate(self.shards) for k in keys}}
            (self.folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")

