"""Does an SAE fit a model? Its hook point must exist there, its width match, its recorded model agree."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import mlx.nn as nn

from ..errors import HookPointError, SAELoadError
from ..fingerprint import ModelFingerprint
from ..points import ModelAdapter
from .model import SAE


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
        width = adapter.d_model  # every Symbiont point is residual-width
        if sae.cfg.d_in != width:
            raise SAELoadError(
                f"{where}: the SAE reads {sae.cfg.d_in}-wide activations at {point.name}, "
                f"but this model's width there is {width}"
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
