"""The superposition lab (symbiont_lab.superposition): toy models, geometry, XOR lesions,
interference, the resumable run folder and the CLI. Small toy models throughout (seconds each)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from symbiont_lab.superposition import geometry
from symbiont_lab.superposition.experiments import LabConfig, SuperpositionError
from symbiont_lab.superposition.interference import cosine_stats, dictionary_sweep, nearest_neighbour, random_directions
from symbiont_lab.superposition.toy import ToySpec, train_toy
from symbiont_lab.superposition.xor import inputs, lesion_table, logits_numpy, margins, run_xor, weight_names


# -- geometry on hand-made W ---------------------------------------------------------------------------
def _polygon(k: int) -> np.ndarray:
    angles = 2 * np.pi * np.arange(k) / k
    return np.stack([np.cos(angles), np.sin(angles)])  # [2, k]


def test_dimensionality_of_the_published_shapes():
    assert geometry.dimensionality(np.eye(3)) == pytest.approx([1, 1, 1])
    assert geometry.dimensionality(np.array([[1.0, -1.0]])) == pytest.approx([0.5, 0.5])  # antipodal pair
    assert geometry.dimensionality(_polygon(3)) == pytest.approx([2 / 3] * 3)  # triangle
    assert geometry.dimensionality(_polygon(5)) == pytest.approx([2 / 5] * 5)  # pentagon
    tetra = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], dtype=float).T
    assert geometry.dimensionality(tetra) == pytest.approx([3 / 4] * 4)
    w = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # a feature left out
    assert geometry.dimensionality(w) == pytest.approx([1, 1, 0])
    assert geometry.superposition(_polygon(5)) == pytest.approx([1.5] * 5)  # Σ_j≠i cos² over a pentagon
    assert geometry.features_per_dimension(_polygon(5)) == pytest.approx(2.5)
    assert geometry.nearest_fraction([0.51, 0.405, 0.9, 0.0]) == ["1/2", "2/5", None, None]
    assert 0.2 < geometry.chance_coverage() < 0.4


# -- trained toy models ---------------------------------------------------------------------------------
def test_dense_inputs_keep_exactly_the_m_most_important_features_and_sparse_ones_superpose():
    # lr 3e-3 for speed: 3,000 steps then drop feature 5 in every seed tried (at 1e-3 it takes ~6,000)
    spec = ToySpec(20, 5, (0.0, 0.7, 0.99), importance_decay=0.9, steps=3000, lr=3e-3)
    trained = train_toy(spec, seed=0)
    dense, middle, sparse = trained.W
    assert np.flatnonzero(geometry.represented(dense)).tolist() == [0, 1, 2, 3, 4]
    assert geometry.dense_orthogonality(dense, 5) < 0.05
    assert geometry.feature_norms(dense)[:5] == pytest.approx([1.0] * 5, abs=0.05)
    assert geometry.represented(sparse).sum() > 5  # more features than dimensions
    assert geometry.features_per_dimension(sparse) > 2 * geometry.features_per_dimension(dense)
    # at S = 0.7 the represented features sit near a published fraction: antipodal pairs, D ≈ 1/2
    # (the next fractions, 2/5 and 2/3, are 0.1 and 0.17 away)
    dims = geometry.dimensionality(middle)[geometry.represented(middle)]
    assert len(dims) >= 8 and abs(np.median(dims) - 0.5) < 0.02 and np.all(np.abs(dims - 0.5) < 0.07), dims
    assert trained.loss[0] > trained.loss[1] > trained.loss[2]


def test_five_features_in_two_dimensions_form_a_pentagon_when_sparse():
    trained = train_toy(ToySpec(5, 2, (0.0, 0.99), importance_decay=0.9, steps=3000, lr=3e-3), seed=0)
    assert geometry.represented(trained.W[0]).sum() == 2
    assert geometry.dimensionality(trained.W[1]) == pytest.approx([0.4] * 5, abs=geometry.FRACTION_TOLERANCE)


def test_padded_copies_train_as_if_alone():
    stacked = ToySpec(8, 2, (0.99, 0.99), importance_decay=1.0, features_per_copy=(4, 8), steps=200, batch=64)
    trained = train_toy(stacked, seed=1)
    # padding features get no gradient: their columns keep their initial (random) values, the biases stay 0
    from symbiont_lab.superposition.toy import initial_weights

    w0, _ = initial_weights(stacked, 1, "toy")
    assert np.array_equal(trained.W[0][:, 4:], w0[0][:, 4:]) and np.all(trained.b[0][4:] == 0)
    assert not np.allclose(trained.W[0][:, :4], w0[0][:, :4])
    with pytest.raises(ValueError, match="features_per_copy"):
        ToySpec(8, 2, (0.9,), features_per_copy=(9,)).real_features()
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        train_toy(ToySpec(4, 2, (1.0,), steps=1), seed=0)


# -- XOR lesions -----------------------------------------------------------------------------------------
def _hand_xor(scale: float = 4.0) -> np.ndarray:
    """h0 = OR, h1 = AND (tanh), y = h0 − h1 − 1/2: a 2-2-1 XOR net on binary inputs."""
    w1 = np.array([[1.0, 1.0], [1.0, 1.0]]) * scale  # [2 inputs, 2 hidden]
    b1 = np.array([-0.5, -1.5]) * scale
    w2 = np.array([1.0, -1.0]) * scale
    b2 = np.array([-0.5]) * scale
    return np.concatenate([w1.ravel(), b1, w2, b2]).astype(np.float32)


def test_lesions_of_a_hand_built_xor_network():
    theta = _hand_xor()
    base = margins(logits_numpy(theta, inputs("binary"), 2))
    assert np.all(base > 0)  # it computes XOR
    table = lesion_table(theta, "binary", 2)
    loss = np.asarray(table["lesions"]["delete"]["margin_loss"])  # [9 weights, 4 mappings]
    names = weight_names(2)
    # with 0/1 inputs, w1[x0→h0] is multiplied by 0 on 00 and 01: deleting it cannot touch them
    assert loss[names.index("w1[x0→h0]"), :2] == pytest.approx([0.0, 0.0], abs=1e-6)
    # the output bias helps one class and hurts the other: 00 and 11 lose margin, 01 and 10 gain
    b2 = loss[names.index("b2")]
    assert b2[0] > 0 and b2[3] > 0 and b2[1] < 0 and b2[2] < 0
    # margins are monotone in any one weight (tanh is), so halving does at most what deleting does
    halved = np.asarray(table["lesions"]["perturb"]["margin_loss"])
    assert np.all(np.abs(halved) <= np.abs(loss) + 1e-6)


def test_run_xor_trains_networks_that_learn_and_summarises_lesions():
    result = run_xor(seed=0, hidden_sizes=(8,), networks=8, steps=300)
    for variant in result["variants"]:
        assert variant["learned"] >= 6, variant["learned"]
        s = variant["summary"]["delete"]
        assert s["lesions"] == variant["learned"] * (4 * 8 + 1)
        assert 0.0 <= s["all_four_degrade"] <= 1.0 and 0.25 <= s["largest_share_mean"] <= 1.0


# -- interference ---------------------------------------------------------------------------------------
def test_cosine_statistics():
    rng = np.random.default_rng(0)
    d = 256
    stats = cosine_stats(random_directions(600, d, rng), rng)
    assert stats["pair_mean_abs"] == pytest.approx(np.sqrt(2 / (np.pi * d)), rel=0.05)
    nn_abs, nn_signed = nearest_neighbour(np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]]))
    assert nn_abs.tolist() == [1.0, 1.0, 0.0] and nn_signed.tolist() == [0.0, 0.0, 0.0]
    pairs = cosine_stats(np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]]), rng)
    assert pairs["nn_positive_mean"] == 0.0 and pairs["nn_abs_mean"] == 1.0
    assert sum(pairs["pair_hist"]) == pytest.approx(1.0) and pairs["pair_hist"][0] == pytest.approx(2 / 6)


def test_dictionary_sweep_nearest_neighbours_grow_with_size():
    rng = np.random.default_rng(1)
    decoder = rng.standard_normal((512, 32))
    rows = dictionary_sweep(decoder, (0.5, 2.0, 8.0), seed=0)
    assert [r["count"] for r in rows] == [16, 64, 256]
    nn = [r["dictionary"]["nn_abs_mean"] for r in rows]
    assert nn[0] < nn[1] < nn[2]
    # a random dictionary behaves like the random baseline
    assert rows[-1]["dictionary"]["pair_mean_abs"] == pytest.approx(rows[-1]["random"]["pair_mean_abs"], rel=0.1)


# -- run folder, report, CLI -----------------------------------------------------------------------------
TINY = dict(seeds=2, steps=200, batch=64, geometry_features=12, geometry_hidden=3, geometry_points=3,
            interference_hidden=3, xor_hidden=(2,), xor_networks=4)


def test_a_stopped_run_resumes_and_other_settings_are_refused(tmp_path):
    from symbiont_lab.progress import read_progress
    from symbiont_lab.superposition.report import write_report
    from symbiont_lab.superposition.runner import RunFolder, run_lab

    config = LabConfig(experiments=("phase", "xor"), **TINY)
    calls = []

    def stop_after_two():
        calls.append(1)
        return len(calls) > 2

    first = run_lab(config, tmp_path, should_stop=stop_after_two)
    assert first.computed == {"phase": [0, 1]}
    stamp = RunFolder(tmp_path).result_path("phase", 0).stat().st_mtime_ns
    second = run_lab(config, tmp_path)
    assert second.skipped == {"phase": [0, 1], "xor": []} and second.computed == {"xor": [0, 1]}
    assert RunFolder(tmp_path).result_path("phase", 0).stat().st_mtime_ns == stamp
    assert [r["interrupted"] for r in RunFolder(tmp_path).runs()] == [True, False]
    records, _ = read_progress(tmp_path)
    assert records[-1]["stage"] == "done" and any("loss" in r["metrics"] for r in records)
    with pytest.raises(SuperpositionError, match=r"config\.json.*steps: folder 200, now 300"):
        run_lab(LabConfig(experiments=("phase",), **{**TINY, "steps": 300}), tmp_path)
    RunFolder(tmp_path).result_path("xor", 1).write_text("{not json")
    with pytest.raises(SuperpositionError, match=r"xor/seed_001\.json: unreadable result file"):
        run_lab(config, tmp_path)
    RunFolder(tmp_path).result_path("xor", 1).unlink()
    run_lab(config, tmp_path)
    summary = write_report(tmp_path, RunFolder(tmp_path).results(config), config, plots=False)
    effects = [v["effect"] for v in summary["verdicts"]]
    assert any(e.startswith("dense inputs") for e in effects) and any("XOR" in e for e in effects)
    assert all(v["verdict"] in ("yes", "partly", "no") for v in summary["verdicts"])
    assert "\\|cos\\|" in (tmp_path / "report.md").read_text()  # pipes inside table cells are escaped


def test_unknown_experiment_and_bad_settings_are_refused():
    with pytest.raises(SuperpositionError, match="unknown experiment"):
        LabConfig(experiments=("phase", "nope"))
    with pytest.raises(SuperpositionError, match="steps ≥ 100"):
        LabConfig(steps=10)


def test_cli_runs_every_experiment_with_a_tiny_sae(tmp_path, capsys):
    from mlx_hooks.sae.model import SAE, SAEConfig
    from mlx_hooks.sae.saving import save_sae
    from symbiont_app.cli import main

    sae = SAE(SAEConfig(d_in=16, d_sae=64, k=4, hook_point="resid_post.1"))
    save_sae(sae, tmp_path / "sae")
    out = tmp_path / "run"
    args = ["lab", "superposition", "--seeds", "1", "--steps", "200", "--batch", "64", "--sae", str(tmp_path / "sae"),
            "--out", str(out), "--quiet"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "## Did the published findings reproduce?" in printed and "SAE decoder" in printed
    for name in ("phase_gram", "phase_norms", "dimensionality", "pictures", "xor_lesions", "interference"):
        assert (out / "plots" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sae"]["d_sae"] == 64 and summary["settings"]["steps"] == 200
    assert main(args) == 0 and "nothing left to compute" in capsys.readouterr().out


def test_a_second_run_on_the_same_folder_is_refused(tmp_path):
    from symbiont_lab.run_folder import owned
    from symbiont_lab.superposition.runner import run_lab

    with owned(tmp_path, SuperpositionError):  # as if another process were running there
        with pytest.raises(SuperpositionError, match="another run is using this folder"):
            run_lab(LabConfig(experiments=("xor",), **TINY), tmp_path)
    from mlx_hooks.errors import SAELoadError

    with pytest.raises(SAELoadError, match="missing-sae: no such file or folder"):
        run_lab(LabConfig(experiments=("interference_sae",), sae_path=str(tmp_path / "missing-sae"), **TINY),
                tmp_path / "other")
    assert not (tmp_path / "other").exists()  # refused before any folder was made


def test_the_lab_panel_runs_the_superposition_lab_probe_and_nmf(tmp_path):
    import sys

    from symbiont_app.session.lab import LabModel

    model = LabModel()
    for name, args in (("superposition", ["lab", "superposition"]), ("probe", ["probe"]), ("nmf", ["nmf"])):
        model.experiment, model.out, model.extra_args = name, str(tmp_path / name), "--quiet"
        command = model.command()
        assert command[:3] == [sys.executable, "-m", "symbiont_app.cli"]
        assert command[3:] == [*args, "--out", str(tmp_path / name), "--quiet"]
        model.started(command)
        assert model.run_experiment == name
        model.finished(0)


def test_geometry_verdict_rule():
    from symbiont_lab.superposition.report import _geometry, binomial_tail

    assert binomial_tail(3, 3, 0.5) == pytest.approx(0.125) and binomial_tail(0, 5, 0.3) == pytest.approx(1.0)

    def copy(dims):
        return {"dimensionality": dims, "norms": [1.0] * len(dims), "sparsity": 0.9}

    clustered = {0: {"sweeps": [[copy([0.5] * 20 + [2 / 3] * 10)]]}}
    assert _geometry(clustered)[1][0]["verdict"] == "yes"
    mostly_below = {0: {"sweeps": [[copy([0.5] * 20 + [0.1] * 30)]]}}
    assert _geometry(mostly_below)[1][0]["verdict"] == "partly"
    spread = {0: {"sweeps": [[copy(list(np.linspace(0.36, 0.99, 40)))]]}}
    assert _geometry(spread)[1][0]["verdict"] == "no"
