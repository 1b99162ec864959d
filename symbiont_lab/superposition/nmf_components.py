"""What each NMF component is: its share, its top tokens in context, its strongest units, and the SAE
latent that best matches it — by decoder direction (cosine in the SAE's input space) and by activity
(Pearson r between the component's use per token and the latent's activation on the same tokens)."""

from __future__ import annotations

import mlx.core as mx
import numpy as np

from . import nmf as factor
from .nmf_run import context, dense_latents, residual_directions


def _label(sae, latent: int) -> str:
    labels = getattr(sae, "labels", None)
    return str(labels[latent]) if labels is not None and latent < len(labels) else ""


def describe_components(loaded, data: dict, x: np.ndarray, model, config, sae) -> dict:
    """JSON-ready description of every component of the fitted ``model`` (scikit-learn NMF) on ``x [T, U']``."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        usage = model.transform(x)  # [T, k]
    h = model.components_  # [k, U']
    energy = (usage**2).sum(axis=0) * (h**2).sum(axis=1)  # Σ_t ‖W_tc H_c‖², per component
    dirs = factor.directions(h, config.negatives)  # [k, U]
    mapped, how = residual_directions(loaded, config.point, dirs, sae)
    decoder = np.array(sae.W_dec.astype(mx.float32)) if mapped is not None else None  # [d_sae, d_in]
    by_direction = factor.best_cosines(mapped, decoder) if mapped is not None else None
    latents = dense_latents(data, sae.cfg.d_sae) if sae is not None else None
    by_activity = factor.best_correlations(usage, latents) if latents is not None else None
    rows = factor.top_rows(usage, config.examples)
    components = []
    for c in range(h.shape[0]):
        strongest = np.argsort(-np.abs(dirs[c]))[:5]
        entry = {
            "component": c, "energy_share": float(energy[c] / max(energy.sum(), 1e-12)),
            "tokens_using_it": float((usage[:, c] > 1e-6 * max(usage[:, c].max(), 1e-12)).mean()),
            "top_units": [{"unit": int(u), "weight": float(dirs[c, u])} for u in strongest],
            "examples": [{"row": int(r), "text": int(data["text"][r]), "usage": float(usage[r, c]),
                          "context": context(loaded.tokenizer, data, int(r))} for r in rows[c]],
        }
        if by_direction is not None:
            latent, cos = by_direction[c]
            entry["sae_by_direction"] = {"latent": latent, "cos": cos, "label": _label(sae, latent)}
        if by_activity is not None:
            latent, r = by_activity[c]
            entry["sae_by_activity"] = {"latent": latent, "r": r, "label": _label(sae, latent)}
        components.append(entry)
    order = sorted(range(len(components)), key=lambda c: -components[c]["energy_share"])
    return {"direction_match": how, "items": [components[c] for c in order]}


__all__ = ["describe_components"]
