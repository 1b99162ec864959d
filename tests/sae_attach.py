"""Shared by the SAE family tests: does a loaded SAE really read its point on a model?"""

from __future__ import annotations

import mlx.core as mx
import numpy as np
from conftest import make_byte_tokenizer

from mlx_hooks import hooked, hooked_stream_generate
from mlx_hooks.points import ModelAdapter
from mlx_hooks.sae.meters import ClampSpec, FeatureMeter, clamp_interventions

TOKENS = [72, 101, 108, 108, 111, 32, 119, 111]


def capture(model, point, tokens=TOKENS, interventions=None) -> np.ndarray:
    with hooked(model, capture=[point], interventions=interventions) as session:
        mx.eval(model(mx.array([tokens])))
    return np.array(session.recorder.stack(point)[0])  # [L, width]


def assert_attaches(model, sae, probe=None):
    """The SAE reads its point on ``model``: meters report its encoding, a clamp moves its decoder direction."""
    point = sae.cfg.hook_point
    acts = capture(model, point)
    assert acts.shape[-1] == sae.cfg.d_in == ModelAdapter(model).width(point)
    latents = np.array(sae.encode(mx.array(acts)))
    probe = int(np.argmax((latents > 0).sum(0))) if probe is None else probe
    meter = FeatureMeter(sae, top_n=3, watch=[probe])
    steps = list(hooked_stream_generate(model, make_byte_tokenizer(), TOKENS, max_tokens=3, readers={"sae": meter},
                                        **meter.generate_kwargs()))
    for step in steps:
        direct = np.array(sae.encode(mx.array(step.activations[point])[None]))[0]
        np.testing.assert_allclose(step.readings["sae"].watched[probe], direct[probe], rtol=1e-4, atol=1e-4)
    clamped = capture(model, point, interventions=clamp_interventions(sae, [ClampSpec(probe, 3.0)]))
    expected = (3.0 - latents[:, probe])[:, None] * np.array(sae.W_dec[probe].astype(mx.float32))[None]
    np.testing.assert_allclose(clamped - acts, expected, rtol=1e-3, atol=1e-3 * max(1.0, np.abs(expected).max()))
    return latents
