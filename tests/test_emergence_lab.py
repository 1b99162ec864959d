"""The emergence lab: a tiny grokking run (test accuracy rises after train accuracy), resume = uninterrupted,
interventions on the grokking network applied exactly, progress measures, the whole run folder on tiny
models (report, plots, resume, refused settings), the verdict rules, and the command line."""

from __future__ import annotations

import json
import sys
from dataclasses import replace

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from conftest import make_byte_tokenizer, make_tiny_llama
from mlx_hooks.intervention_states import SetCoordinates, SetProjections, state_table
from mlx_hooks.sae.model import SAE, SAEConfig
from symbiont_lab.emergence.analysis import arm_milestones, grokking_verdicts
from symbiont_lab.emergence.config import EmergenceConfig
from symbiont_lab.emergence.ei_grokking import GrokEIConfig, choices_under_states, fourier_directions
from symbiont_lab.emergence.ei_model import ModelEIConfig
from symbiont_lab.emergence.grokking import ArmConfig, EmergenceError, load_weights, make_split, train_arm
from symbiont_lab.emergence.model import ModelShape, ModularTransformer
from symbiont_lab.emergence.progress_measures import (
    embedding_power, fourier_sparsity, key_frequencies, restricted_and_excluded, sum_directions,
)

TINY_GROK = ArmConfig(name="grokking", p=23, train_fraction=0.5, d_model=32, d_mlp=128, lr=1e-2, steps=500,
                      eval_every=25, checkpoint_every=100, stop_accuracy=0.85, stop_patience=50, top_frequencies=3)


def test_tiny_grokking_run_generalises_well_after_it_memorises(tmp_path):
    state = train_arm(TINY_GROK, tmp_path / "arm")
    records = state.records
    m = arm_milestones(records)
    assert m["train_99"] is not None and m["train_99"] <= 100
    assert m["test_at_train_99"] < 0.4  # memorised, not generalised
    reached = next(r["step"] for r in records if r["test_accuracy"] >= 0.8)
    assert reached >= 3 * m["train_99"]  # test accuracy rises much later
    assert state.finished and "test accuracy" in state.stop_reason
    assert records[-1]["fourier_sparsity"] > records[0]["fourier_sparsity"] + 0.2  # a few frequencies take over
    final = load_weights(TINY_GROK, tmp_path / "arm" / "checkpoints" / f"step_{state.step:06d}.safetensors")
    split = make_split(TINY_GROK.p, TINY_GROK.train_fraction, TINY_GROK.seed)
    freqs = key_frequencies(final, split.tokens, 3)
    losses = restricted_and_excluded(final, split.tokens, split.labels, split.train, split.test, freqs)
    # once generalised, the key frequencies alone do the task and removing them hurts the training fit
    assert losses["restricted_loss"] < 1.0 < losses["excluded_loss"] and losses["train_loss"] < 0.1


def test_a_stopped_arm_resumes_to_the_same_weights(tmp_path):
    config = ArmConfig(name="grokking", p=11, d_model=16, n_heads=2, d_mlp=32, steps=60, eval_every=10,
                       checkpoint_every=20, stop_patience=0)
    calls = []
    stopped = train_arm(config, tmp_path / "a", should_stop=lambda: len(calls) > 45 or calls.append(1))
    assert not stopped.finished and stopped.step == 40
    resumed = train_arm(config, tmp_path / "a")
    whole = train_arm(config, tmp_path / "b")
    assert resumed.finished and resumed.step == whole.step == 60
    a = dict(tree_flatten(load_weights(config, tmp_path / "a" / "checkpoints" / "step_000060.safetensors").parameters()))
    b = dict(tree_flatten(load_weights(config, tmp_path / "b" / "checkpoints" / "step_000060.safetensors").parameters()))
    assert all(mx.array_equal(a[k], b[k]).item() for k in b)
    strip = [{k: v for k, v in r.items() if k != "time"} for r in resumed.records]
    assert strip == [{k: v for k, v in r.items() if k != "time"} for r in whole.records]
    assert [p.name for p in (tmp_path / "a").glob("resume_*")] == ["resume_000060.safetensors"]
    with pytest.raises(EmergenceError, match="state.json: made with other settings"):
        train_arm(replace(config, lr=0.5), tmp_path / "a")
    # a larger step budget continues an arm that stopped at its budget, to the same weights
    short = train_arm(replace(config, steps=40), tmp_path / "c")
    assert short.finished and short.stop_reason.startswith("step budget")
    longer = train_arm(config, tmp_path / "c")
    c = dict(tree_flatten(load_weights(config, tmp_path / "c" / "checkpoints" / "step_000060.safetensors").parameters()))
    assert longer.step == 60 and all(mx.array_equal(c[k], b[k]).item() for k in b)
    stopped = train_arm(config, tmp_path / "d", should_stop=lambda: len(calls) > 70 or calls.append(1))
    with pytest.raises(EmergenceError, match="at step 20, beyond the step budget 10"):
        train_arm(replace(config, steps=10), tmp_path / "d")


