"""A model's :class:`~mlx_hooks.memory.ModelShape` from its safetensors headers and config.

The headers (tensor name -> shape, dtype) come from local files (:func:`read_local_tensors`)
or from a hub repo before any weight is downloaded (``huggingface_hub.get_safetensors_metadata``);
both go through :func:`shape_from_tensors`, so an estimate made before a download is the
estimate the loader makes after it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from .errors import ModelLoadError
from .memory import ModelShape

TensorHeaders = Mapping[str, tuple[Sequence[int], str]]
"""Tensor name -> (shape, safetensors dtype such as ``"BF16"``)."""

SAFETENSORS_DTYPE_BYTES = {"F32": 4, "F16": 2, "BF16": 2, "U32": 4, "I32": 4, "U8": 1, "I8": 1, "I64": 8, "U16": 2,
                           "F64": 8}


def read_local_tensors(folder: Path) -> dict[str, tuple[list[int], str]]:
    """Headers of every ``*.safetensors`` file in ``folder`` (validating each: a truncated file is named)."""
    from safetensors import SafetensorError, safe_open

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ModelLoadError(f"{folder}: no *.safetensors weight files")
    tensors: dict[str, tuple[list[int], str]] = {}
    for file in files:
        try:
            with safe_open(str(file), framework="numpy") as handle:
                for key in handle.keys():
                    piece = handle.get_slice(key)
                    tensors[key] = (piece.get_shape(), piece.get_dtype())
        except (SafetensorError, OSError) as exc:
            raise ModelLoadError(f"{file}: corrupt or truncated safetensors file ({exc})") from exc
    return tensors


def _count(shape: Sequence[int]) -> int:
    count = 1
    for dim in shape:
        count *= int(dim)
    return count


def shape_from_tensors(config: dict, tensors: TensorHeaders, dims) -> ModelShape:
    """Parameter count and stored size from the headers; widths from ``dims``
    (``mlx_hooks.architectures.ModelDims`` of the config)."""
    quant = config.get("quantization") or {}
    group = int(quant.get("group_size", 64))
    stored = n_params = 0
    float_dtypes: dict[str, int] = {}
    for key, (shape, dtype) in tensors.items():
        count = _count(shape)
        stored += count * SAFETENSORS_DTYPE_BYTES.get(dtype, 2)
        if key.endswith((".scales", ".biases")):
            continue
        scales = key[: -len("weight")] + "scales" if key.endswith(".weight") else None
        if scales and scales in tensors:
            n_params += _count(tensors[scales][0]) * group  # a packed weight encodes group values per scale
        else:
            n_params += count
            float_dtypes[dtype] = float_dtypes.get(dtype, 0) + count
    main_dtype = max(float_dtypes, key=float_dtypes.get) if float_dtypes else "F16"
    return ModelShape(
        n_params=n_params,
        stored_bytes=stored,
        n_layers=dims.n_layers,
        d_model=dims.d_model,
        n_kv_heads=dims.n_kv_heads,
        head_dim=dims.head_dim,
        quantized=bool(quant),
        stored_dtype={"F32": "float32", "BF16": "bfloat16"}.get(main_dtype, "float16"),
        sliding_window=dims.sliding_window,
        global_every=dims.global_every,
        d_mlp=dims.d_mlp,
        attn_z_width=dims.n_heads * dims.head_dim,
    )

