"""Feature records, automatic and user labels (mlx_hooks.sae.features), and `symbiont sae inspect`/`search --label`."""

from __future__ import annotations

import json

import mlx.core as mx
import numpy as np
import pytest
from conftest import make_tiny_llama

from mlx_hooks.hooks import hooked
from mlx_hooks.sae.features import (
    LABELS_FILE,
    RECORDS_FILE,
    ContextExample,
    FeatureRecord,
    TokenEffect,
    auto_label,
    build_feature_records,
    load_feature_records,
    load_labels,
    set_label,
)
from mlx_hooks.sae.formats import load_sae, save_sae
from mlx_hooks.sae.model import SAE, SAEConfig
from symbiont_app.cli import main

POINT = "resid_post.1"
TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello world, hello there!",
    "abc abc abc abc abc",
    "Sphinx of black quartz, judge my vow",
    "1 2 3 4 5 6 7 8 9 10",
]


def make_sae(seed: int = 0, d_sae: int = 40) -> SAE:
    mx.random.seed(seed)
    sae = SAE(SAEConfig(d_in=64, d_sae=d_sae, architecture="standard", hook_point=POINT, sae_id="tiny-standard"))
    sae.W_enc = mx.random.normal((64, d_sae)) * 0.3
    sae.W_dec = mx.random.normal((d_sae, 64)) * 0.3
    sae.b_enc = mx.full((d_sae,), -0.6)  # sparse: most latents off on most tokens
    mx.eval(sae.parameters())
    return sae


def direct_latents(model, tokenizer, sae):
    """Every kept token's latents, computed one text at a time: [N, d_sae], text index, position."""
    rows, where = [], []
    for t, text in enumerate(TEXTS):
        tokens = list(tokenizer.encode(text))
        with hooked(model, capture=[POINT]) as session:
            model(mx.array([tokens]))
            acts = session.recorder.stack(POINT)[0, 1:]  # the first position is skipped
        rows.append(np.array(sae.encode(acts)))
        where += [(t, p) for p in range(1, len(tokens))]
    return np.concatenate(rows), where


@pytest.fixture(scope="module")
def setup(tokenizer):
    model, sae = make_tiny_llama(), make_sae()
    records = build_feature_records(sae, model, tokenizer, TEXTS, n_contexts=3, window=2, n_tokens=4, max_seq_len=64)
    return model, sae, records


def test_statistics_match_a_direct_computation(setup, tokenizer):
    model, sae, records = setup
    latents, where = direct_latents(model, tokenizer, sae)
    assert records.n_tokens == latents.shape[0] and records.n_texts == len(TEXTS)
    frequency = (latents > 0).mean(axis=0)
    assert 0 < frequency.mean() < 0.5  # a sparse SAE, so the counts are meaningful
    np.testing.assert_allclose([r.frequency for r in records.records], frequency, rtol=1e-6)
    np.testing.assert_allclose([r.max_activation for r in records.records], latents.max(axis=0), rtol=1e-5)
    np.testing.assert_allclose(sae.max_activations, latents.max(axis=0), rtol=1e-5)
    for i, record in enumerate(records.records):
        column = latents[:, i]
        active = column[column > 0]
        assert record.mean_activation == pytest.approx(active.mean() if active.size else 0.0, rel=1e-5)


def test_top_contexts_are_the_argmax_positions(setup, tokenizer):
    model, sae, records = setup
    latents, where = direct_latents(model, tokenizer, sae)
    checked = 0
    for i, record in enumerate(records.records):
        column = latents[:, i]
        order = np.argsort(-column, kind="stable")
        strongest = [j for j in order[:3] if column[j] > 0]
        assert len(record.top_contexts) == len(strongest)
        for example, j in zip(record.top_contexts, strongest):
            assert example.value == pytest.approx(float(column[j]), rel=1e-5)
            assert (example.text_index, example.position) == where[j]
            tokens = list(tokenizer.encode(TEXTS[example.text_index]))
            assert example.tokens[example.focus] == tokenizer.decode([tokens[example.position]])
            assert "".join(example.tokens) == tokenizer.decode(tokens[max(0, example.position - 2): example.position + 3])
            checked += 1
    assert checked > 20


def test_promoted_tokens_are_the_unembedding_of_the_decoder_direction(setup):
    model, sae, records = setup
    logits = np.array(sae.W_dec) @ np.array(model.model.embed_tokens.weight).T  # tied embeddings, no final norm
    for i in (0, 7, 39):
        assert [t.token for t in records.records[i].promoted] == list(np.argsort(-logits[i])[:4])
        assert [t.token for t in records.records[i].suppressed] == list(np.argsort(logits[i])[:4])
        assert records.records[i].promoted[0].logit == pytest.approx(float(logits[i].max()), rel=1e-4)