def test_states_are_applied_exactly_inside_the_grokking_network():
    model = ModularTransformer(ModelShape(p=11, d_model=16, n_heads=2, d_mlp=32), seed=1)
    tokens = np.array([[3, 4, 11], [7, 9, 11]], dtype=np.int32)
    scale = SetCoordinates("neurons", [2, 5], low=[0.0, 0.25], high=[1.5, 2.0])
    states = state_table(2)
    rows = np.repeat(tokens, 4, axis=0)
    row_states = np.tile(states, (2, 1))
    from mlx_hooks.interventions import ForwardContext

    ctx = ForwardContext.from_offset(0, 1)
    sites = model.sites(mx.array(rows), {"mlp_hidden": lambda x: scale.edit(x, row_states, ctx)})
    hidden = np.array(sites["mlp_hidden"])
    assert np.array_equal(hidden[:, [2, 5]], np.where(row_states.astype(bool), scale.high, scale.low))
    clean = np.array(model.sites(mx.array(rows))["mlp_hidden"])
    assert np.array_equal(np.delete(hidden, [2, 5], axis=1), np.delete(clean, [2, 5], axis=1))
    direction = np.random.default_rng(0).standard_normal((1, 16))
    proj = SetProjections("dir", direction, low=-2.0, high=3.0)
    resid = np.array(model.sites(mx.array(rows[:2]), {"resid_mid": lambda x: proj.edit(x, np.array([[0], [1]]), ctx)})
                     ["resid_mid"])
    assert np.allclose(resid @ direction[0], [-2.0, 3.0], atol=1e-4)
    choices = choices_under_states(model, tokens, "mlp_hidden", scale)
    assert choices.shape == (2, 4) and choices.max() < 11
    assert np.array_equal(choices, np.array(mx.argmax(model(mx.array(rows), {"mlp_hidden": lambda x: scale.edit(
        x, row_states, ctx)}), axis=-1)).reshape(2, 4))


def test_fourier_measures_find_a_planted_frequency():
    p = 13
    model = ModularTransformer(ModelShape(p=p, d_model=16, n_heads=2, d_mlp=32), seed=0)
    angle = 2 * np.pi * 3 * np.arange(p) / p
    planted = np.zeros((p + 1, 16), np.float32)
    planted[:p, 0], planted[:p, 1] = np.cos(angle), np.sin(angle)
    model.W_E = mx.array(planted)
    power = embedding_power(model)
    assert int(np.argmax(power)) + 1 == 3 and fourier_sparsity(model, 1) == pytest.approx(1.0)
    directions = sum_directions(p, [3])
    assert directions.shape == (2, p * p) and np.allclose(np.linalg.norm(directions, axis=1), 1)
    split = make_split(p, 0.5, 0)
    resid = np.array(model.sites(mx.array(split.tokens))["resid_mid"], dtype=np.float64)
    fourier = fourier_directions(resid, p, [3])
    assert fourier.shape == (2, 16) and np.allclose(np.linalg.norm(fourier, axis=1), 1)


def test_verdict_rules_on_constructed_curves():
    def records(train, test):
        return [{"step": 100 * k, "train_accuracy": a, "test_accuracy": b} for k, (a, b) in enumerate(zip(train, test))]

    grok = {"milestones": arm_milestones(records([0.1, 1, 1, 1, 1, 1, 1], [0.0, 0.05, 0.1, 0.1, 0.6, 1.0, 1.0]))}
    flat = {"milestones": arm_milestones(records([0.1] + [1] * 12, [0.0] + [0.1] * 12))}
    quick = {"milestones": arm_milestones(records([0.1, 1, 1], [0.0, 0.995, 1.0]))}
    progress = {"grokking": {"checkpoints": [{"step": s, "restricted_loss": r, "test_loss": t}
                                             for s, r, t in ((0, 4, 4), (200, 3, 9), (400, 0.5, 3), (500, 0.1, 0.5))]}}
    rows = {v["effect"]: v["verdict"] for v in grokking_verdicts(
        {"grokking": grok, "no_weight_decay": flat, "large_fraction": quick}, progress)}
    assert list(rows.values()) == ["yes", "yes", "yes", "yes"]
    rows = {v["effect"]: v["verdict"] for v in grokking_verdicts(
        {"grokking": quick, "no_weight_decay": grok, "large_fraction": grok}, None)}
    assert list(rows.values()) == ["partly", "partly", "no"]  # no gap; the control groks later; a longer delay
    rows = [v["verdict"] for v in grokking_verdicts({"grokking": flat, "no_weight_decay": flat, "large_fraction": quick},
                                                    None)]
    assert rows[0] == "no" and all(v.startswith("n/a") for v in rows[1:])  # nothing to compare the controls with


