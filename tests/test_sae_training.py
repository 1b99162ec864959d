"""SAE trainer, evaluation, activation buffer and corpus (synthetic data and tiny models)."""

from __future__ import annotations

import json

import mlx.core as mx
import numpy as np
import pytest

from conftest import make_byte_tokenizer, make_tiny_llama
from mlx_hooks.errors import SymbiontError
from mlx_hooks.hooks import hooked
from mlx_hooks.sae.activations import activations_at, extract_activations, token_windows
from mlx_hooks.sae.corpus import builtin_prompts, python_docs_texts, read_text_folder, split_held_out
from mlx_hooks.sae.evaluate import evaluate_sae
from mlx_hooks.sae.model import SAE, SAEConfig
from mlx_hooks.sae.train import TopKTrainer, TrainConfig


def _sparse_data(seed=0, d=32, m=64, n=30000, active=3):
    rng = np.random.default_rng(seed)
    dictionary = rng.normal(size=(m, d))
    dictionary /= np.linalg.norm(dictionary, axis=1, keepdims=True)
    codes = np.zeros((n, m))
    for row in codes:
        row[rng.choice(m, active, replace=False)] = rng.uniform(1, 3, active)
    return (codes @ dictionary).astype(np.float16), dictionary


SMALL = dict(d_sae=64, k=3, batch_size=256, lr=3e-3, aux_k=8, dead_after_tokens=5000, warmup_steps=50,
             checkpoint_every=100, report_every=100)


def test_trainer_recovers_the_true_dictionary(tmp_path):
    data, dictionary = _sparse_data()
    reports = []
    trainer = TopKTrainer(SAEConfig(d_in=32, d_sae=64, k=3), TrainConfig(steps=1000, **SMALL), data, tmp_path)
    sae = trainer.train(callback=reports.append)
    losses = [r.mse for r in reports]
    assert losses[-1] < 0.5 * losses[0]
    assert reports[-1].variance_explained > 0.9 and reports[-1].l0 == pytest.approx(3.0)
    learned = np.array(sae.W_dec)
    learned /= np.linalg.norm(learned, axis=1, keepdims=True)
    best = np.abs(learned @ dictionary.T).max(axis=0)  # each true atom's closest latent
    assert (best > 0.95).mean() > 0.9


def test_cancel_and_resume_reach_the_same_weights(tmp_path):
    data, _ = _sparse_data(n=8000)
    config = TrainConfig(steps=300, **SMALL)
    straight = TopKTrainer(SAEConfig(d_in=32, d_sae=64, k=3), config, data, tmp_path / "a").train()
    calls = {"n": 0}

    def stop_after_150():
        calls["n"] += 1
        return calls["n"] > 150

    first = TopKTrainer(SAEConfig(d_in=32, d_sae=64, k=3), config, data, tmp_path / "b")
    first.train(should_stop=stop_after_150)
    assert first.step == 150 and (tmp_path / "b" / "checkpoint" / "state.json").exists()
    resumed = TopKTrainer(SAEConfig(d_in=32, d_sae=64, k=3), config, data, tmp_path / "b")
    assert resumed.step == 150
    finished = resumed.train()
    np.testing.assert_allclose(np.array(finished.W_dec), np.array(straight.W_dec), atol=1e-5)


def test_resume_refuses_a_different_config(tmp_path):
    data, _ = _sparse_data(n=4000)
    TopKTrainer(SAEConfig(d_in=32, d_sae=64, k=3), TrainConfig(steps=100, **SMALL), data, tmp_path).train()
    with pytest.raises(ValueError, match="different training config"):
        TopKTrainer(SAEConfig(d_in=32, d_sae=64, k=3), TrainConfig(steps=200, **SMALL), data, tmp_path)


def test_activations_at_stops_early_and_matches_full_forward():
    model = make_tiny_llama()
    tokens = mx.array([[5, 6, 7, 8, 9]])
    early = activations_at(model, tokens, "resid_post.1")
    with hooked(model, capture=["resid_post.1"]) as session:
        model(tokens)
    np.testing.assert_allclose(np.array(early), np.array(session.recorder.stack("resid_post.1")), atol=1e-6)


def test_activation_buffer_resumes(tmp_path):
    model, tok = make_tiny_llama(), make_byte_tokenizer()
    windows = token_windows(tok, ["hello world, " * 40, "owls count numbers " * 30], 16)
    assert windows.shape[1] == 16 and len(windows) > 4
    calls = {"n": 0}

    def stop():
        calls["n"] += 1
        return calls["n"] > 1

    partial = extract_activations(model, windows, "resid_post.1", tmp_path, 64, batch_windows=2, should_stop=stop)
    assert 0 < partial.filled < partial.n_rows
    full = extract_activations(model, windows, "resid_post.1", tmp_path, 64, batch_windows=2)
    assert full.filled == full.n_rows == len(windows) * 15
    expected = np.array(activations_at(model, mx.array(windows[-1:]), "resid_post.1")[0, 1:])
    np.testing.assert_allclose(np.asarray(full.open("r")[-15:], dtype=np.float32), expected, rtol=1e-2, atol=1e-2)


