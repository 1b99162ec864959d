"""The CPU backend's fast exp / softmax / SiLU / attention agree with MLX's own kernels, in
values and gradients, on every architecture family; the swap is scoped and restored."""

from __future__ import annotations

import sys

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from mlx_hooks import cpu_kernels as ck
from tiny_models import ARCHITECTURES, VOCAB, make_model


def test_fast_exp_is_float32_accurate_over_the_range_softmax_and_silu_use():
    x = mx.array(np.linspace(-86.5, 88.0, 200_001, dtype=np.float32))
    got = np.array(ck.fast_exp(x), dtype=np.float64)
    want = np.exp(np.array(x, dtype=np.float64))
    assert np.max(np.abs(got - want) / want) < 2e-6
    assert np.all(np.isfinite(np.array(ck.fast_exp(mx.array([-1e4, 1e4, -mx.inf, mx.inf])))))


@pytest.mark.parametrize("shape", [(3, 7), (2, 4, 33, 129)])
def test_fast_softmax_matches_mlx_in_value_and_gradient(shape):
    x = mx.random.normal(shape, key=mx.random.key(0)) * 6
    x = mx.where(mx.random.uniform(shape=shape, key=mx.random.key(1)) < 0.2, -mx.inf, x)
    x[..., 0] = 0.0  # every row sees something
    assert mx.allclose(ck.fast_softmax(x), mx.softmax(x, axis=-1), atol=1e-6).item()
    weights = mx.random.normal(shape, key=mx.random.key(2))
    grad_fast = mx.grad(lambda a: (ck.fast_softmax(a) * weights).sum())(mx.where(mx.isinf(x), -30.0, x))
    grad_mlx = mx.grad(lambda a: (mx.softmax(a, axis=-1) * weights).sum())(mx.where(mx.isinf(x), -30.0, x))
    assert mx.allclose(grad_fast, grad_mlx, atol=1e-6).item()


def test_softmax_log2_gradient_carries_the_ln2_factor():
    z = mx.random.normal((4, 50), key=mx.random.key(3)) * 5
    w = mx.random.normal((4, 50), key=mx.random.key(4))
    got = mx.grad(lambda a: (ck.softmax_log2(a) * w).sum())(z)
    want = mx.grad(lambda a: (mx.softmax(a * np.log(2.0), axis=-1) * w).sum())(z)
    assert mx.allclose(got, want, atol=1e-6).item()


def test_fast_silu_matches_mlx_in_value_and_gradient():
    x = mx.concatenate([mx.random.normal((4096,), key=mx.random.key(5)) * 8, mx.array([-200.0, 0.0, 200.0])])
    assert mx.allclose(ck.fast_silu(x), nn.silu(x), atol=2e-6, rtol=2e-6).item()
    assert mx.allclose(mx.grad(lambda a: ck.fast_silu(a).sum())(x), mx.grad(lambda a: nn.silu(a).sum())(x),
                       atol=2e-6).item()
    half = x.astype(mx.bfloat16)
    assert ck.fast_silu(half).dtype == mx.bfloat16


def _qkv(n_q, n_kv, q_len, k_len, dh=16, seed=0):
    keys = [mx.random.key(seed + i) for i in range(3)]
    return (mx.random.normal((2, n_q, q_len, dh), key=keys[0]), mx.random.normal((2, n_kv, k_len, dh), key=keys[1]),
            mx.random.normal((2, n_kv, k_len, dh), key=keys[2]))


@pytest.mark.parametrize("n_q,n_kv,q_len,k_len", [(4, 4, 37, 37), (6, 2, 40, 40), (6, 3, 9, 30), (4, 1, 64, 64)])
@pytest.mark.parametrize("block_elements", [ck._BLOCK_ELEMENTS, 1])  # one block; many blocks of 16 rows
def test_matmul_attention_matches_fast_sdpa_for_every_mask_kind(n_q, n_kv, q_len, k_len, block_elements):
    q, k, v = _qkv(n_q, n_kv, q_len, k_len)
    scale = 16 ** -0.5
    rng = np.random.default_rng(0)
    boolean = mx.array(rng.random((2, 1, q_len, k_len)) < 0.7) | mx.eye(q_len, k_len, k=k_len - q_len).astype(mx.bool_)
    additive = mx.array(rng.normal(size=(1, n_q, q_len, k_len)).astype(np.float32))
    for mask in ("causal", None, boolean, additive):
        want = mx.fast.scaled_dot_product_attention(q, k, v, scale=scale, mask=mask)
        got = ck.matmul_attention(q, k, v, scale, mask, block_elements=block_elements)
        assert got.shape == want.shape and got.dtype == want.dtype
        assert mx.allclose(got, want, atol=2e-5).item(), mask if isinstance(mask, str) else type(mask)


def test_attention_gradients_match_mlx():
    q, k, v = _qkv(6, 2, 24, 24, seed=7)

    def loss(attention):
        return lambda a, b, c: (attention(a, b, c) ** 2).sum()

    mine = mx.grad(loss(lambda a, b, c: ck.matmul_attention(a, b, c, 0.25, "causal", block_elements=1)),
                   argnums=(0, 1, 2))(q, k, v)
    ref = mx.grad(loss(lambda a, b, c: mx.fast.scaled_dot_product_attention(a, b, c, scale=0.25, mask="causal")),
                  argnums=(0, 1, 2))(q, k, v)
    for got, want in zip(mine, ref):
        assert mx.allclose(got, want, atol=1e-4).item()


