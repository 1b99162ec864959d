"""Model fingerprints: SAEs and presets record one and check it against the loaded model.

The weights hash covers every stored tensor's name, shape and dtype plus a fixed,
evenly spaced sample of its values (up to 4096 elements each). Any fine-tune, merge
or re-quantization changes sampled values, while hashing a 70B model's full 40 GB
would take minutes at every load. It is computed on the weights *as stored*, before
any run-time dtype change, so the same file gives the same fingerprint on every
backend.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, fields

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten

from .architectures import dims_of

SAMPLES_PER_TENSOR = 4096


@dataclass(frozen=True)
class ModelFingerprint:
    """Identity of a model: its shape, and a hash of its weights."""

    architecture: str
    """mlx-lm ``model_type`` (e.g. ``llama``)."""
    d_model: int
    """Residual stream width."""
    n_layers: int
    """Number of decoder blocks."""
    n_heads: int
    n_kv_heads: int
    d_mlp: int
    vocab_size: int
    weights_hash: str
    """sha256 (hex) over tensor names, shapes, dtypes and sampled values."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelFingerprint":
        names = {f.name for f in fields(cls)}
        missing = names - set(data)
        if missing:
            raise ValueError(f"fingerprint is missing {sorted(missing)}")
        return cls(**{k: data[k] for k in names})

    @property
    def short(self) -> str:
        return f"{self.architecture}-{self.n_layers}L-{self.d_model}d-{self.weights_hash[:12]}"

    def same_architecture(self, other: "ModelFingerprint") -> bool:
        """Same shapes everywhere (weights may differ: a fine-tune of the same base)."""
        a, b = self.to_dict(), other.to_dict()
        a.pop("weights_hash"), b.pop("weights_hash")
        return a == b

    def differences(self, other: "ModelFingerprint") -> list[str]:
        """Human-readable list of what differs (``field: ours != theirs``)."""
        a, b = self.to_dict(), other.to_dict()
        return [f"{k}: {a[k]} != {b[k]}" for k in a if a[k] != b[k]]


def weights_hash(model: nn.Module) -> str:
    digest = hashlib.sha256()
    for name, array in sorted(tree_flatten(model.parameters()), key=lambda kv: kv[0]):
        digest.update(f"{name}|{tuple(array.shape)}|{array.dtype}\n".encode())
        flat = array.reshape(-1)
        if flat.size > SAMPLES_PER_TENSOR:
            index = mx.array(np.linspace(0, flat.size - 1, SAMPLES_PER_TENSOR).astype(np.int64))
            flat = flat[index]
        if flat.dtype == mx.bfloat16:  # numpy has no bfloat16: hash the raw bits
            flat = flat.view(mx.uint16)
        digest.update(np.array(flat).tobytes())
    return digest.hexdigest()


def fingerprint_model(model: nn.Module) -> ModelFingerprint:
    dims = dims_of(model)
    return ModelFingerprint(
        architecture=dims.architecture,
        d_model=dims.d_model,
        n_layers=dims.n_layers,
        n_heads=dims.n_heads,
        n_kv_heads=dims.n_kv_heads,
        d_mlp=dims.d_mlp,
        vocab_size=dims.vocab_size,
        weights_hash=weights_hash(model),
    )
