"""NMF of activations (symbiont_lab.superposition.nmf / nmf_run) and `symbiont nmf`: planted parts are
recovered, held-out texts stay whole, best matches are found, and a resumable run on a tiny model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from symbiont_lab.superposition import nmf as factor


def test_negative_activations_are_clipped_or_split():
    acts = np.array([[1.0, -2.0], [0.0, 3.0]])
    x, dropped = factor.nonnegative(acts, "clip")
    assert x.tolist() == [[1.0, 0.0], [0.0, 3.0]] and dropped == pytest.approx(4 / 14)
    x, dropped = factor.nonnegative(acts, "split")
    assert x.tolist() == [[1.0, 0.0, 0.0, 2.0], [0.0, 3.0, 0.0, 0.0]] and dropped == 0.0
    assert factor.directions(x[:, :], "split").tolist() == acts.tolist()
    with pytest.raises(ValueError, match="negative activations"):
        factor.nonnegative(acts, "abs")


def test_held_out_rows_take_whole_texts():
    text = np.repeat(np.arange(10), 5)
    test = factor.held_out_rows(text, 0.3, seed=0)
    assert test.sum() == 15 and all(len(set(test[text == t])) == 1 for t in range(10))


def test_planted_parts_are_recovered_and_matched():
    rng = np.random.default_rng(0)
    parts = rng.uniform(0, 1, (3, 40)) * (rng.uniform(0, 1, (3, 40)) < 0.3)  # three sparse non-negative parts
    usage = rng.exponential(1.0, (600, 3)) * (rng.uniform(0, 1, (600, 3)) < 0.5)
    x = usage @ parts
    test = np.zeros(600, dtype=bool)
    test[500:] = True
    model, scores = factor.nmf_and_pca(x[~test], x[test], 3, seed=0)
    assert scores["nmf"]["test_fvu"] < 1e-3 and scores["pca"]["test_fvu"] < 1e-3
    assert all(cos > 0.99 for _, cos in factor.best_cosines(model.components_, parts))
    assert sorted(i for i, _ in factor.best_cosines(model.components_, parts)) == [0, 1, 2]
    _, two = factor.nmf_and_pca(x[~test], x[test], 2, seed=0)
    assert two["nmf"]["test_fvu"] > 0.05  # fewer components than parts cannot reconstruct it
    latents = np.concatenate([rng.uniform(0, 1, (600, 5)), usage[:, [2]] * 2.0 + 0.01], axis=1)
    learned = model.transform(x)
    matches = factor.best_correlations(learned, latents)
    assert sum(latent == 5 and r > 0.99 for latent, r in matches) == 1  # one component is planted part 2


def test_nmf_cli_on_a_tiny_model(tiny_folder, tmp_path, capsys):
    from mlx_hooks.sae.model import SAE, SAEConfig
    from mlx_hooks.sae.saving import save_sae
    from symbiont_app.cli import main

    save_sae(SAE(SAEConfig(d_in=64, d_sae=96, k=8, hook_point="resid_post.1")), tmp_path / "sae")
    texts = tmp_path / "texts.txt"
    texts.write_text("".join(f"{'abc' * (i % 5 + 2)} {'xyz' * (i % 3 + 1)} {i}\n" for i in range(30)))
    out = tmp_path / "run"
    args = ["nmf", "--model", str(tiny_folder), "--texts", str(texts), "--point", "mlp_hidden.1", "--sweep", "2,4",
            "--components", "3", "--sae-steps", "20", "--sae", str(tmp_path / "sae"), "--examples", "2",
            "--out", str(out), "--quiet"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "held-out FVU at mlp_hidden.1" in printed and printed.count("\n") == 5  # header, columns, k = 2, 3, 4
    result = json.loads((out / "results" / "k003.json").read_text())
    assert set(result["fvu"]) == {"nmf", "pca", "sae"} and result["units"] == 128
    assert 0.0 < result["negative_share_dropped"] < 1.0  # SiLU-gated neurons do go negative
    comps = result["components"]
    assert comps["direction_match"].startswith("through layer 1's down_proj")
    assert len(comps["items"]) == 3 and all(len(c["examples"]) == 2 and "[[" in c["examples"][0]["context"]
                                            for c in comps["items"])
    assert all(-1.0 <= c["sae_by_direction"]["cos"] <= 1.0 and 0 <= c["sae_by_activity"]["latent"] < 96
               for c in comps["items"])
    assert sum(c["energy_share"] for c in comps["items"]) == pytest.approx(1.0)
    report = (out / "report.md").read_text()
    assert "## Reconstruction at the same number of components" in report and "### component" in report
    assert (out / "plots" / "fvu.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    stamp = (out / "results" / "k003.json").stat().st_mtime_ns
    assert main(args) == 0 and (out / "results" / "k003.json").stat().st_mtime_ns == stamp  # resumed: nothing redone
    assert main([*args, "--negatives", "split"]) == 1
    assert "config.json" in capsys.readouterr().err
    # the SAE's own latents as the matrix
    assert main([*args[:5], "--point", "sae", *args[7:-3], "--out", str(tmp_path / "latents"), "--quiet"]) == 0
    latents = json.loads((tmp_path / "latents" / "results" / "k003.json").read_text())
    assert latents["units"] == 96 and latents["components"]["direction_match"] == "H · W_dec"


def test_bad_inputs_are_refused_before_a_folder_is_made(tiny_folder, tmp_path, capsys):
    from symbiont_app.cli import main

    texts = tmp_path / "t.txt"
    texts.write_text("hello there\n")
    assert main(["nmf", "--model", str(tiny_folder), "--texts", str(texts), "--point", "mlp_hidden.9",
                 "--out", str(tmp_path / "a"), "--quiet"]) == 1
    assert "mlp_hidden.9" in capsys.readouterr().err and not (tmp_path / "a").exists()
    assert main(["nmf", "--model", str(tiny_folder), "--texts", str(texts), "--point", "sae",
                 "--out", str(tmp_path / "b"), "--quiet"]) == 1
    assert "needs an SAE" in capsys.readouterr().err and not (tmp_path / "b").exists()
