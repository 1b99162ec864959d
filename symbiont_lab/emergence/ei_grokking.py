"""Effective information of the grokking network at a checkpoint: neurons vs Fourier features.

Four intervention scales of ``units`` units each (2^units states, every one tried on every
prompt pair (a, b); the output is the predicted residue c = argmax of the logits):

- ``neurons`` (micro): the MLP neurons with the largest variance over all p² inputs, each set
  to its own low or high value (percentiles of its activations over the inputs);
- ``residual_dims`` (micro): the same for coordinates of the residual stream after attention
  (``resid_mid``, the MLP's input);
- ``fourier`` (macro): at ``resid_mid``, the projections on the directions that carry
  ``cos(2πka/p)`` and ``sin(2πka/p)`` for the network's strongest key frequencies k (the
  Fourier component over a of the centred activations), each set to its low or high value;
- ``random_directions`` (control): the same along random directions of ``resid_mid``.

The choices (which units, their low/high values) are made per checkpoint from that
checkpoint's activations; key frequencies are the arm's final ones (:mod:`.progress_measures`),
as Nanda et al. fix theirs from the trained network. The measurements are stored as each
prompt's output under each state (``[prompts, states]``), so EI, intervals and controls are
recomputed from the stored data by the report.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import mlx.core as mx
import numpy as np

from mlx_hooks.interventions import ForwardContext
from mlx_hooks.intervention_states import SetCoordinates, SetProjections, state_table

from .grokking import Split
from .model import ModularTransformer

SCALES = ("neurons", "residual_dims", "fourier", "random_directions")
MICRO = ("neurons", "residual_dims")
MACRO = "fourier"


@dataclass(frozen=True)
class GrokEIConfig:
    """How EI is measured on the grokking network."""

    units: int = 4
    """Units per scale (2^units states); the Fourier scale takes cos and sin of units/2 frequencies."""
    prompts: int = 96
    """Input pairs (a, b) each state is tried on (a fixed random sample of all p²)."""
    low_percentile: float = 5.0
    """A unit's "low" value: this percentile of its values over all inputs."""
    high_percentile: float = 95.0
    """Its "high" value."""
    seed: int = 0
    """Prompt sample and random directions."""

    def identity(self) -> dict:
        return asdict(self)


def prompt_rows(p: int, config: GrokEIConfig) -> np.ndarray:
    """Row indices (a·p + b) of the prompt pairs."""
    rng = np.random.default_rng([config.seed, *b"ei-prompts"])
    return np.sort(rng.choice(p * p, size=min(config.prompts, p * p), replace=False))


def _ranges(values: np.ndarray, config: GrokEIConfig) -> tuple[np.ndarray, np.ndarray]:
    """Per-column low and high percentiles of ``values`` ``[inputs, units]``."""
    return (np.percentile(values, config.low_percentile, axis=0),
            np.percentile(values, config.high_percentile, axis=0))


def fourier_directions(resid: np.ndarray, p: int, frequencies) -> np.ndarray:
    """Unit directions ``[2F, D]`` of ``resid`` ``[p², D]`` (row a·p + b) along cos/sin(2πka/p) for each k."""
    centred = (resid - resid.mean(axis=0)).reshape(p, p, -1)  # [a, b, D]
    over_a = centred.mean(axis=1)  # [a, D]: the part that varies with a
    rows = []
    for k in frequencies:
        for fn in (np.cos, np.sin):
            v = fn(2 * np.pi * k * np.arange(p) / p) @ over_a  # [D]
            rows.append(v / max(np.linalg.norm(v), 1e-12))
    return np.array(rows)


def random_directions(n: int, width: int, seed: int) -> np.ndarray:
    """``n`` orthonormal random directions ``[n, width]`` (a fixed stream per seed)."""
    gauss = np.random.default_rng([seed, *b"ei-random-directions"]).standard_normal((width, n))
    q, _ = np.linalg.qr(gauss)
    return q.T


def build_scales(model: ModularTransformer, split: Split, key_freqs: list[int], config: GrokEIConfig) -> dict:
    """``{scale: (site, Scale, description)}`` for this checkpoint."""
    sites = model.sites(mx.array(split.tokens))
    resid = np.array(sites["resid_mid"], dtype=np.float64)  # [p², D]
    hidden = np.array(sites["mlp_hidden"], dtype=np.float64)  # [p², d_mlp]
    n = config.units
    out = {}
    for name, site, values in (("neurons", "mlp_hidden", hidden), ("residual_dims", "resid_mid", resid)):
        chosen = np.sort(np.argsort(values.var(axis=0))[::-1][:n])
        low, high = _ranges(values[:, chosen], config)
        out[name] = (site, SetCoordinates(name, chosen.tolist(), low, high), {"units": chosen.tolist()})
    freqs = list(key_freqs[: max(1, n // 2)])
    for name, directions, info in (
            ("fourier", fourier_directions(resid, model.shape.p, freqs)[:n], {"frequencies": freqs}),
            ("random_directions", random_directions(n, resid.shape[1], config.seed), {})):
        low, high = _ranges(resid @ directions.T, config)
        out[name] = ("resid_mid", SetProjections(name, directions, low, high), info)
    for name, (_, scale, info) in out.items():
        info.update(low=np.round(scale.low, 5).tolist(), high=np.round(scale.high, 5).tolist())
    return out


def choices_under_states(model: ModularTransformer, tokens: np.ndarray, site: str, scale) -> np.ndarray:
    """The predicted residue of each prompt row of ``tokens`` ``[P, 3]`` under each state: ``[P, S]``."""
    states = state_table(scale.n_units)  # [S, n]
    n_prompts, n_states = tokens.shape[0], states.shape[0]
    batch = np.repeat(tokens, n_states, axis=0)  # [P·S, 3]: prompt-major
    row_states = np.tile(states, (n_prompts, 1))  # [P·S, n]
    ctx = ForwardContext.from_offset(0, 1)
    logits = model(mx.array(batch), edits={site: lambda x: scale.edit(x, row_states, ctx)})  # [P·S, p]
    return np.array(mx.argmax(logits, axis=-1)).reshape(n_prompts, n_states)


def measure_checkpoint(model: ModularTransformer, split: Split, key_freqs: list[int], config: GrokEIConfig) -> dict:
    """Each scale's outputs ``[prompts, states]`` (as lists) and what the units were."""
    rows = prompt_rows(model.shape.p, config)
    tokens = split.tokens[rows]
    result = {}
    for name, (site, scale, info) in build_scales(model, split, key_freqs, config).items():
        result[name] = {"site": site, **info, "choices": choices_under_states(model, tokens, site, scale).tolist()}
    return result


__all__ = ["GrokEIConfig", "MACRO", "MICRO", "SCALES", "build_scales", "choices_under_states", "fourier_directions",
           "measure_checkpoint", "prompt_rows", "random_directions"]
