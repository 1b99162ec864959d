"""Interventions and their position masks, in single forwards and under the KV cache."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from conftest import make_tiny_llama
from mlx_lm.models.cache import make_prompt_cache

from mlx_hooks import (
    Ablate,
    AddVector,
    ForwardContext,
    FunctionIntervention,
    Patch,
    hooked,
    hooked_stream_generate,
    position_mask,
)

TOKENS = [12, 80, 33, 7, 101, 55, 3, 240]
OTHER = [90, 4, 150, 66, 21, 230, 18, 44]
T, D = len(TOKENS), 64
ALL_RESID = [f"resid_post.{i}" for i in range(3)]


def _vector(seed: int = 1) -> mx.array:
    return mx.array(np.random.default_rng(seed).standard_normal(D).astype(np.float32))


def _run(model, tokens=TOKENS, capture=ALL_RESID, interventions=None, prompt_length=None):
    """(logits [T, V], {point: [T, D]}) as numpy."""
    with hooked(model, capture=capture, interventions=interventions, prompt_length=prompt_length) as hooks:
        logits = model(mx.array([tokens]))
        mx.eval(logits)
    return np.array(logits[0]), {p: np.array(hooks.recorder.stack(p)[0]) for p in hooks.recorder.points}


def _selected(positions, prompt_length=4, n=T) -> list[int]:
    if positions == "all":
        return list(range(n))
    if positions == "prompt":
        return list(range(prompt_length))
    if positions == "generated":
        return list(range(prompt_length, n))
    return list(positions)


# -- AddVector -------------------------------------------------------------------------------


@pytest.mark.parametrize("positions", ["all", "prompt", "generated", [1, 5], [0], [7], []])
def test_add_vector_changes_exactly_the_selected_positions(tiny_model, positions):
    v = _vector()
    _, base = _run(tiny_model, prompt_length=4)
    _, steered = _run(tiny_model, interventions={"resid_post.0": AddVector(v, 3.0, positions)}, prompt_length=4)
    chosen = _selected(positions)
    others = [p for p in range(T) if p not in chosen]
    delta = steered["resid_post.0"] - base["resid_post.0"]
    np.testing.assert_allclose(delta[chosen], np.broadcast_to(3.0 * np.array(v), (len(chosen), D)), atol=1e-5)
    assert np.array_equal(delta[others], np.zeros((len(others), D), np.float32))
    # causality: later layers change at the steered positions and after, never before
    first = min(chosen, default=T)
    for point in ("resid_post.1", "resid_post.2"):
        assert np.array_equal(steered[point][:first], base[point][:first]), point
        if chosen:
            assert not np.allclose(steered[point][first], base[point][first]), point


def test_last_position_mode_selects_the_newest_token_of_each_call(tiny_model):
    v = _vector()
    _, base = _run(tiny_model)
    _, steered = _run(tiny_model, interventions={"resid_post.0": AddVector(v, 1.0, "last")})
    delta = steered["resid_post.0"] - base["resid_post.0"]
    assert np.array_equal(delta[:-1], np.zeros((T - 1, D), np.float32))
    np.testing.assert_allclose(delta[-1], np.array(v), atol=1e-5)


def test_unknown_position_mode_is_refused(tiny_model):
    with pytest.raises(ValueError, match="'middle'"):
        _run(tiny_model, interventions={"resid_post.0": AddVector(_vector(), 1.0, "middle")})


def test_add_then_subtract_restores_the_logits(tiny_model):
    v = _vector(3)
    base, _ = _run(tiny_model)
    plus = AddVector(v, 2.5, [2, 3, 6])
    minus = AddVector(v, -2.5, [2, 3, 6])
    steered, _ = _run(tiny_model, interventions={"resid_pre.1": [plus]})
    restored, _ = _run(tiny_model, interventions={"resid_pre.1": [plus, minus]})
    assert not np.allclose(steered, base, atol=1e-3)
    np.testing.assert_allclose(restored, base, rtol=1e-5, atol=1e-5)


def test_relative_add_vector_scales_with_the_residual_norm(tiny_model):
    v = _vector(4) * 7.0  # not unit length: the direction is normalised
    _, base = _run(tiny_model)
    _, steered = _run(tiny_model, interventions={"resid_post.1": AddVector(v, 0.3, [0, 4, 5], relative=True)})
    x = base["resid_post.1"]
    unit = np.array(v) / np.linalg.norm(np.array(v))
    expected = x.copy()
    for p in (0, 4, 5):
        expected[p] = x[p] + 0.3 * np.linalg.norm(x[p]) * unit
    np.testing.assert_allclose(steered["resid_post.1"], expected, rtol=1e-5, atol=1e-5)
    # the added vector's norm is 0.3 of the residual's own norm
    added = steered["resid_post.1"][4] - x[4]
    assert np.linalg.norm(added) == pytest.approx(0.3 * np.linalg.norm(x[4]), rel=1e-4)


def test_scale_can_change_between_forwards(tiny_model):
    v = _vector()
    steer = AddVector(v, 0.0)
    with hooked(tiny_model, capture=["resid_post.0"], interventions={"resid_post.0": steer}) as hooks:
        mx.eval(tiny_model(mx.array([TOKENS])))
        first = np.array(hooks.recorder.stack("resid_post.0"))
        steer.scale = 2.0
        mx.eval(tiny_model(mx.array([TOKENS])))
        second = np.array(hooks.recorder.stack("resid_post.0"))
    np.testing.assert_allclose(second - first, np.broadcast_to(2.0 * np.array(v), first.shape), atol=1e-5)


# -- Ablate ------------------------------------------------------------------------------------


def test_ablate_zeros_the_masked_positions(tiny_model):
    _, base = _run(tiny_model, capture=["attn_out.1", "resid_post.2"])
    _, ablated = _run(tiny_model, capture=["attn_out.1", "resid_post.2"],
                      interventions={"attn_out.1": Ablate(positions=[2, 6])})
    got = ablated["attn_out.1"]
    assert np.array_equal(got[[2, 6]], np.zeros((2, D), np.float32))
    keep = [0, 1, 3, 4, 5, 7]
    assert np.array_equal(got[keep], base["attn_out.1"][keep])
    assert np.array_equal(ablated["resid_post.2"][:2], base["resid_post.2"][:2])
    assert not np.allclose(ablated["resid_post.2"][2], base["resid_post.2"][2])


def test_ablate_with_a_value_uses_it(tiny_model):
    mean = _vector(5)
    _, ablated = _run(tiny_model, capture=["mlp_out.0"], interventions={"mlp_out.0": Ablate("all", value=mean)})
    assert np.array_equal(ablated["mlp_out.0"], np.broadcast_to(np.array(mean), (T, D)))


# -- Patch -------------------------------------------------------------------------------------


def test_patching_all_positions_reproduces_the_source_run(tiny_model):
    other_logits, other = _run(tiny_model, tokens=OTHER)
    base_logits, _ = _run(tiny_model)
    source = mx.array(other["resid_post.0"])  # [T, D]
    patched_logits, patched = _run(tiny_model, interventions={"resid_post.0": Patch(source)})
    assert not np.allclose(base_logits, other_logits, atol=1e-2)
    for point in ALL_RESID:
        np.testing.assert_allclose(patched[point], other[point], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(patched_logits, other_logits, rtol=1e-4, atol=1e-4)


def test_patch_positions_and_3d_source(tiny_model):
    _, other = _run(tiny_model, tokens=OTHER)
    _, base = _run(tiny_model)
    source = mx.array(other["resid_post.0"])[None]  # [1, T, D]
    _, patched = _run(tiny_model, interventions={"resid_post.0": Patch(source, positions=[3])})
    got = patched["resid_post.0"]
    assert np.array_equal(got[3], other["resid_post.0"][3])
    assert np.array_equal(np.delete(got, 3, axis=0), np.delete(base["resid_post.0"], 3, axis=0))


def test_patch_leaves_positions_beyond_the_source(tiny_model):
    _, other = _run(tiny_model, tokens=OTHER)
    _, base = _run(tiny_model)
    short = mx.array(other["resid_post.0"][:3])  # covers positions 0..2 only
    _, patched = _run(tiny_model, interventions={"resid_post.0": Patch(short)})
    assert np.array_equal(patched["resid_post.0"][:3], other["resid_post.0"][:3])
    assert np.array_equal(patched["resid_post.0"][3:], base["resid_post.0"][3:])


def test_patch_per_row_patches_one_position_per_batch_row(tiny_model):
    _, other = _run(tiny_model, tokens=OTHER)
    source = mx.array(other["resid_post.0"])
    rows = [0, 4, 7]
    with hooked(tiny_model, capture=["resid_post.0"], interventions={"resid_post.0": Patch(source, per_row=rows)}) as h:
        mx.eval(tiny_model(mx.array([TOKENS] * len(rows))))
    got = np.array(h.recorder.stack("resid_post.0"))  # [3, T, D]
    # The unpatched reference is the same 3-row batch: BLAS may round a 3-row matmul
    # differently from a 1-row one, and this test is about which positions change.
    with hooked(tiny_model, capture=["resid_post.0"]) as h:
        mx.eval(tiny_model(mx.array([TOKENS] * len(rows))))
    base = np.array(h.recorder.stack("resid_post.0"))  # [3, T, D]
    for b, p in enumerate(rows):
        assert np.array_equal(got[b, p], other["resid_post.0"][p])
        assert np.array_equal(np.delete(got[b], p, axis=0), np.delete(base[b], p, axis=0))


# -- positions under the KV cache ------------------------------------------------------------


def test_generated_mask_under_kv_cache_matches_a_full_forward(tokenizer):
    model = make_tiny_llama(seed=2)
    prompt = tokenizer.encode("The quick brown fox")
    P = len(prompt)
    v = _vector(7)
    steps = list(hooked_stream_generate(
        model, tokenizer, prompt, max_tokens=8, capture=ALL_RESID,
        interventions={"resid_post.0": AddVector(v, 4.0, "generated")}, step_activations=False,
        session_out=(sessions := []),
    ))
    generated = [s.token for s in steps]
    assert len(generated) == 8
    recorder = sessions[0].recorder
    full = prompt + generated
    assert recorder.end == len(full)
    explicit = AddVector(v, 4.0, list(range(P, len(full))))
    logits, ref = _run(model, tokens=full, interventions={"resid_post.0": explicit})
    _, unsteered = _run(model, tokens=full)
    for point in ALL_RESID:
        cached = np.array(recorder.stack(point)[0])
        np.testing.assert_allclose(cached, ref[point], rtol=1e-4, atol=1e-4)
        # prompt positions untouched, generated positions steered
        np.testing.assert_allclose(cached[:P], unsteered[point][:P], rtol=1e-4, atol=1e-4)
    delta = np.array(recorder.stack("resid_post.0")[0]) - unsteered["resid_post.0"]
    np.testing.assert_allclose(delta[P:], np.broadcast_to(4.0 * np.array(v), (len(generated), D)), atol=1e-4)
    # the steered generation is greedy under the same intervention without a cache
    assert generated == [int(t) for t in logits[P - 1: len(full) - 1].argmax(-1)]


def test_explicit_positions_under_prefill_chunks_and_decode_steps(tiny_model):
    v = _vector(8)
    spec = [1, 5, 6]
    _, ref = _run(tiny_model, interventions={"resid_post.1": AddVector(v, 2.0, spec)})
    seen: list[list[int]] = []
    log = FunctionIntervention(lambda x, ctx: (seen.append(np.array(ctx.positions)[0].tolist()), x)[1])
    with hooked(tiny_model, capture=ALL_RESID,
                interventions={"resid_post.1": AddVector(v, 2.0, spec), "resid_pre.0": log}) as hooks:
        cache = make_prompt_cache(tiny_model)
        for chunk in ([12, 80, 33], [7, 101], [55], [3], [240]):
            mx.eval(tiny_model(mx.array([chunk]), cache=cache))
    assert seen == [[0, 1, 2], [3, 4], [5], [6], [7]]
    for point in ALL_RESID:
        np.testing.assert_allclose(np.array(hooks.recorder.stack(point)[0]), ref[point], rtol=1e-4, atol=1e-4)


# -- ForwardContext and masks ------------------------------------------------------------------


def test_forward_context_from_scalar_offset():
    ctx = ForwardContext.from_offset(5, 3, prompt_length=6)
    assert np.array(ctx.positions).tolist() == [[5, 6, 7]]
    assert ctx.start == 5 and ctx.prompt_length == 6
    masks = {spec: np.array(position_mask(spec, ctx))[..., 0].tolist() for spec in ("all", "prompt", "generated", "last")}
    assert masks == {"all": [[True] * 3], "prompt": [[True, False, False]], "generated": [[False, True, True]],
                     "last": [[False, False, True]]}
    assert np.array(position_mask([7, 100], ctx))[..., 0].tolist() == [[False, False, True]]
    assert np.array(position_mask([], ctx))[..., 0].tolist() == [[False] * 3]


def test_no_prompt_length_means_everything_is_prompt():
    ctx = ForwardContext.from_offset(0, 4)
    assert np.array(position_mask("prompt", ctx)).all()
    assert not np.array(position_mask("generated", ctx)).any()


def test_left_padded_rows_get_negative_positions_no_mask_selects():
    ctx = ForwardContext.from_offset(mx.array([0, -2, -4]), 5, prompt_length=2)
    pos = np.array(ctx.positions)
    assert pos.tolist() == [[0, 1, 2, 3, 4], [-2, -1, 0, 1, 2], [-4, -3, -2, -1, 0]]
    assert ctx.start == 0
    padding = pos < 0
    for spec in ("all", "prompt", "generated", "last", [-2, -1, 0, 1, 2, 3, 4], list(range(-4, 5))):
        mask = np.array(position_mask(spec, ctx))[..., 0]
        assert mask.shape == pos.shape
        assert not mask[padding].any(), spec
    assert np.array_equal(np.array(position_mask("all", ctx))[..., 0], ~padding)
    assert np.array(position_mask([0], ctx))[..., 0].tolist() == [
        [True, False, False, False, False], [False, False, True, False, False], [False, False, False, False, True]]


def test_interventions_leave_left_padding_alone():
    ctx = ForwardContext.from_offset(mx.array([0, -2]), 4)
    x = mx.array(np.random.default_rng(0).standard_normal((2, 4, D)).astype(np.float32))
    source = mx.ones((4, D))
    for intervention in (AddVector(_vector(), 5.0), Ablate(), Patch(source), AddVector(_vector(), 1.0, relative=True)):
        out = np.array(intervention(x, ctx))
        assert np.array_equal(out[1, :2], np.array(x)[1, :2]), type(intervention).__name__
        assert not np.array_equal(out[1, 2:], np.array(x)[1, 2:]), type(intervention).__name__
    patched = np.array(Patch(source)(x, ctx))
    assert np.array_equal(patched[1, 2:], np.ones((2, D), np.float32))  # positions 0, 1 of the source


def test_builtin_interventions_keep_bf16():
    ctx = ForwardContext.from_offset(0, 3)
    x = mx.random.normal((1, 3, D)).astype(mx.bfloat16)
    v = mx.random.normal((D,))  # float32
    for intervention in (AddVector(v, 2.0), AddVector(v, 0.5, relative=True), Ablate(value=v), Patch(mx.ones((3, D)))):
        assert intervention(x, ctx).dtype == mx.bfloat16, type(intervention).__name__
