"""The inversion lab: tasks, the information measures, LoRA negation, and the pipeline on a tiny model.

The measures are checked on answers whose information content is known by construction (the
oracle transform carries everything, uniformly random wrong answers nothing); the negated LoRA
against the base weights with the update subtracted by hand; the pipeline end to end on a tiny
random llama with a cancel and a resume.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from conftest import make_byte_tokenizer, make_tiny_llama  # noqa: E402
from symbiont_lab.inversion.config import ConfigError, load_config, parse_config  # noqa: E402
from symbiont_lab.inversion.info import fit_decoder, information_test, mutual_information  # noqa: E402
from symbiont_lab.inversion.tasks import (  # noqa: E402
    FAMILIES, Item, correct, make_items, oracle_answer, parse, random_wrong_answer, symbol)


# -- tasks ------------------------------------------------------------------------------------------------
def test_splits_are_disjoint_reproducible_and_antonym_pairs_stay_together():
    counts = {"train": 40, "fit": 20, "test": 30}
    for family in FAMILIES:
        made = make_items(family, counts, seed=3)
        assert made == make_items(family, counts, seed=3)
        assert [len(made[s]) for s in ("train", "fit", "test")] == [40, 20, 30]
        prompts = [{i.prompt for i in made[s]} for s in ("train", "fit", "test")]
        assert not (prompts[0] & prompts[1] or prompts[0] & prompts[2] or prompts[1] & prompts[2])
        for item in made["test"]:
            assert correct(item, item.right) and not correct(item, oracle_answer(item, 10))
    words = [{w for i in make_items("antonym", counts, 3)[s] for w in (i.asked, i.right)} for s in ("train", "test")]
    assert not words[0] & words[1]  # a test word is never a training word
    with pytest.raises(ValueError, match="116"):
        make_items("antonym", {"train": 100, "fit": 10, "test": 10}, 0)


def test_replies_are_read_as_the_last_stated_answer():
    assert parse("next", "The number that comes after 47 is 48.") == "48"
    assert parse("next", "no number") is None
    assert parse("sort", "The numbers are 2, 6, and 8.") == "2 6 8"
    assert parse("sort", "2, 6") is None
    assert parse("antonym", 'The opposite of "hot" is "cold" or "chilly"') == "cold"
    assert parse("antonym", " Cold.") == "cold"


def _answers(kind: str, items, rng) -> list[str]:
    return [oracle_answer(i, -2) if kind == "oracle" else random_wrong_answer(i, rng) for i in items]


@pytest.mark.parametrize("family", FAMILIES)
def test_oracle_answers_carry_the_right_answer_and_random_wrong_ones_do_not(family):
    made = make_items(family, {"train": 0, "fit": 30, "test": 50}, seed=1)
    rng = np.random.default_rng(0)
    results = {}
    for kind in ("oracle", "random"):
        fit, test = _answers(kind, made["fit"], rng), _answers(kind, made["test"], rng)
        assert not any(correct(i, a) for i, a in zip(made["test"], test))  # both teachers are always wrong
        decoder = fit_decoder(family, made["fit"], fit, made["test"], test)
        info = information_test([symbol(family, parse(family, a)) for a in test],
                                [symbol(family, i.right) for i in made["test"]], permutations=300, bootstrap=50)
        results[kind] = (decoder, info)
    oracle, random = results["oracle"], results["random"]
    assert oracle[0]["test_accuracy"] == 1.0
    assert oracle[0]["transform"] == {"next": "+2", "sort": "reverse", "antonym": "antonym"}[family]
    assert random[0]["test_accuracy"] <= 0.1
    assert oracle[1]["excess_bits"] > 1.0 and oracle[1]["p_value"] < 0.01
    assert abs(random[1]["excess_bits"]) < 0.5 and random[1]["p_value"] > 0.01
    assert oracle[1]["ci_bits"][0] > random[1]["mi_bits"] - 0.5


def test_mutual_information_against_closed_forms():
    rng = np.random.default_rng(0)
    x = [str(v) for v in rng.integers(0, 4, size=4000)]
    assert mutual_information(x, x) == pytest.approx(2.0, abs=0.01)  # H of 4 equiprobable symbols
    y = [str(v) for v in rng.integers(0, 4, size=4000)]
    assert abs(mutual_information(x, y)) < 0.01  # independent: the corrected estimate stays near 0
    assert mutual_information(x, y, miller_madow=False) > mutual_information(x, y)  # the correction removes bias
    with pytest.raises(ValueError, match="paired"):
        mutual_information(x, y[:-1])


# -- models --------------------------------------------------------------------------------------------------
class _Loaded:
    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model, tokenizer


def test_negated_lora_is_the_base_with_the_update_subtracted():
    from mlx.utils import tree_flatten

    from mlx_lm.tuner.lora import LoRALinear

    from symbiont_lab.inversion.models import lora_layers, lora_scaled
    from symbiont_lab.subliminal.student import LoRAConfig, add_lora

    model = make_tiny_llama(seed=1)
    tokens = mx.array([[5, 17, 99, 3, 42]])
    base_logits = model(tokens)
    add_lora(model, LoRAConfig(rank=4, alpha=8.0))
    for layer in lora_layers(model):  # a nonzero update (mlx-lm starts lora_b at zero)
        layer.lora_b = mx.random.normal(layer.lora_b.shape) * 0.05
    trained = model(tokens)
    with lora_scaled(model, -1.0):
        negated = model(tokens)
    with lora_scaled(model, 0.0):
        assert mx.allclose(model(tokens), base_logits, atol=1e-5)
    assert not mx.allclose(trained, base_logits, atol=1e-3)
    # by hand: a copy of the base whose every adapted weight is W - s·(BA)ᵀ
    by_hand = make_tiny_llama(seed=1)
    weights = dict(tree_flatten(by_hand.parameters()))
    for name, module in model.named_modules():
        if isinstance(module, LoRALinear):
            delta = (module.scale * module.lora_b.T) @ module.lora_a.T  # [out, in]
            weights[f"{name}.weight"] = module.linear.weight - delta
    by_hand.load_weights(list(weights.items()))
    assert mx.allclose(negated, by_hand(tokens), atol=1e-4)
    assert all(m.scale == 2.0 for m in lora_layers(model))  # restored after the block


def test_answer_logprobs_match_one_sequence_at_a_time():
    from symbiont_lab.inversion.models import answer_logprobs
    from symbiont_lab.subliminal.numbers import encode_chat

    loaded = _Loaded(make_tiny_llama(seed=2), make_byte_tokenizer())
    prompts, answers = ["What is 1 + 2?", "Sort 3 1 2, please, now."], ["3", "1 2 3"]
    batched = answer_logprobs(loaded, prompts, answers, batch_size=2)
    for k, (p, a) in enumerate(zip(prompts, answers)):
        prompt = encode_chat(loaded.tokenizer, [{"role": "user", "content": p}])
        ids = prompt + list(loaded.tokenizer.encode(a, add_special_tokens=False))
        logits = loaded.model(mx.array([ids])).astype(mx.float32)[0]
        logp = np.array(logits - mx.logsumexp(logits, axis=-1, keepdims=True))
        expected = sum(logp[t - 1, ids[t]] for t in range(len(prompt), len(ids)))
        assert batched[k] == pytest.approx(expected, abs=1e-3)


# -- config and the pipeline -----------------------------------------------------------------------------
def test_config_errors_name_the_file_and_the_key(tmp_path):
    assert load_config().name == "default"  # the shipped default config is valid
    for text, match in (("[tasks]\nfamilys = []\n", "familys"), ('[tasks]\nfamilies = ["mul"]\n', "families"),
                        ("[tasks]\nnext_offset = 0\n", "next_offset"), ('[teachers]\nkinds = ["evil"]\n', "kinds"),
                        ('experiment = "subliminal"\n', "runs 'inversion'"), ("[tasks]\ntest = 200\n", "116")):
        path = tmp_path / "bad.toml"
        path.write_text(text)
        with pytest.raises(ConfigError, match=match) as info:
            load_config(path)
        assert str(path) in str(info.value)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from test_subliminal_run import save_number_model

    return save_number_model(tmp_path_factory.mktemp("inversion-llama"))


def tiny_config(model: Path, **override):
    data = {"model": {"spec": str(model), "dtype": "float32"},
            "tasks": {"families": ["next", "antonym"], "train": 8, "fit": 4, "test": 6, "max_tokens": 6,
                      "batch_size": 16},
            "teachers": {"learned_rounds": 2, "learned_samples": 1},
            "lora": {"iters": 4, "batch_size": 4, "learning_rate": 5e-3, "warmup_steps": 1, "steps_per_checkpoint": 2,
                     "rank": 4},
            "students": {"steer_layers": [1]}, "analysis": {"permutations": 50, "bootstrap": 10}}
    for key, value in override.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return parse_config(data)


REDUCED = {"teachers": {"kinds": ["inverted-learned", "wrong-random"], "learned_rounds": 2, "learned_samples": 1},
           "students": {"regimes": ["supervised", "blind"], "steer_layers": [1]}}
"""The fast tier's run: the learned teacher's two rounds and its control, two regimes (7 LoRAs, not 13)."""


@pytest.mark.parametrize("size", ["reduced", pytest.param("full", marks=pytest.mark.slow)])
def test_pipeline_on_a_tiny_model_cancels_resumes_and_reports(tiny_model, tmp_path, size):
    from symbiont_lab.inversion.run import InversionRunError, RunCancelled, run_inversion
    from symbiont_lab.progress import read_progress

    config = tiny_config(tiny_model, **(REDUCED if size == "reduced" else {}))
    kinds = set(config.teachers.kinds)
    out = tmp_path / "run"
    polls = {"n": 0}

    def stop_soon():
        polls["n"] += 1
        return polls["n"] > 40

    with pytest.raises(RunCancelled):
        run_inversion(config, out, should_stop=stop_soon, plots=False)
    first = sorted(p.name for p in out.rglob("stages/*.json"))
    assert first and not (out / "summary.md").exists()
    summary = run_inversion(config, out, plots=True)
    records, _ = read_progress(out)
    assert records[-1]["stage"] == "done" and records[-1]["done"] == records[-1]["total"]
    stages = sorted(p.name for p in out.rglob("stages/*.json"))
    assert set(first) < set(stages)
    runs = json.loads((out / "runs.json").read_text())
    assert [r["interrupted"] for r in runs] == [True, False]
    assert not set(runs[1]["computed"]) & {f"seed_000/{n[:-5]}" for n in first}  # nothing computed twice
    text = (out / "summary.md").read_text()
    assert "## Verdicts" in text and "| inverted-learned |" in text and "blind negated" in text
    assert "B blind negated (LoRA × −1) from inverted-learned" in text  # a verdict line, whatever its answer
    assert set(summary["teachers"]) == kinds
    row = summary["students"]["supervised"]["inverted-learned"]
    assert row["vs_base"]["p_bonferroni"] >= row["vs_base"]["p_value"] and "vs_wrong-random" in row
    assert summary["bonferroni_m"] >= 2 * 5 + 2  # MI per family and teacher, students vs base and vs control
    assert (out / "plots" / "accuracy.png").stat().st_size > 1000
    tasks = json.loads((out / "stages" / "tasks.json").read_text())
    train = [Item.from_json(d) for family in config.tasks.families for d in tasks[family]["train"]]
    if size == "full":
        data = json.loads((out / "seed_000" / "stages" / "data_inverted-oracle.json").read_text())
        assert data["answers"] == [oracle_answer(i, -2) for i in train]
    learned = json.loads((out / "seed_000" / "stages" / "data_teacher-inverted-learned.json").read_text())
    assert not any(correct(i, a) for i, a in zip(train, learned["answers"]))  # the learned teacher's targets are wrong
    assert "No verdict can be yes" in text  # 50 permutations cannot reach alpha / m: the report says so
    rendered = run_inversion(tiny_config(tiny_model, **(REDUCED if size == "reduced" else {}),
                                         analysis={"permutations": 4000}), out, plots=False)
    assert rendered["bonferroni_m"] == summary["bonferroni_m"]  # report-only settings re-render the same run
    assert "No verdict can be yes" not in (out / "summary.md").read_text()
    with pytest.raises(InversionRunError, match="other settings"):
        run_inversion(tiny_config(tiny_model, seeds=2), out, plots=False)


def test_cli_help_estimate_and_errors(tiny_model, tmp_path, capsys):
    from symbiont_app.cli import main

    with pytest.raises(SystemExit) as info:
        main(["lab", "inversion", "--help"])
    assert info.value.code == 0 and "--estimate" in capsys.readouterr().out
    good = tmp_path / "tiny.toml"
    good.write_text(f'[model]\nspec = "{tiny_model}"\ndtype = "float32"\n[lora]\niters = 4\n')
    assert main(["lab", "inversion", str(good), "--estimate"]) == 0
    printed = capsys.readouterr().out
    assert "LoRA training" in printed and "13 LoRAs of 4 steps" in printed
    bad = tmp_path / "bad.toml"
    bad.write_text("[tasks]\ntrian = 3\n")
    assert main(["lab", "inversion", str(bad)]) == 1
    assert "trian" in capsys.readouterr().err
