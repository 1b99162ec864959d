"""How good an SAE is: reconstruction on held-out activations, and downstream.

- Reconstruction: variance explained (1 − FVU), L0, dead-latent fraction (latents that
  never fire on the held-out set).
- Downstream: the model's next-token loss with the SAE's reconstruction spliced in at
  its hook point, against the clean loss and against zero-ablating that point:
  ``loss recovered = (L_zero − L_sae) / (L_zero − L_clean)`` (see :func:`loss_recovered`).

The first position of every window, and any attention-sink position (residual norm
above the SAE's ``sink_norm_threshold``, recorded by the trainer), is left untouched in
both spliced runs and out of the reconstruction statistics, as in training: those
few positions are not what the SAE models (see :mod:`mlx_hooks.sae.train`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from ..hooks import hooked
from ..interventions import FunctionIntervention
from .model import SAE


@dataclass(frozen=True)
class SAEEvaluation:
    variance_explained: float
    """1 − FVU of the reconstruction over all evaluated positions."""
    l0: float
    """Mean active latents per token."""
    dead_fraction: float
    """Latents that never fired on the evaluation set."""
    clean_loss: float
    """Next-token cross-entropy (nats) of the unmodified model."""
    sae_loss: float
    """Same, with the SAE reconstruction spliced in."""
    zero_ablation_loss: float
    """Same, with the hook point zeroed."""
    loss_recovered: float
    """(zero − sae) / (zero − clean), the ratio as written, whatever the signs: 1 = the
    splice costs nothing, 0 = as bad as zero ablation; above 1 the splice beats the clean
    model. When zero ablation *lowers* the loss (a negative denominator, common on
    untrained or tiny models) the ratio keeps its meaning: a splice that matches clean is
    1, one that matches zero ablation is 0. NaN when |zero − clean| is within
    :data:`LOSS_RECOVERED_TOLERANCE` of round-off, where ablating the point does not
    measurably change the loss and the ratio is undefined (:meth:`to_dict` writes null)."""
    tokens: int
    """Positions evaluated."""

    def to_dict(self) -> dict:
        """Plain fields; NaN becomes None so the dict is valid JSON (``json.dumps`` would write ``NaN``)."""
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()}


LOSS_RECOVERED_TOLERANCE = 1e-4
"""Relative size of |zero − clean| (to the larger of the two losses, at least 1 nat) below
which loss recovered is undefined. Why 1e-4: each loss is a float32 sum over a batch of
up to ~1,000 positions (8 windows of 128 tokens), whose round-off can reach n·ε ≈
1,000 × 6e-8 ≈ 6e-5 of its size; a difference smaller than that is not a measurement."""


def loss_recovered(clean: float, spliced: float, zeroed: float) -> float:
    """``(zeroed − spliced) / (zeroed − clean)``, NaN where the denominator is round-off."""
    denominator = zeroed - clean
    if not all(map(math.isfinite, (clean, spliced, zeroed))):
        return math.nan
    if abs(denominator) <= LOSS_RECOVERED_TOLERANCE * max(abs(clean), abs(zeroed), 1.0):
        return math.nan
    return (zeroed - spliced) / denominator


def format_loss_recovered(value: float | None) -> str:
    """For printing: the ratio, or why there is none."""
    if value is None or math.isnan(value):
        return "n/a (zero-ablating the point does not change the loss)"
    return f"{value:.4f}"


def _cross_entropy(logits: mx.array, windows: mx.array) -> mx.array:  # [B, L, V], [B, L] -> scalar sum
    return nn.losses.cross_entropy(logits[:, :-1].astype(mx.float32), windows[:, 1:], reduction="sum")


def evaluate_sae(model: nn.Module, sae: SAE, windows: np.ndarray, batch_windows: int = 8) -> SAEEvaluation:
    """Evaluate ``sae`` on token windows ``[N, L]`` of held-out text."""
    point = sae.cfg.hook_point
    stats = {"clean": 0.0, "sae": 0.0, "zero": 0.0, "resid": 0.0, "sum": None, "sumsq": 0.0, "n": 0, "l0": 0.0}
    fired = np.zeros(sae.cfg.d_sae, dtype=bool)
    captured: dict[str, mx.array] = {}

    sink_norm = sae.cfg.extra.get("sink_norm_threshold")

    def modelled(x: mx.array) -> mx.array:  # [B, L, D] -> [B, L, 1]: positions the SAE stands in for
        keep = mx.arange(x.shape[1])[None, :, None] > 0
        if sink_norm is not None:
            keep = keep & (mx.linalg.norm(x.astype(mx.float32), axis=-1, keepdims=True) <= sink_norm)
        return mx.broadcast_to(keep, (*x.shape[:2], 1))

    def splice(x, ctx):  # x: [B, L, D]
        latents = sae.encode(x)
        recon = sae.decode(latents, like=x).astype(x.dtype)
        keep = modelled(x)
        captured["x"], captured["latents"], captured["recon"], captured["keep"] = x, latents, recon, keep
        return mx.where(keep, recon, x)

    def zero(x, ctx):
        return mx.where(modelled(x), mx.zeros_like(x), x)

    for start in range(0, len(windows), batch_windows):
        batch = mx.array(windows[start : start + batch_windows])
        clean = _cross_entropy(model(batch), batch)
        with hooked(model, interventions={point: FunctionIntervention(splice, name="sae-splice")}):
            spliced = _cross_entropy(model(batch), batch)
        with hooked(model, interventions={point: FunctionIntervention(zero, name="zero-ablate")}):
            zeroed = _cross_entropy(model(batch), batch)
        keep = captured["keep"].reshape(-1, 1)  # [N, 1]
        x = captured["x"].astype(mx.float32).reshape(-1, captured["x"].shape[-1]) * keep
        r = captured["recon"].astype(mx.float32).reshape(-1, x.shape[-1]) * keep
        active = (captured["latents"].reshape(-1, sae.cfg.d_sae) > 0) & keep
        parts = [clean, spliced, zeroed, ((x - r) ** 2).sum(), x.sum(axis=0), (x**2).sum(), active.sum(),
                 active.any(axis=0), keep.sum()]
        mx.eval(parts)
        stats["clean"] += float(parts[0].item())
        stats["sae"] += float(parts[1].item())
        stats["zero"] += float(parts[2].item())
        stats["resid"] += float(parts[3].item())
        stats["sum"] = np.array(parts[4], dtype=np.float64) + (0 if stats["sum"] is None else stats["sum"])
        stats["sumsq"] += float(parts[5].item())
        stats["n"] += int(parts[8].item())
        stats["l0"] += float(parts[6].item())
        fired |= np.array(parts[7])

    n, predicted = stats["n"], len(windows) * (windows.shape[1] - 1)
    total_var = stats["sumsq"] - float((stats["sum"] ** 2).sum()) / n
    clean, spliced, zeroed = (stats[k] / predicted for k in ("clean", "sae", "zero"))
    return SAEEvaluation(
        variance_explained=1.0 - stats["resid"] / max(total_var, 1e-12),
        l0=stats["l0"] / n,
        dead_fraction=float(1.0 - fired.mean()),
        clean_loss=clean,
        sae_loss=spliced,
        zero_ablation_loss=zeroed,
        loss_recovered=loss_recovered(clean, spliced, zeroed),
        tokens=n,
    )
