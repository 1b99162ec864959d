"""Saving in SAELens' native format, so SAEs trained here open in SAELens.

The folder holds ``cfg.json`` with the flat fields SAELens 5.x reads
(``activation_fn_str`` + ``activation_fn_kwargs``, ``hook_name``, ``hook_layer``...) and the
ones 6.x reads (``architecture``, ``k``, a ``metadata`` dict; with no ``sae_lens_version``
6.x converts the flat fields itself, ``handle_pre_6_0_config``), plus a ``symbiont``
block with our :class:`SAEConfig` (model fingerprint included); and
``sae_weights.safetensors`` with ``W_enc``, ``W_dec``, ``b_enc``, ``b_dec`` (+ ``threshold``).

A constant input scale is folded into the weights first, as SAELens' own trainer does
at the end of training (``fold_activation_norm_scaling_factor``): SAELens'
``load_from_disk`` never applies a scale, so an unfolded one would silently change the
SAE there. BatchTopK is written as JumpReLU for SAELens (its inference form).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import mlx.core as mx
import numpy as np

from ..errors import SAELoadError
from .files import atomic_write_text
from .hook_names import hook_name_for_point, layer_of_point
from .model import SAE, SAEConfig

CFG_FILE = "cfg.json"
SAELENS_WEIGHTS = "sae_weights.safetensors"
SYMBIONT_BLOCK_VERSION = 1


def canonical_weights(sae: SAE) -> tuple[dict[str, mx.array], SAEConfig]:
    """The weights and config as saved: a constant input scale folded into the weights."""
    cfg = SAEConfig.from_dict(sae.cfg.to_dict())
    weights = {"W_enc": sae.W_enc, "W_dec": sae.W_dec, "b_enc": sae.b_enc, "b_dec": sae.b_dec}
    if cfg.architecture in ("jumprelu", "batchtopk"):
        weights["threshold"] = sae.threshold
    if cfg.normalisation == "constant_scale":
        s = cfg.input_scale  # SAELens' fold_activation_norm_scaling_factor
        weights["W_enc"] = weights["W_enc"] * s
        weights["W_dec"] = weights["W_dec"] / s
        weights["b_dec"] = weights["b_dec"] / s
        cfg.extra = {**cfg.extra, "folded_input_scale": s}
        cfg.normalisation, cfg.input_scale = "none", 1.0
    return {k: mx.contiguous(v) for k, v in weights.items()}, cfg


def saelens_cfg(cfg: SAEConfig) -> dict:
    """cfg.json content: SAELens' flat fields (5.x and 6.x) plus our ``symbiont`` block."""
    extra = cfg.extra or {}
    architecture = "jumprelu" if cfg.architecture == "batchtopk" else cfg.architecture  # SAELens: BatchTopK infers as JumpReLU
    hook_name = hook_name_for_point(cfg.hook_point)
    model_name = cfg.model_name or (cfg.model_fingerprint or {}).get("architecture") or "unknown"
    flat = {
        "architecture": architecture, "d_in": cfg.d_in, "d_sae": cfg.d_sae, "dtype": cfg.dtype, "device": "cpu",
        "apply_b_dec_to_input": cfg.apply_b_dec_to_input,
        "normalize_activations": {"none": "none", "constant_scale": "expected_average_only_in"}.get(
            cfg.normalisation, cfg.normalisation),
        "reshape_activations": "none",
        "activation_fn_str": "topk" if architecture == "topk" else "relu",
        "activation_fn_kwargs": {"k": cfg.k} if architecture == "topk" else {},
        "finetuning_scaling_factor": False, "model_name": model_name, "hook_name": hook_name,
        "hook_layer": layer_of_point(cfg.hook_point), "hook_head_index": None,
        "context_size": int(extra.get("context_size", 1024)), "prepend_bos": bool(extra.get("prepend_bos", False)),
        "dataset_path": str(extra.get("dataset_path", "")), "dataset_trust_remote_code": False,
        "sae_lens_training_version": None, "neuronpedia_id": None,
        "metadata": {"model_name": model_name, "hook_name": hook_name},
    }
    if architecture == "topk":
        flat["k"] = cfg.k
    flat["symbiont"] = {"version": SYMBIONT_BLOCK_VERSION, "config": cfg.to_dict()}
    return flat


def save_sae(sae: SAE, folder: str | os.PathLike) -> Path:
    """Write ``sae`` as a SAELens folder (``cfg.json`` + ``sae_weights.safetensors``).

    A new folder appears whole (written beside it, then renamed). Into an existing
    folder the weights, then cfg.json, are each replaced atomically; feature records
    and labels there stay (they record which weights they describe).
    """
    folder = Path(folder)
    weights, cfg = canonical_weights(sae)
    cfg_text = json.dumps(saelens_cfg(cfg), indent=1)
    folder.parent.mkdir(parents=True, exist_ok=True)
    if folder.exists() and not folder.is_dir():
        raise SAELoadError(f"{folder}: exists and is not a folder")
    if not folder.exists():
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".partial", dir=folder.parent))
        try:
            mx.save_safetensors(str(tmp / SAELENS_WEIGHTS), weights, metadata={"format": "mlx"})
            (tmp / CFG_FILE).write_text(cfg_text)
            os.rename(tmp, folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return folder
    fd, tmp_name = tempfile.mkstemp(prefix=".sae_weights.", suffix=".safetensors", dir=folder)
    os.close(fd)
    try:
        mx.save_safetensors(tmp_name, weights, metadata={"format": "mlx"})
        os.replace(tmp_name, folder / SAELENS_WEIGHTS)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    atomic_write_text(folder / CFG_FILE, cfg_text)
    return folder


def weights_digest(sae: SAE) -> str:
    """sha256 of the weights as saved (names, shapes, dtypes, bytes): ties records to weights."""
    weights, _ = canonical_weights(sae)
    digest = hashlib.sha256()
    for name in sorted(weights):
        array = weights[name]
        digest.update(f"{name}|{tuple(array.shape)}|{array.dtype}\n".encode())
        digest.update(np.array(array.view(mx.uint16) if array.dtype == mx.bfloat16 else array).tobytes())
    return digest.hexdigest()
