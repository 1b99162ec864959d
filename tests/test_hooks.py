"""Hook points, wrappers and their removal, on tiny random llamas (mlx_hooks.hooks / points)."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from conftest import make_tiny_llama
from mlx.utils import tree_flatten
from mlx_lm.models.cache import KVCache, make_prompt_cache

from mlx_hooks import (
    AddVector,
    FunctionIntervention,
    HookPoint,
    HookPointError,
    HookSession,
    SymbiontError,
    hook_points,
    hooked,
)
from mlx_hooks.hooks import parse_point

TOKENS = [12, 80, 33, 7, 101, 55, 3, 240]
N_LAYERS = 3


def _ids(model) -> dict[str, int]:
    """id() of every module the hooks may replace, by place."""
    backbone = model.model  # attribute access goes through hook wrappers
    ids = {"model.model": id(backbone), "embed_tokens": id(backbone.embed_tokens), "norm": id(backbone.norm),
           "layers": id(backbone.layers)}
    for i, layer in enumerate(backbone.layers):
        ids[f"layers.{i}"] = id(layer)
        ids[f"layers.{i}.self_attn"] = id(layer.self_attn)
        ids[f"layers.{i}.mlp"] = id(layer.mlp)
    return ids


def _param_names(model) -> list[str]:
    return sorted(name for name, _ in tree_flatten(model.parameters()))


def _forward(model, tokens=TOKENS) -> mx.array:
    logits = model(mx.array([tokens]))
    mx.eval(logits)
    return logits


# -- point names -----------------------------------------------------------------------------


def test_hook_points_lists_every_point_in_declared_order(tiny_model):
    expected = ["embed"]
    for i in range(N_LAYERS):
        expected += [f"resid_pre.{i}", f"attn_z.{i}", f"attn_out.{i}", f"mlp_hidden.{i}", f"mlp_out.{i}",
                     f"resid_post.{i}"]
    assert hook_points(tiny_model) == expected


def test_hook_points_order_is_the_real_forward_order(tiny_model):
    seen: list[str] = []
    points = hook_points(tiny_model)

    def logger(name):
        return FunctionIntervention(lambda x, ctx: (seen.append(name), x)[1], name=name)

    with hooked(tiny_model, interventions={p: logger(p) for p in points}):
        _forward(tiny_model)
    assert seen == points


@pytest.mark.parametrize("name", ["resid_mid.0", "resid_post.x", "resid_post.", "resid_post", "", "attn.1", "embed.0"])
def test_unknown_point_names_raise_hook_point_error_naming_the_point(tiny_model, name):
    with pytest.raises(HookPointError) as info:
        parse_point(tiny_model, name)
    assert repr(name) in str(info.value)
    assert isinstance(info.value, SymbiontError) and isinstance(info.value, KeyError)


@pytest.mark.parametrize("name,layer", [("resid_post.3", 3), ("resid_pre.17", 17), ("attn_out.-4", -4), ("mlp_out.3", 3)])
def test_out_of_range_layer_names_point_and_layer_count(tiny_model, name, layer):
    with pytest.raises(HookPointError) as info:
        parse_point(tiny_model, name)
    message = str(info.value)
    assert repr(name) in message
    assert f"layer {layer}" in message
    assert "3 layers" in message
    assert not message.startswith('"')  # not KeyError's quoted repr


def test_bad_point_in_hooked_raises_and_leaves_model_untouched(tiny_model):
    before_ids, before_names = _ids(tiny_model), _param_names(tiny_model)
    with pytest.raises(HookPointError, match="resid_post.3"):
        with hooked(tiny_model, capture=["resid_post.0", "resid_post.3"]):
            pass  # pragma: no cover
    with pytest.raises(HookPointError, match="resid_mid.1"):
        with hooked(tiny_model, interventions={"resid_mid.1": AddVector(mx.zeros(64))}):
            pass  # pragma: no cover
    assert _ids(tiny_model) == before_ids
    assert _param_names(tiny_model) == before_names


@pytest.mark.parametrize("name,expected", [
    ("resid_post.-1", HookPoint(2, "resid_post")),
    ("resid_pre.-3", HookPoint(0, "resid_pre")),
    ("attn_out.-2", HookPoint(1, "attn_out")),
    ("mlp_out.2", HookPoint(2, "mlp_out")),
    ("embed", HookPoint(-1, "embed")),
])
def test_negative_indices_normalise(tiny_model, name, expected):
    point = parse_point(tiny_model, name)
    assert point == expected
    assert parse_point(tiny_model, point) == expected  # a HookPoint parses to itself


def test_negative_index_capture_is_stored_under_the_normalised_name(tiny_model):
    with hooked(tiny_model, capture=["resid_post.-1", "resid_post.2"]) as hooks:
        _forward(tiny_model)
    assert hooks.capture_points == ["resid_post.2", "resid_post.2"]
    assert hooks.recorder.points == ["resid_post.2"]
    assert hooks.recorder.stack("resid_post.2").shape == (1, len(TOKENS), 64)


# -- captures --------------------------------------------------------------------------------


def test_captures_leave_output_bit_identical(tiny_model):
    plain = np.array(_forward(tiny_model))
    with hooked(tiny_model, capture=hook_points(tiny_model)) as hooks:
        hooked_logits = np.array(_forward(tiny_model))
    assert np.array_equal(plain, hooked_logits)
    assert set(hooks.recorder.points) == set(hook_points(tiny_model))
    assert np.array_equal(plain, np.array(_forward(tiny_model)))


def test_captured_residual_stream_is_consistent(tiny_model):
    with hooked(tiny_model, capture=hook_points(tiny_model)) as hooks:
        _forward(tiny_model)
    rec = hooks.recorder
    get = lambda p: np.array(rec.stack(p))  # noqa: E731
    assert np.array_equal(get("resid_pre.0"), get("embed"))
    for i in range(N_LAYERS - 1):
        assert np.array_equal(get(f"resid_pre.{i + 1}"), get(f"resid_post.{i}"))
    for i in range(N_LAYERS):
        pre, attn, mlp, post = (get(f"{k}.{i}") for k in ("resid_pre", "attn_out", "mlp_out", "resid_post"))
        assert np.abs(attn).max() > 0 and np.abs(mlp).max() > 0
        np.testing.assert_allclose(post, pre + attn + mlp, rtol=1e-6, atol=1e-6)
        # llama: h = x + attn; out = h + mlp (same association: exactly equal)
        assert np.array_equal(post, (pre + attn) + mlp)
    assert np.array_equal(rec.positions("resid_post.1"), np.arange(len(TOKENS)))


def test_resid_pre_after_an_edit_of_itself_or_of_the_previous_resid_post_holds_the_edited_stream(tiny_model):
    # resid_pre.i shares its captured node with resid_post.(i-1) when both are the same array; an edit
    # at either point must still show where it was made.
    d = tiny_model.args.hidden_size
    one, two = mx.ones((d,)), mx.full((d,), 2.0)
    with hooked(tiny_model, capture=hook_points(tiny_model),
                interventions={"resid_post.0": AddVector(one), "resid_pre.1": AddVector(two)}) as hooks:
        _forward(tiny_model)
    with hooked(tiny_model, capture=hook_points(tiny_model)) as plain:
        _forward(tiny_model)
    get = lambda rec, p: np.array(rec.stack(p))  # noqa: E731
    edited_post0 = get(plain.recorder, "resid_post.0") + 1.0
    np.testing.assert_allclose(get(hooks.recorder, "resid_post.0"), edited_post0, rtol=1e-6)
    np.testing.assert_allclose(get(hooks.recorder, "resid_pre.1"), edited_post0 + 2.0, rtol=1e-6)
    assert np.array_equal(get(hooks.recorder, "resid_pre.2"), get(hooks.recorder, "resid_post.1"))


def test_embed_capture_equals_embedding_lookup(tiny_model):
    with hooked(tiny_model, capture=["embed"]) as hooks:
        _forward(tiny_model)
    expected = tiny_model.model.embed_tokens(mx.array([TOKENS]))
    assert np.array_equal(np.array(hooks.recorder.stack("embed")), np.array(expected))


def test_final_resid_post_gives_the_logits(tiny_model):
    with hooked(tiny_model, capture=["resid_post.-1"]) as hooks:
        logits = _forward(tiny_model)
    last = hooks.recorder.stack("resid_post.2")
    rebuilt = tiny_model.model.embed_tokens.as_linear(tiny_model.model.norm(last))
    np.testing.assert_allclose(np.array(rebuilt), np.array(logits), rtol=1e-5, atol=1e-5)


# -- restoring the model ---------------------------------------------------------------------


def test_model_is_restored_after_the_block(tiny_model):
    before_ids, before_names = _ids(tiny_model), _param_names(tiny_model)
    with hooked(tiny_model, capture=hook_points(tiny_model)):
        assert _ids(tiny_model) != before_ids  # really wrapped
        _forward(tiny_model)
    assert _ids(tiny_model) == before_ids
    assert _param_names(tiny_model) == before_names
    assert not any(getattr(m, "_is_hook_wrapper", False) for _, m in tiny_model.named_modules())


def test_model_is_restored_when_the_block_raises(tiny_model):
    before_ids, before_names = _ids(tiny_model), _param_names(tiny_model)
    plain = np.array(_forward(tiny_model))

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        with hooked(tiny_model, capture=["resid_post.1", "attn_out.0"],
                    interventions={"mlp_out.2": AddVector(mx.ones(64), 3.0)}):
            _forward(tiny_model)
            raise Boom()
    assert _ids(tiny_model) == before_ids
    assert _param_names(tiny_model) == before_names
    assert np.array_equal(np.array(_forward(tiny_model)), plain)


def test_model_is_restored_when_the_forward_raises(tiny_model):
    before_ids = _ids(tiny_model)

    def fail(x, ctx):
        raise RuntimeError("intervention failed")

    with pytest.raises(RuntimeError, match="intervention failed"):
        with hooked(tiny_model, interventions={"resid_pre.1": FunctionIntervention(fail)}):
            _forward(tiny_model)
    assert _ids(tiny_model) == before_ids


def test_a_session_cannot_be_attached_twice_and_can_be_reused(tiny_model):
    session = HookSession(tiny_model, capture=["resid_post.0"])
    before = _ids(tiny_model)
    with session.attached():
        with pytest.raises(RuntimeError, match="already attached"):
            with session.attached():
                pass  # pragma: no cover
        _forward(tiny_model)
    # the failed re-attach must not have unwrapped the first attachment early
    assert _ids(tiny_model) == before
    with session.attached():
        assert _ids(tiny_model) != before
        _forward(tiny_model)
    assert _ids(tiny_model) == before


def test_wrappers_keep_parameters_visible(tiny_model):
    original = dict(tree_flatten(tiny_model.parameters()))
    with hooked(tiny_model, capture=hook_points(tiny_model)):
        attached = dict(tree_flatten(tiny_model.parameters()))
        trainable = dict(tree_flatten(tiny_model.trainable_parameters()))
    assert len(attached) == len(original)
    assert "model.inner.layers.0.inner.self_attn.inner.q_proj.weight" in attached
    assert "model.inner.layers.2.inner.mlp.inner.down_proj.inner.weight" in attached  # mlp_hidden wraps down_proj
    assert "model.inner.embed_tokens.inner.weight" in attached
    for name, value in attached.items():
        plain = name.replace(".inner", "")
        assert plain in original, name
        assert value is original[plain] or np.array_equal(np.array(value), np.array(original[plain]))
    assert len(trainable) == len(original)


def test_make_prompt_cache_and_cached_decode_work_on_wrapped_model(tiny_model):
    full = np.array(_forward(tiny_model))
    with hooked(tiny_model, capture=["resid_post.1"]) as hooks:
        cache = make_prompt_cache(tiny_model)
        assert len(cache) == N_LAYERS and all(isinstance(c, KVCache) for c in cache)
        outs = [tiny_model(mx.array([TOKENS[:5]]), cache=cache)]
        for t in TOKENS[5:]:
            outs.append(tiny_model(mx.array([[t]]), cache=cache))
        stepped = np.array(mx.concatenate(outs, axis=1))
        assert cache[0].offset == len(TOKENS)
    np.testing.assert_allclose(stepped, full, rtol=1e-4, atol=1e-4)
    assert np.array_equal(hooks.recorder.positions("resid_post.1"), np.arange(len(TOKENS)))


# -- interventions while attached ------------------------------------------------------------


def test_intervention_added_while_attached_applies_on_next_forward(tiny_model):
    v = mx.array(np.linspace(-1, 1, 64).astype(np.float32))
    steer = AddVector(v, 2.0)
    with hooked(tiny_model, capture=["resid_post.1"]) as hooks:
        base = np.array(_forward(tiny_model))
        base_res = np.array(hooks.recorder.stack("resid_post.1"))
        hooks.add("resid_post.1", steer)
        steered = np.array(_forward(tiny_model))
        steered_res = np.array(hooks.recorder.stack("resid_post.1"))
        hooks.add("mlp_out.0", AddVector(v, 0.0))  # a point not wrapped before: wrapped now
        assert np.array_equal(np.array(_forward(tiny_model)), steered)
        hooks.remove("resid_post.1", steer)
        again = np.array(_forward(tiny_model))
    assert not np.allclose(steered, base)
    np.testing.assert_allclose(steered_res - base_res, np.broadcast_to(2.0 * np.array(v), base_res.shape), atol=1e-5)
    assert np.array_equal(again, base)
    assert np.array_equal(np.array(_forward(tiny_model)), base)


def test_intervention_added_to_an_empty_attached_session_applies(tiny_model):
    """A session attached with no points wrapped nothing yet; add() must still wrap."""
    base = np.array(_forward(tiny_model))
    before = _ids(tiny_model)
    session = HookSession(tiny_model)
    with session.attached():
        assert _ids(tiny_model) == before
        session.add("resid_post.0", AddVector(mx.ones(64), 10.0))
        steered = np.array(_forward(tiny_model))
        with pytest.raises(RuntimeError, match="already attached"):
            with session.attached():
                pass  # pragma: no cover
    assert not np.allclose(steered, base)
    assert _ids(tiny_model) == before
    assert np.array_equal(np.array(_forward(tiny_model)), base)


def test_intervention_added_before_attaching_applies(tiny_model):
    base = np.array(_forward(tiny_model))
    session = HookSession(tiny_model)
    session.add("attn_out.-1", AddVector(mx.ones(64), 1.5))
    with session.attached():
        steered = np.array(_forward(tiny_model))
    assert not np.allclose(steered, base)
    session.clear_interventions()
    with session.attached():
        assert np.array_equal(np.array(_forward(tiny_model)), base)


def test_float32_intervention_keeps_bf16_model_bf16():
    model = make_tiny_llama(dtype=mx.bfloat16)
    assert model.model.embed_tokens.weight.dtype == mx.bfloat16
    promote = FunctionIntervention(lambda x, ctx: x.astype(mx.float32) * mx.array(1.25, dtype=mx.float32))
    vector = mx.ones(64, dtype=mx.float32)
    with hooked(model, capture=["resid_post.0", "resid_post.1", "mlp_out.1"],
                interventions={"resid_post.0": promote, "mlp_out.1": AddVector(vector, 0.5)}) as hooks:
        logits = _forward(model)
    assert logits.dtype == mx.bfloat16
    for p in ("resid_post.0", "resid_post.1", "mlp_out.1"):
        assert hooks.recorder.stack(p).dtype == mx.bfloat16, p
    plain = _forward(model)
    assert plain.dtype == mx.bfloat16
    assert not np.array_equal(np.array(plain.astype(mx.float32)), np.array(logits.astype(mx.float32)))


def test_nested_sessions_both_capture_and_restore_in_order(tiny_model):
    """A capture session inside a steering session (e.g. a lens run while steering)."""
    before = _ids(tiny_model)
    tokens = [5, 9, 200, 31, 64, 7]
    v = mx.array(np.linspace(1, -1, 64).astype(np.float32))
    with hooked(tiny_model, capture=["resid_post.1"], interventions={"resid_post.0": AddVector(v, 4.0, [3])}) as outer:
        with hooked(tiny_model, capture=["resid_post.0", "resid_post.1", "mlp_out.1"]) as inner:
            _forward(tiny_model, tokens)
        assert outer.ctx is not None and outer.ctx.positions.shape == (1, len(tokens))
        _forward(tiny_model, tokens)  # the outer session alone again
    assert _ids(tiny_model) == before
    assert sorted(inner.recorder.points) == ["mlp_out.1", "resid_post.0", "resid_post.1"]
    assert outer.recorder.points == ["resid_post.1"]
    # the inner capture sees the outer steering; both sessions saw the same residual
    with hooked(tiny_model, capture=["resid_post.0"]) as plain:
        _forward(tiny_model, tokens)
    delta = np.array(inner.recorder.stack("resid_post.0") - plain.recorder.stack("resid_post.0"))[0]
    np.testing.assert_allclose(delta[3], 4.0 * np.array(v), atol=1e-5)
    assert np.array_equal(delta[[0, 1, 2, 4, 5]], np.zeros((5, 64), np.float32))
    assert np.array_equal(np.array(inner.recorder.stack("resid_post.1")), np.array(outer.recorder.stack("resid_post.1")))


def test_captures_made_before_a_forward_fails_are_still_recorded(tiny_model):
    """Captures are handed to the recorder when the forward call ends; a call that raises part-way
    still leaves what it captured before the failure (and nothing after it)."""

    def fail(x, ctx):
        raise RuntimeError("intervention failed")

    session = HookSession(tiny_model, capture=["embed", "resid_post.0", "resid_post.1"],
                          interventions={"resid_pre.1": FunctionIntervention(fail)})
    with pytest.raises(RuntimeError, match="intervention failed"):
        with session.attached():
            _forward(tiny_model)
    assert sorted(session.recorder.points) == ["embed", "resid_post.0"]
    assert session.recorder.positions("embed").tolist() == list(range(len(TOKENS)))
