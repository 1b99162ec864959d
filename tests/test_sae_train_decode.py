"""The SAE trainer's two decodes (gathered decoder rows, dense masked product) train the same SAE."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from mlx_hooks.sae.model import SAEConfig
from mlx_hooks.sae.train import TopKTrainer, TrainConfig, resolve_decode
from test_sae_training import SMALL, _sparse_data

PARAMETERS = ("W_enc", "b_enc", "W_dec", "b_dec")


def _trainer(run_dir, data, decode, **overrides):
    config = TrainConfig(decode=decode, **{**SMALL, **overrides})
    return TopKTrainer(SAEConfig(d_in=32, d_sae=64, k=3), config, data, run_dir)


def _trainers(tmp_path, data, **overrides):
    return {decode: _trainer(tmp_path / decode, data, decode, **overrides) for decode in ("sparse", "dense")}


@pytest.mark.parametrize("with_dead", [False, True], ids=["no-dead", "aux-loss"])
def test_both_decodes_give_the_same_loss_and_gradients(tmp_path, with_dead):
    data, _ = _sparse_data(n=4000)
    trainers = _trainers(tmp_path, data, steps=10)
    assert trainers["sparse"].decode == "sparse" and trainers["dense"].decode == "dense"
    x = mx.array(data[:256].astype(np.float32) * trainers["sparse"].sae.cfg.input_scale)
    dead = mx.array(np.arange(64) % 3 == 0) if with_dead else None
    results = {}
    for decode, trainer in trainers.items():
        loss_and_grad = nn.value_and_grad(trainer.sae, trainer._loss)
        (loss, (mse, aux, index, values, error)), grads = loss_and_grad(trainer.sae, x, dead)
        results[decode] = (loss, mse, aux, index, dict(tree_flatten(grads)))
    sparse, dense = results["sparse"], results["dense"]
    np.testing.assert_array_equal(np.array(sparse[3]), np.array(dense[3]))  # the same k latents per token
    for a, b in zip(sparse[:3], dense[:3]):
        assert float(a) == pytest.approx(float(b), rel=1e-5, abs=1e-7)
    if with_dead:
        assert float(sparse[2]) > 0  # the auxiliary loss is part of the comparison
    for name in PARAMETERS:
        g_sparse, g_dense = np.array(sparse[4][name]), np.array(dense[4][name])
        assert np.abs(g_sparse).max() > 1e-4, name  # a real gradient, not two zeros
        np.testing.assert_allclose(g_dense, g_sparse, rtol=1e-4, atol=1e-6 * np.abs(g_sparse).max(), err_msg=name)
    # Decoder rows of latents no token selected get no reconstruction gradient on either path.
    unused = ~np.isin(np.arange(64), np.array(sparse[3]))
    if unused.any() and not with_dead:
        assert not np.array(dense[4]["W_dec"])[unused].any()


def test_a_short_run_reaches_the_same_weights_with_either_decode(tmp_path):
    data, _ = _sparse_data(n=8000)
    # dead_after_tokens low enough that the auxiliary loss runs during the run too.
    trainers = _trainers(tmp_path, data, steps=120, dead_after_tokens=2000)
    initial = {name: np.array(value) for name, value in trainers["sparse"].sae.parameters().items()}
    reports = {decode: [] for decode in trainers}
    saes = {decode: trainer.train(callback=reports[decode].append) for decode, trainer in trainers.items()}
    assert reports["sparse"][-1].aux_loss > 0  # dead latents appeared, so the auxiliary loss ran too
    for name in PARAMETERS:
        before = initial[name]
        sparse, dense = np.array(saes["sparse"].parameters()[name]), np.array(saes["dense"].parameters()[name])
        assert np.abs(sparse - before).max() > 1e-2, name  # training moved it
        np.testing.assert_allclose(dense, sparse, atol=1e-4, err_msg=name)
    for a, b in zip(reports["sparse"], reports["dense"]):
        assert a.mse == pytest.approx(b.mse, rel=1e-4) and a.l0 == b.l0 and a.dead_fraction == b.dead_fraction


def test_a_run_resumes_under_the_other_decode(tmp_path):
    data, _ = _sparse_data(n=8000)
    straight = _trainers(tmp_path / "straight", data, steps=100)["sparse"].train()
    calls = {"n": 0}

    def stop_after_50():
        calls["n"] += 1
        return calls["n"] > 50

    _trainer(tmp_path / "run", data, "sparse", steps=100).train(should_stop=stop_after_50)
    resumed = _trainer(tmp_path / "run", data, "dense", steps=100)
    assert resumed.step == 50 and resumed.decode == "dense"
    np.testing.assert_allclose(np.array(resumed.train().W_dec), np.array(straight.W_dec), atol=1e-4)


def test_auto_decode_by_backend_and_latents_per_active_latent():
    assert resolve_decode("auto", 4608, 32, "cpu") == "dense"  # d_sae / k = 144
    assert resolve_decode("auto", 16384, 64, "cpu") == "sparse"  # 256
    assert resolve_decode("auto", 4608, 32, "metal") == "dense"
    assert resolve_decode("auto", 16384, 32, "metal") == "sparse"
    assert resolve_decode("auto", 16384, 32, "cuda") == "sparse"
    assert resolve_decode("auto", 64, 64, "metal") == "dense"  # every latent active (the NMF lab's use)
    assert resolve_decode("sparse", 64, 64, "cpu") == "sparse" and resolve_decode("dense", 10**6, 1, "metal") == "dense"
    if mx.default_device().type == mx.cpu:
        assert resolve_decode("auto", 4608, 32) == "dense" and resolve_decode("auto", 16384, 32) == "sparse"
    with pytest.raises(ValueError, match="decode must be one of auto, sparse, dense"):
        TrainConfig(decode="gather")


def test_auto_decode_follows_the_device_mlx_computes_on(monkeypatch):
    # d_sae / k = 224: past the CPU backend's limit (192), within a GPU's (256).
    monkeypatch.setattr(mx, "default_device", lambda: mx.Device(mx.cpu, 0))
    assert resolve_decode("auto", 7168, 32) == "sparse"
    monkeypatch.setattr(mx, "default_device", lambda: mx.Device(mx.gpu, 0))
    monkeypatch.setattr(mx, "device_info", lambda *a, **k: {"device_name": "Apple M2 Max"})
    assert resolve_decode("auto", 7168, 32) == "dense"