def test_unknown_string_mask_is_refused():
    q, k, v = _qkv(2, 2, 4, 4)
    with pytest.raises(ValueError, match="unknown attention mask"):
        ck.matmul_attention(q, k, v, 0.5, "sliding")


@pytest.mark.parametrize("model_type", ARCHITECTURES)
def test_models_agree_with_and_without_the_kernels_and_train_the_same(model_type, monkeypatch):
    monkeypatch.setattr(ck, "_SMALL", 0)  # the tiny models' MLPs would otherwise keep MLX's SiLU
    model = make_model(model_type)
    tokens = mx.array(np.random.default_rng(1).integers(1, VOCAB, size=(2, 40)).astype(np.int32))
    plain = model(tokens)

    def loss(m):
        return nn.losses.cross_entropy(m(tokens[:, :-1]), tokens[:, 1:]).mean()

    grads_plain = dict(tree_flatten(nn.value_and_grad(model, loss)(model)[1]))
    with ck.cpu_kernels(enabled=True) as on:
        assert on and ck.active()
        fast = model(tokens)
        grads_fast = dict(tree_flatten(nn.value_and_grad(model, loss)(model)[1]))
    assert not ck.active() and ck.swapped_names() == []
    scale = float(mx.abs(plain).max())
    assert float(mx.abs(fast - plain).max()) <= 2e-5 * max(1.0, scale)
    for name, g in grads_plain.items():
        assert mx.allclose(grads_fast[name], g, atol=1e-4, rtol=1e-3).item(), name


def test_the_swap_is_scoped_nests_and_restores_the_originals():
    import mlx_lm.models.base as base
    import mlx_lm.models.llama as llama

    original_sdpa, original_swiglu = llama.scaled_dot_product_attention, llama.swiglu
    with ck.cpu_kernels(enabled=False) as on:
        assert not on and llama.swiglu is original_swiglu
    with ck.cpu_kernels(enabled=True):
        assert llama.scaled_dot_product_attention.symbiont_original is original_sdpa
        assert llama.swiglu.symbiont_original is original_swiglu
        assert "mlx_lm.models.llama.swiglu" in ck.swapped_names()
        assert base.scaled_dot_product_attention is original_sdpa or "mlx_lm.models.base" in sys.modules
        with ck.cpu_kernels(enabled=True):
            pass
        assert llama.swiglu.symbiont_original is original_swiglu  # the inner block does not restore
    assert llama.scaled_dot_product_attention is original_sdpa and llama.swiglu is original_swiglu
    with pytest.raises(RuntimeError):
        with ck.cpu_kernels(enabled=True):
            raise RuntimeError("boom")
    assert llama.swiglu is original_swiglu


def test_a_module_imported_inside_the_block_is_swapped_by_refresh(monkeypatch):
    import importlib

    name = "mlx_lm.models.starcoder2"
    saved = sys.modules.pop(name, None)
    try:
        with ck.cpu_kernels(enabled=True):
            module = importlib.import_module(name)
            assert not hasattr(module.scaled_dot_product_attention, "symbiont_original")
            ck.refresh()
            assert hasattr(module.scaled_dot_product_attention, "symbiont_original")
        assert not hasattr(module.scaled_dot_product_attention, "symbiont_original")
    finally:
        if saved is not None:
            sys.modules[name] = saved


@pytest.mark.parametrize("value,expected", [("fast", True), ("mlx", False), ("auto", None), ("nonsense", None)])
def test_environment_variable_chooses(monkeypatch, value, expected):
    monkeypatch.setenv(ck.ENVIRONMENT_VARIABLE, value)
    auto = mx.default_device().type == mx.DeviceType.cpu
    if value == "nonsense":
        with pytest.warns(UserWarning, match="SYMBIONT_KERNELS"):
            assert ck.default_enabled() == auto
    else:
        assert ck.default_enabled() == (auto if expected is None else expected)


def test_small_mlp_inputs_keep_mlx_silu():
    calls = []
    swiglu = ck._make_swiglu(lambda gate, x: calls.append(gate.size) or gate * x)
    small, large = mx.ones((1, 1, 64)), mx.ones((2, 64, ck._SMALL // 64))
    swiglu(small, small)
    assert mx.allclose(swiglu(large, large), nn.silu(large) * large, atol=1e-6).item()
    assert calls == [64]


def test_decode_steps_keep_mlx_sdpa_and_quantized_caches_are_passed_through():
    calls = []

    def original(q, k, v, cache, scale, mask, sinks=None):
        calls.append(q.shape[2])
        return mx.zeros(q.shape)

    sdpa = ck._make_sdpa(original)
    q, k, v = _qkv(2, 2, 1, 5)
    sdpa(q, k, v, None, scale=0.5, mask=None)
    q, k, v = _qkv(2, 2, 5, 5)
    sdpa(q, k, v, None, scale=0.5, mask="causal")

    class Quantized:
        bits = 8

    sdpa(q, k, v, Quantized(), scale=0.5, mask="causal")
    assert calls == [1, 5]
