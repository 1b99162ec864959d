"""Effective information on a language model: neurons and residual dimensions vs SAE latents vs
steering directions, all at one layer, with random-direction controls.

Every scale has ``n`` units (n = the number of steering contrast sets, 3 by default) and is
applied at the last prompt position; the output is the model's top-1 next token:

- ``neurons`` (micro): ``mlp_hidden.L``'s n neurons with the largest variance at the prompts'
  last positions, each *set* to its low or high value (percentiles over those positions);
- ``residual_dims`` (micro): the same for coordinates of ``resid_post.L``;
- ``sae_latents`` (macro): the SAE's n latents with the largest mean activation there,
  clamped to 0 (off) or to their largest observed value (on) with the SAE's own clamp;
- ``steering`` (macro): one steering vector per built-in contrast set (mean difference at
  ``resid_post.L``, last token), added at ``strength`` × the typical residual norm (on) or not;
- ``random_like_sae`` / ``random_like_steering`` (controls): random directions with the same
  norms as the SAE clamps' mean displacement / the steering vectors, added (on) or not.

Everything is chosen from the prompts themselves (all prompt sets together), so the units are
the same for every set. Results are each prompt's top-1 token under each state, stored per
scale as soon as it is measured (a killed run redoes at most one scale).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import mlx.core as mx
import numpy as np

from mlx_hooks.contrast import load_contrast_set
from mlx_hooks.hooks import hooked
from mlx_hooks.intervention_states import AddDirections, ClampLatents, SetCoordinates, transition_samples
from mlx_hooks.steering import extract_steering_vector, prompt_tokens

from .ei_grokking import random_directions

SCALES = ("neurons", "residual_dims", "sae_latents", "steering", "random_like_sae", "random_like_steering")
MICRO = ("neurons", "residual_dims")
MACRO = ("sae_latents", "steering")
CONTROL_OF = {"sae_latents": "random_like_sae", "steering": "random_like_steering"}


@dataclass(frozen=True)
class ModelEIConfig:
    """How EI is measured on a language model."""

    layer: int = 15
    """Block whose ``mlp_hidden`` / ``resid_post`` are intervened on (the shipped SAE reads resid_post.15)."""
    steering_sets: tuple[str, ...] = ("happy_sad", "honest_deceptive", "formal_casual")
    """Contrast sets, one steering vector (unit) each; their number is every scale's n."""
    strength: float = 0.3
    """Steering coefficient as a fraction of the typical residual norm (the README's sweep: ±0.2–0.4 steer)."""
    low_percentile: float = 5.0
    high_percentile: float = 95.0
    seed: int = 0
    """Random directions."""

    @property
    def units(self) -> int:
        return len(self.steering_sets)

    def identity(self) -> dict:
        return {**asdict(self), "steering_sets": list(self.steering_sets)}


def last_position_activations(model, prompts: list[list[int]], points: list[str]) -> dict[str, np.ndarray]:
    """Each point's activation at each prompt's last position, ``{point: [P, W]}``."""
    rows = {p: [] for p in points}
    with hooked(model, capture=points) as hooks:
        for tokens in prompts:
            hooks.recorder.clear()
            model(mx.array([tokens]))
            for p in points:
                rows[p].append(np.array(hooks.recorder.stack(p)[0, -1].astype(mx.float32)))
    return {p: np.stack(v) for p, v in rows.items()}


