"""The engine's intervention table: its order is the order interventions apply, and switching an
entry off and on keeps its settings (handlers called directly on an EngineState, tiny model and SAE)."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from mlx_hooks.hooks import hooked
from mlx_hooks.loader import load_model
from mlx_hooks.sae.model import SAE, SAEConfig
from mlx_hooks.steering import SteeringVector
from symbiont_app.engine.handlers.steering.handler import (
    add_clamp, add_vector, current_preset, remove, set_enabled, set_positions, set_value,
)
from symbiont_app.engine.handlers.sae.messages import UnloadSae
from symbiont_app.engine.handlers.steering.messages import (
    InterventionsChanged, RemoveIntervention, SetEnabled, SetPositions, SetValue,
)
from symbiont_app.engine.registry import HandlerContext
from symbiont_app.engine.state import EngineState

POINT = "resid_post.1"
LATENT = 5


@pytest.fixture(scope="module")
def loaded(tiny_folder):
    return load_model(str(tiny_folder))


@pytest.fixture()
def state(loaded):
    state = EngineState()
    state.loaded = loaded
    mx.random.seed(7)
    sae = SAE(SAEConfig(d_in=64, d_sae=16, architecture="standard", hook_point=POINT, sae_id="tiny-standard"))
    mx.eval(sae.parameters())
    state.sae, state.sae_id = sae, sae.cfg.sae_id
    return state


def _vector_along_latent(sae: SAE) -> SteeringVector:
    """A direction the SAE's latent reads strongly: ablating the latent before or after adding it differs."""
    direction = np.asarray(sae.W_enc[:, LATENT], dtype=np.float32)  # [D]
    return SteeringVector(name="along", hook_point=POINT, vector=direction)


def _logits(state: EngineState, interventions) -> np.ndarray:
    tokens = mx.array([[10, 20, 30, 40, 50]])
    with hooked(state.loaded.model, interventions=interventions):
        out = state.loaded.model(tokens)  # [1, L, V]
    return np.array(out.astype(mx.float32))


def _call(handler, state, request) -> InterventionsChanged:
    seen = []
    handler(state, request, HandlerContext(request.request_id, seen.append, lambda: False))
    return seen[-1]


def test_table_order_is_the_order_interventions_apply(state):
    vector = add_vector(state, _vector_along_latent(state.sae), 8.0, relative=False)
    ablation = add_clamp(state, LATENT, 0.0)  # added second: it sees the steered residual
    table = state.table
    assert table.names() == [vector, ablation]
    applied = state.interventions()[POINT]
    assert applied == [table.find(vector).intervention, table.find(ablation).intervention]

    as_added = _logits(state, {POINT: applied})
    reversed_order = _logits(state, {POINT: applied[::-1]})
    # The composition depends on order (ablating after steering removes what the vector put on the latent)...
    assert np.abs(as_added - reversed_order).max() > 1e-3
    # ...and a generation gets the table's order
    np.testing.assert_array_equal(_logits(state, state.generation_kwargs()["interventions"]), as_added)

    # Removing and adding back the vector puts it last: now the ablation applies first
    _call(remove, state, RemoveIntervention(request_id=1, name=vector))
    add_vector(state, _vector_along_latent(state.sae), 8.0, relative=False)
    assert table.names() == [ablation, vector]
    np.testing.assert_allclose(_logits(state, state.interventions()), reversed_order, atol=1e-5)


def test_switching_off_and_on_keeps_settings_and_place(state):
    vector = add_vector(state, _vector_along_latent(state.sae), 1.0, relative=False)
    clamp = add_clamp(state, LATENT, 3.0)
    other = add_vector(state, SteeringVector(name="other", hook_point="resid_post.0",
                                             vector=np.ones(64, dtype=np.float32)), 0.5, relative=False)
    _call(set_value, state, SetValue(request_id=1, name=vector, value=2.5))
    _call(set_positions, state, SetPositions(request_id=2, name=vector, positions="generated"))
    _call(set_value, state, SetValue(request_id=3, name=clamp, value=4.0))
    _call(set_positions, state, SetPositions(request_id=4, name=clamp, positions=(1, 2)))
    before = state.table.infos()
    both_on = _logits(state, state.interventions())

    changed = _call(set_enabled, state, SetEnabled(request_id=5, name=vector, enabled=False))
    changed = _call(set_enabled, state, SetEnabled(request_id=6, name=clamp, enabled=False))
    assert [i.enabled for i in changed.items] == [False, False, True]
    assert state.interventions() == {"resid_post.0": [state.table.find(other).intervention]}
    # a preset leaves switched-off entries out
    assert [e.vector for e in current_preset(state, "p").interventions] == [other]
    off = [(i.name, i.value, i.positions, i.mode, i.latent) for i in changed.items]
    assert off == [(i.name, i.value, i.positions, i.mode, i.latent) for i in before]

    _call(set_enabled, state, SetEnabled(request_id=7, name=clamp, enabled=True))
    changed = _call(set_enabled, state, SetEnabled(request_id=8, name=vector, enabled=True))
    assert changed.items == before  # same settings, same rows, in the same order
    assert state.table.names() == [vector, clamp, other]
    np.testing.assert_array_equal(_logits(state, state.interventions()), both_on)


def test_a_slider_move_acts_on_the_live_intervention(state):
    vector = add_vector(state, _vector_along_latent(state.sae), 1.0, relative=False)
    live = state.interventions()[POINT][0]
    first = _logits(state, state.interventions())
    _call(set_value, state, SetValue(request_id=1, name=vector, value=6.0))
    assert state.interventions()[POINT][0] is live and live.scale == 6.0  # changed in place, not rebuilt
    assert np.abs(_logits(state, {POINT: [live]}) - first).max() > 1e-3


def test_reclamping_keeps_its_row_and_a_new_sae_drops_the_old_clamps(state):
    from symbiont_app.engine.handlers.sae.handler import unload

    first = add_clamp(state, 1, 1.0)
    vector = add_vector(state, _vector_along_latent(state.sae), 1.0, relative=False)
    assert add_clamp(state, 1, 2.0) == first
    assert state.table.names() == [first, vector] and state.table.find(first).value == 2.0
    unload(state, UnloadSae(request_id=1), HandlerContext(1, lambda e: None, lambda: False))
    assert state.table.names() == [vector]