def test_batching_under_a_tiny_memory_budget_gives_the_same_records(setup, tokenizer):
    model, sae, records = setup
    small = build_feature_records(make_sae(), model, tokenizer, TEXTS, n_contexts=3, window=2, n_tokens=4,
                                  max_seq_len=8, memory_budget_bytes=1)
    # Windows of 8 tokens change the contexts (each window restarts), so compare the invariants that don't depend on it:
    # the same number of kept tokens as windows of 8 leave, and self-consistent maxima.
    expected_tokens = sum(len(tokenizer.encode(t)) - -(-len(tokenizer.encode(t)) // 8) for t in TEXTS)
    assert small.n_tokens == expected_tokens
    assert all(r.top_contexts[0].value == pytest.approx(r.max_activation) for r in small.records if r.top_contexts)
    same = build_feature_records(make_sae(), model, tokenizer, TEXTS, n_contexts=3, window=2, n_tokens=4,
                                 max_seq_len=64, memory_budget_bytes=1)
    assert [r.auto_label for r in same.records] == [r.auto_label for r in records.records]
    np.testing.assert_allclose(same.max_activations, records.max_activations, rtol=1e-6)


def test_auto_label_from_contexts_and_promoted_tokens():
    def example(token, value):
        return ContextExample(value, 0, 1, ("a", token, "b"), 1)

    record = FeatureRecord(
        index=0, frequency=0.1, max_activation=3.0, mean_activation=1.0,
        top_contexts=[example(" Paris", 3.0), example(" London", 2.0), example(" Paris", 1.5), example("\n", 0.5)],
        promoted=[TokenEffect(1, " city", 2.0), TokenEffect(2, " capital", 1.0), TokenEffect(3, " town", 0.5)],
        suppressed=[], auto_label="",
    )
    assert auto_label(record) == "Paris/London → city/capital"
    dead = FeatureRecord(1, 0.0, 0.0, 0.0, [], [TokenEffect(1, "x", 1.0)], [], "")
    assert auto_label(dead) == "dead"


def test_user_labels_survive_regeneration_and_attach_on_load(tmp_path, tokenizer):
    model, sae = make_tiny_llama(), make_sae()
    folder = save_sae(sae, tmp_path / "sae")
    first = build_feature_records(sae, model, tokenizer, TEXTS[:3], n_contexts=2, window=1, n_tokens=3, folder=folder)
    set_label(folder, 5, "my own label")
    set_label(folder, 6, "another")
    set_label(folder, 6, None)  # removed again
    assert load_labels(folder) == {5: "my own label"}
    # Regenerate the automatic records on other text: the user's label stays, in labels.json only.
    second = build_feature_records(sae, model, tokenizer, TEXTS, n_contexts=2, window=1, n_tokens=3, folder=folder)
    assert second.n_tokens > first.n_tokens
    assert second.label(5) == "my own label" and second.label(6) == second.records[6].auto_label
    import gzip

    assert "my own label" not in gzip.open(folder / RECORDS_FILE, "rt").read()
    assert json.loads((folder / LABELS_FILE).read_text())["labels"] == {"5": "my own label"}
    loaded = load_sae(folder, model)
    assert loaded.labels[5] == "my own label" and loaded.labels[6] == second.records[6].auto_label
    np.testing.assert_allclose(loaded.max_activations, second.max_activations)
    again = load_feature_records(folder)
    assert again.records == second.records and again.user_labels == {5: "my own label"}
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # atomic writes leave no temp files


def test_records_of_other_weights_are_not_attached(tmp_path, tokenizer):
    model, sae = make_tiny_llama(), make_sae()
    folder = save_sae(sae, tmp_path / "sae")
    build_feature_records(sae, model, tokenizer, TEXTS[:2], n_contexts=2, window=1, n_tokens=2, folder=folder)
    retrained = make_sae(seed=1)
    save_sae(retrained, folder)
    with pytest.warns(UserWarning, match="describes other weights"):
        loaded = load_sae(folder)
    assert loaded.max_activations is None and loaded.labels is None


def test_cli_inspect_and_label_search(tmp_path, tokenizer, tiny_folder, capsys):
    model, sae = make_tiny_llama(), make_sae()
    folder = save_sae(sae, tmp_path / "sae")
    records = build_feature_records(sae, model, tokenizer, TEXTS, n_contexts=2, window=1, n_tokens=3, folder=folder)
    set_label(folder, 3, "golden gate bridge")
    assert main(["sae", "inspect", str(folder), "--latent", "3", "--model", str(tiny_folder)]) == 0
    out = capsys.readouterr().out
    assert "architecture  standard" in out and "hook point    resid_post.1" in out and "d_in=64, d_sae=40" in out
    assert "hook point and width check out" in out
    assert "latent 3: 'golden gate bridge' (user label)" in out
    first = records.records[3].top_contexts[0]
    assert f"{first.value:8.3f}  text {first.text_index} token {first.position}:" in out
    assert main(["sae", "search", str(folder), "--label", "gate"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[0] == "3" and lines[0].endswith("golden gate bridge")
    assert main(["sae", "inspect", str(folder), "--latent", "99"]) == 1
    assert "latent 99 is out of range (0..39)" in capsys.readouterr().err
