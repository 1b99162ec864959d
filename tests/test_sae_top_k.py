"""The two-pass top-k the SAE trainer uses on the CPU backend, and the trainer's loss written
against the plain TopK recipe it must equal."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from mlx_hooks.sae.model import SAEConfig
from mlx_hooks.sae.top_k import chunk_width, kth_largest, top_k_indices
from mlx_hooks.sae.train import TopKTrainer, TrainConfig
from test_sae_training import SMALL, _sparse_data


def _reference_sets(scores: np.ndarray, k: int) -> np.ndarray:
    return np.sort(np.argpartition(-scores, k - 1, axis=-1)[..., :k], axis=-1)


@pytest.mark.parametrize("shape, k", [
    ((16, 4608), 32),  # the trainer's rows: 4608 = 384 chunks of 12
    ((2, 3, 1000), 7),  # leading axes
    ((9, 997), 5),  # a prime width: the padded path
    ((4, 4608), 256),  # the auxiliary loss's k
    ((5, 64), 1),
    ((6, 40), 6),  # narrower than 8k: plain argpartition
])
def test_two_pass_finds_the_same_index_sets_as_argpartition(shape, k):
    scores = np.random.default_rng(k).standard_normal(shape).astype(np.float32)
    for two_pass in (True, False):
        got = np.array(top_k_indices(mx.array(scores), k, two_pass=two_pass))
        assert got.shape == (*shape[:-1], k)
        np.testing.assert_array_equal(np.sort(got, axis=-1), _reference_sets(scores, k))


def test_ties_at_the_kth_place_keep_the_top_values():
    scores = np.random.default_rng(1).integers(0, 6, size=(32, 4608)).astype(np.float32)  # many ties
    got = np.array(top_k_indices(mx.array(scores), 32, two_pass=True))
    assert all(len(set(row)) == 32 for row in got)  # k distinct indices
    np.testing.assert_array_equal(np.sort(np.take_along_axis(scores, got, -1), -1),
                                  np.sort(-np.partition(-scores, 31, axis=-1)[:, :32], -1))


def test_chunk_width_divides_the_row_where_it_can():
    assert chunk_width(4608, 32) == 12 and 4608 % chunk_width(4608, 256) == 0
    assert chunk_width(997, 5) == 14  # prime: no divisor near √(997/5), padded instead


def _recipe_loss(sae, x, k):
    """TopK SAE loss as the recipe writes it (and SAELens computes it): the encoder reads x - b_dec."""
    pre = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
    index = mx.stop_gradient(mx.argpartition(-pre, k - 1, axis=-1)[:, :k])
    mask = mx.put_along_axis(mx.zeros(pre.shape, dtype=mx.bool_), index, mx.array(True), axis=-1)
    recon = mx.where(mask, nn.relu(pre), 0.0) @ sae.W_dec + sae.b_dec
    return ((x - recon) ** 2).mean()


@pytest.mark.parametrize("decode", ["dense", "sparse"])
def test_trainer_loss_and_gradients_equal_the_recipe(tmp_path, decode):
    data, _ = _sparse_data(n=4000)
    trainer = TopKTrainer(SAEConfig(d_in=32, d_sae=64, k=3), TrainConfig(decode=decode, **{**SMALL, "steps": 10}),
                          data, tmp_path)
    trainer.train()  # move b_dec and the weights off their initial values
    x = mx.array(data[:256].astype(np.float32) * trainer.sae.cfg.input_scale)
    (loss, _), grads = nn.value_and_grad(trainer.sae, trainer._loss)(trainer.sae, x, None)
    ref_loss, ref_grads = nn.value_and_grad(trainer.sae, lambda sae: _recipe_loss(sae, x, 3))(trainer.sae)
    assert float(loss) == pytest.approx(float(ref_loss), rel=1e-5)
    grads, ref_grads = dict(tree_flatten(grads)), dict(tree_flatten(ref_grads))
    for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
        ref = np.array(ref_grads[name])
        assert np.abs(ref).max() > 1e-5, name
        np.testing.assert_allclose(np.array(grads[name]), ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max(), err_msg=name)


@pytest.mark.parametrize("rows", [1, 8, 64, 512])
def test_kth_largest_is_the_topk_threshold(rows):
    scores = np.random.default_rng(rows).standard_normal((rows, 4608)).astype(np.float32)
    scores[:, :40] = np.round(scores[:, :40])  # some ties
    got = np.array(kth_largest(mx.array(scores), 32))
    assert got.shape == (rows, 1)
    np.testing.assert_array_equal(got[:, 0], -np.partition(-scores, 31, axis=-1)[:, 31])


def test_topk_sae_keeps_k_latents_per_token_in_a_large_batch():
    from mlx_hooks.sae.model import SAE

    sae = SAE(SAEConfig(d_in=32, d_sae=512, k=8, architecture="topk"))
    sae.W_enc = mx.random.normal((32, 512), key=mx.random.key(0))
    latents = np.array(sae.encode(mx.random.normal((100, 32), key=mx.random.key(1))))  # 100 rows: the two-pass path
    positive = (latents > 0).sum(axis=-1)
    assert positive.max() <= 8 and positive.min() >= 1