def _identity_sae(d: int, hook_point: str) -> SAE:
    """relu(x) − relu(−x) = x: an SAE that reconstructs perfectly."""
    sae = SAE(SAEConfig(d_in=d, d_sae=2 * d, architecture="standard", hook_point=hook_point, apply_b_dec_to_input=False))
    eye = mx.eye(d)
    sae.W_enc = mx.concatenate([eye, -eye], axis=1)
    sae.W_dec = mx.concatenate([eye, -eye], axis=0)
    sae.b_enc, sae.b_dec = mx.zeros((2 * d,)), mx.zeros((d,))
    return sae


def _fitted_tiny_model(windows: np.ndarray):
    """A tiny llama fitted briefly to the text, so its layers matter for the loss."""
    import mlx.nn as nn
    import mlx.optimizers as optim

    model = make_tiny_llama(tie_word_embeddings=False)
    batch = mx.array(windows)

    def loss_fn(m):
        return nn.losses.cross_entropy(m(batch)[:, :-1], batch[:, 1:], reduction="mean")

    step = nn.value_and_grad(model, loss_fn)
    optimizer = optim.Adam(learning_rate=3e-3)
    for _ in range(60):
        loss, grads = step(model)
        optimizer.update(model, grads)
        mx.eval(model.parameters(), optimizer.state)
    return model


def test_evaluation_perfect_and_useless_saes():
    tok = make_byte_tokenizer()
    windows = token_windows(tok, ["the quick brown fox jumps over the lazy dog " * 10], 24)
    model = _fitted_tiny_model(windows)
    perfect = evaluate_sae(model, _identity_sae(64, "resid_post.1"), windows)
    assert perfect.variance_explained == pytest.approx(1.0, abs=1e-4)
    assert perfect.loss_recovered == pytest.approx(1.0, abs=1e-3)
    assert perfect.sae_loss == pytest.approx(perfect.clean_loss, rel=1e-4)
    useless = _identity_sae(64, "resid_post.1")
    useless.W_dec = mx.zeros_like(useless.W_dec)
    result = evaluate_sae(model, useless, windows)
    assert result.zero_ablation_loss > result.clean_loss + 0.01
    assert result.loss_recovered == pytest.approx(0.0, abs=1e-3)
    assert result.variance_explained < 0.01


def test_corpus_sources(tmp_path):
    assert len(builtin_prompts()) == 180 and len(set(builtin_prompts())) == 180
    docs = python_docs_texts()
    assert len(docs) > 50 and sum(map(len, docs)) > 300_000
    (tmp_path / "a.txt").write_text("first document")
    (tmp_path / "b.jsonl").write_text(json.dumps({"text": "second"}) + "\n" + json.dumps({"text": "third"}) + "\n")
    assert read_text_folder(tmp_path) == ["first document", "second", "third"]
    train, held = split_held_out([str(i) for i in range(50)], 0.1, seed=3)
    assert len(held) == 5 and not set(train) & set(held)
    assert split_held_out([str(i) for i in range(50)], 0.1, seed=3) == (train, held)


def test_corpus_errors_name_file_and_line(tmp_path):
    (tmp_path / "bad.jsonl").write_text(json.dumps({"text": "ok"}) + "\n" + '{"text": "trunc')
    with pytest.raises(SymbiontError, match=r"bad\.jsonl:2: not valid JSON"):
        read_text_folder(tmp_path)
    (tmp_path / "bad.jsonl").write_text(json.dumps({"body": "no text"}) + "\n")
    with pytest.raises(SymbiontError, match=r"bad\.jsonl:1: expected an object with a string 'text'"):
        read_text_folder(tmp_path)
    with pytest.raises(SymbiontError, match="not a folder"):
        read_text_folder(tmp_path / "missing")


def test_attention_sink_rows_are_left_out(tmp_path):
    data, _ = _sparse_data(n=4000)
    data = data.copy()
    data[::100] *= 400  # 1% of rows with outsized norms, like attention-sink positions
    trainer = TopKTrainer(SAEConfig(d_in=32, d_sae=64, k=3), TrainConfig(steps=10, **SMALL), data, tmp_path)
    assert trainer.outlier_fraction == pytest.approx(0.01)
    assert not np.isin(np.arange(0, 4000, 100), trainer.rows).any()
    threshold = trainer.sae.cfg.extra["sink_norm_threshold"]
    norms = np.linalg.norm(data.astype(np.float32), axis=-1)
    assert norms[::100].min() > threshold > np.median(norms)