def _tiny_config(**changes) -> EmergenceConfig:
    settings = dict(p=11, train_fraction=0.5, large_fraction=0.8, steps=120, d_model=16, n_heads=2, d_mlp=32,
                    eval_every=20, checkpoint_every=40, stop_patience=40, top_frequencies=2,
                    grok_ei=GrokEIConfig(units=2, prompts=16), model_ei=ModelEIConfig(layer=1), n_boot=50)
    return EmergenceConfig(**{**settings, **changes})


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from symbiont_lab.emergence.runner import run_lab

    mx.random.seed(0)
    model, tokenizer = make_tiny_llama(), make_byte_tokenizer()
    sae = SAE(SAEConfig(d_in=64, d_sae=32, architecture="standard", hook_point="resid_post.1"))
    mx.eval(sae.parameters())
    out = tmp_path_factory.mktemp("emergence")
    summary = run_lab(_tiny_config(), out, language_model=(model, tokenizer, sae))
    return out, summary, (model, tokenizer, sae)


def test_the_run_folder_holds_every_stage_and_resumes_without_recomputing(tiny_run):
    from symbiont_lab.emergence.runner import RunFolder, run_lab

    out, summary, lm = tiny_run
    assert not summary.stopped and "model EI steering" in summary.computed
    folder = RunFolder(out)
    ei = folder.grok_ei("grokking")
    assert sorted(ei) == [0, 40, 80, 120] and np.array(ei[40]["scales"]["fourier"]["choices"]).shape == (16, 4)
    units, done = folder.model_ei()
    assert set(done) == {"neurons", "residual_dims", "sae_latents", "steering", "random_like_sae",
                         "random_like_steering"}
    assert np.array(done["neurons"]["choices"]).shape == (48, 8)
    steer = np.array(units["steering"]["vectors"])
    random = np.array(units["random_like_steering"]["vectors"])
    assert np.allclose(np.linalg.norm(random, axis=1), np.linalg.norm(steer, axis=1), rtol=1e-5)  # same norms
    progress = [json.loads(line) for line in (out / "progress.jsonl").read_text().splitlines()]
    train = [r for r in progress if r["stage"] == "train grokking"]
    assert train[1]["metrics"]["step"] == 20 and "accuracy: grokking test" in train[1]["metrics"]
    again = run_lab(_tiny_config(), out, language_model=lm)
    assert again.computed == [] and len(folder.runs()) == 1
    with pytest.raises(EmergenceError, match="config.json: this run folder was made with other settings.*p: folder 11, now 13"):
        run_lab(_tiny_config(p=13), out, language_model=lm)


def test_the_report_and_plots(tiny_run):
    from symbiont_lab.emergence.report import write_report

    out, _, _ = tiny_run
    summary = write_report(out, _tiny_config(), run_info={"machine": "test"}, plots=True)
    text = (out / "summary.md").read_text()
    for heading in ("## Grokking", "## Did the published grokking effects reproduce?",
                    "## Effective information across training: main arm", "## Effective information on default: layer 1",
                    "## How EI is measured", "## Plots"):
        assert heading in text
    assert len(summary["verdicts"]) == 4
    assert all(v["verdict"] in ("yes", "partly", "no") or v["verdict"].startswith("n/a") for v in summary["verdicts"])
    assert set(summary["model_ei"]["comparisons"]) == {"sae_latents − neurons", "sae_latents − residual_dims",
                                                       "sae_latents − random_like_sae", "steering − neurons",
                                                       "steering − residual_dims", "steering − random_like_steering"}
    json.loads((out / "summary.json").read_text(), parse_constant=lambda c: pytest.fail(f"non-strict JSON {c}"))
    assert sorted(p.name for p in (out / "plots").glob("*.png")) == sorted(
        ["accuracy.png", "loss.png", "weight_norm.png", "fourier_sparsity.png", "progress_measures.png",
         "ei_grokking.png", "ei_no_weight_decay.png", "ei_language_model.png"])


def test_command_line_help_and_bad_settings(capsys):
    from symbiont_app.cli import main

    with pytest.raises(SystemExit) as info:
        main(["lab", "emergence", "--help"])
    assert info.value.code == 0 and "--no-language-model" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["lab", "emergence", "--fraction", "1.5"])
    assert "must lie strictly between 0 and 1" in capsys.readouterr().err


@pytest.mark.slow
def test_command_line_run_writes_the_summary(tmp_path, capsys):
    from symbiont_app.cli import main

    out = tmp_path / "run"
    code = main(["lab", "emergence", "--p", "11", "--steps", "60", "--no-language-model", "--prompts", "16",
                 "--n-boot", "50", "--no-plots", "--quiet", "--out", str(out)])
    assert code == 0 and "## Did the published grokking effects reproduce?" in capsys.readouterr().out
    assert (out / "summary.md").is_file() and json.loads((out / "config.json").read_text())["lab"] == "emergence"