def choose_units(model, tokenizer, sae, prompts: list[list[int]], config: ModelEIConfig) -> dict:
    """Which units each scale uses and their values (JSON-ready) — everything the scales are built from."""
    n, layer = config.units, config.layer
    hidden_point, resid_point = f"mlp_hidden.{layer}", f"resid_post.{layer}"
    acts = last_position_activations(model, prompts, [hidden_point, resid_point])
    units = {}
    for name, point in (("neurons", hidden_point), ("residual_dims", resid_point)):
        values = acts[point].astype(np.float64)
        chosen = np.sort(np.argsort(values.var(axis=0))[::-1][:n])
        units[name] = {"point": point, "units": chosen.tolist(),
                       "low": np.percentile(values[:, chosen], config.low_percentile, axis=0).tolist(),
                       "high": np.percentile(values[:, chosen], config.high_percentile, axis=0).tolist()}
    resid = mx.array(acts[resid_point])  # [P, D]
    latents = np.array(sae.encode(resid), dtype=np.float64)  # [P, d_sae]
    chosen = np.sort(np.argsort(latents.mean(axis=0))[::-1][:n])
    on = latents[:, chosen].max(axis=0)
    # how far the "on" clamp of each latent moves the residual, on average over the prompts
    from mlx_hooks.interventions import ForwardContext

    ctx = ForwardContext.from_offset(0, 1)
    moves = [float(np.linalg.norm(np.array(sae.clamp_intervention([int(i)], [float(v)], "all")(resid[:, None], ctx))[:, 0]
                                  - acts[resid_point], axis=1).mean()) for i, v in zip(chosen, on)]
    units["sae_latents"] = {"point": resid_point, "units": chosen.tolist(), "on": on.tolist(), "mean_move": moves}
    vectors, names = [], []
    for set_name in config.steering_sets:
        contrast = load_contrast_set(set_name)
        vector = extract_steering_vector(model, tokenizer, list(contrast.positive), list(contrast.negative),
                                         name=contrast.name.replace(" ", "_")[:64] or "steering",
                                         hook_point=resid_point, source=contrast.source_summary())
        vectors.append(vector.added_vector(config.strength, relative=True))
        names.append(contrast.name)
    units["steering"] = {"point": resid_point, "units": names, "vectors": np.array(vectors).tolist()}
    width = acts[resid_point].shape[1]
    for name, norms in (("random_like_sae", moves), ("random_like_steering", np.linalg.norm(vectors, axis=1))):
        directions = random_directions(n, width, config.seed + (1 if name == "random_like_sae" else 2))
        units[name] = {"point": resid_point, "units": [f"random {k}" for k in range(n)],
                       "vectors": (directions * np.asarray(norms)[:, None]).tolist()}
    return units


def build_scale(name: str, info: dict, sae):
    if name in ("neurons", "residual_dims"):
        return SetCoordinates(name, info["units"], info["low"], info["high"])
    if name == "sae_latents":
        return ClampLatents(name, sae, info["units"], info["on"])
    return AddDirections(name, np.array(info["vectors"], dtype=np.float32))


def measure_scales(model, sae, prompts: list[list[int]], units: dict, done: dict,
                   save: Callable[[str, dict], None], should_stop: Callable[[], bool] | None = None,
                   on_scale: Callable[[str, int], None] | None = None) -> dict:
    """Each scale's top-1 tokens ``[P, S]`` (scales in ``done`` are kept); ``save`` is called per scale."""
    for k, name in enumerate(SCALES):
        if name in done:
            continue
        if should_stop and should_stop():
            break
        info = units[name]
        samples = transition_samples(model, prompts, info["point"], build_scale(name, info, sae))
        choices = np.array(samples.outputs)[samples.per_prompt.argmax(axis=-1)]  # [P, S] token ids
        done[name] = {"point": info["point"], "choices": choices.tolist()}
        save(name, done[name])
        if on_scale:
            on_scale(name, k + 1)
    return done


def encode_prompt_sets(tokenizer, prompt_sets: dict[str, tuple[str, ...]]) -> tuple[list[list[int]], list[str]]:
    """Token ids of every prompt (sets in order) and the set each belongs to."""
    prompts, labels = [], []
    for set_name, texts in prompt_sets.items():
        for text in texts:
            prompts.append(prompt_tokens(tokenizer, text))
            labels.append(set_name)
    return prompts, labels


__all__ = ["CONTROL_OF", "MACRO", "MICRO", "ModelEIConfig", "SCALES", "build_scale", "choose_units",
           "encode_prompt_sets", "last_position_activations", "measure_scales"]
