"""Does an SAE fit a model? Its hook point must exist there, its width match, its recorded model agree.

The width at a point is the model's d_model at residual, ``attn_out`` and ``mlp_out``
points, n_heads × head_dim at ``attn_z`` and d_mlp at ``mlp_hidden``
(:meth:`~mlx_hooks.points.ModelAdapter.width`).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import mlx.nn as nn

from ..errors import HookPointError, SAELoadError
from ..fingerprint import ModelFingerprint
from ..points import ModelAdapter
from .hook_names import sparsify_module_fits
from .model import SAE


def _width_meaning(adapter: ModelAdapter, kind: str) -> str:
    dims = adapter.dims
    if kind == "attn_z":
        return f"n_heads × head_dim = {dims.n_heads} × {dims.head_dim}"
    if kind == "mlp_hidden":
        return "d_mlp, the MLP's hidden width"
    return "d_model, the residual stream's width"


class FingerprintWarning(UserWarning):
    """The SAE was trained on a model of the same architecture but different weights."""


def check_fits(sae: SAE, model: Any = None, *, fingerprint: Any = None, where: Path | str = "SAE") -> None:
    """Refuse an SAE whose hook point, width or recorded model does not fit ``model``.

    A different fingerprint of the same architecture (a fine-tune) is a
    :class:`FingerprintWarning`; a different architecture is an error.
    """
    adapter = None
    if model is not None:
        if fingerprint is None:
            fingerprint = getattr(model, "fingerprint", None)
        if isinstance(model, ModelAdapter):
            adapter = model
        else:  # an mlx-lm model, or a LoadedModel holding one
            adapter = ModelAdapter(model if isinstance(model, nn.Module) else model.model)
    if adapter is not None:
        try:
            point = adapter.parse(sae.cfg.hook_point)
        except HookPointError as exc:
            raise SAELoadError(f"{where}: the SAE's hook point does not exist on this model: {exc}") from exc
        sae.cfg.hook_point = point.name
        module = sae.cfg.extra.get("sparsify_hookpoint") if sae.cfg.source_format == "sparsify" else None
        if module and (reason := sparsify_module_fits(module, point.kind, adapter.arch.attn_out_attr,
                                                       adapter.arch.mlp_out_attr)):
            raise SAELoadError(f"{where}: {point.name} on this {adapter.arch.name} model: {reason}")
        width = adapter.width(point)
        if sae.cfg.d_in != width:
            raise SAELoadError(
                f"{where}: the SAE reads {sae.cfg.d_in}-wide activations at {point.name}, "
                f"but this model's width there is {width} ({_width_meaning(adapter, point.kind)})"
            )
    recorded = sae.cfg.model_fingerprint
    if fingerprint is not None and recorded:
        try:
            theirs = ModelFingerprint.from_dict(recorded)
        except (ValueError, TypeError) as exc:
            raise SAELoadError(f"{where}: recorded model fingerprint is malformed ({exc})") from exc
        if theirs != fingerprint:
            if not theirs.same_architecture(fingerprint):
                raise SAELoadError(
                    f"{where}: trained on a different model: expected {theirs.short}, found {fingerprint.short} "
                    f"({'; '.join(d for d in theirs.differences(fingerprint) if not d.startswith('weights_hash'))})"
                )
            warnings.warn(
                f"{where}: trained on {theirs.short}; the loaded model {fingerprint.short} has the same "
                "architecture but different weights (a fine-tune?): features may not mean the same",
                FingerprintWarning, stacklevel=3,
            )
