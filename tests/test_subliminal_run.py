"""The subliminal-learning run layer: config, the whole pipeline, resume, report, CLI.

The fast end-to-end test runs every stage on a tiny random llama whose output head is
biased towards digits, commas and spaces (a random model would write bytes the filter
rejects, leaving nothing to train on). The integration test runs the shipped
``ci_small.toml`` on the default model.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
import pytest

from conftest import default_model_available, make_byte_tokenizer, make_tiny_llama
from symbiont_lab.subliminal.config import ConfigError, example_configs, load_config, parse_config
from symbiont_lab.subliminal.run import RunCancelled, RunFolderError, run_subliminal
from symbiont_lab.subliminal.run_plan import make_plan


def save_number_model(folder: Path, seed: int = 0) -> Path:
    """A tiny llama that writes digits, ", " and end-of-text only: dimension 0 of every
    embedding is large, and the output head reads it with + for those tokens and − for the rest."""
    from mlx_lm.utils import save_config, save_model

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = make_byte_tokenizer()
    model = make_tiny_llama(seed=seed, tie_word_embeddings=False, max_position_embeddings=4096)
    allowed = sorted(set(tokenizer.encode("0123456789, ", add_special_tokens=False))) + list(tokenizer.eos_token_ids)
    embed = model.model.embed_tokens.weight
    embed[:, 0] = 6.0
    head = mx.random.normal(model.lm_head.weight.shape) * 0.7
    sign = mx.full((head.shape[0],), -3.0)
    sign[mx.array(allowed)] = 3.0
    head[:, 0] = sign
    model.model.embed_tokens.weight = embed
    model.lm_head.weight = head
    mx.eval(model.parameters())
    save_model(folder, model)
    save_config({k: v for k, v in vars(model.args).items() if v is not None}, folder / "config.json")
    tokenizer._tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def number_model(tmp_path_factory) -> Path:
    return save_number_model(tmp_path_factory.mktemp("number-llama"))


def tiny_config(model: Path, **override) -> dict:
    data = {
        "experiment": "subliminal", "name": "tiny", "seed": 3,
        "model": {"spec": str(model), "dtype": "float32"},
        "trait": {"kind": "system_prompt", "animal": "owl"},
        "numbers": {"prompt_count": 64, "dataset_size": 40, "batch_size": 8, "max_tokens": 12},
        "lora": {"iters": 6, "batch_size": 4, "learning_rate": 5e-3, "warmup_steps": 1, "steps_per_checkpoint": 4,
                 "rank": 4},
        "probes": {"max_questions": 4, "samples_per_question": 4, "batch_size": 16, "max_tokens": 4,
                   "animals": ["owl", "cat", "dog"]},
        "mechanism": {"max_prompts": 4},
        "variations": {"probes": ["logit"], "fraction": {"fractions": [1.0, 0.5]},
                       "noise": {"kinds": ["shuffle"]},
                       "blend": {"love_fractions": [1.0, 0.5], "question_sets": ["favourite", "feared"]}},
    }
    for key, value in override.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return data


def _lines(path: Path) -> int:
    return sum(1 for line in path.read_bytes().split(b"\n") if line.strip()) if path.exists() else 0


# -- configuration ---------------------------------------------------------------------------------
def test_config_errors_name_the_file_and_key(tmp_path):
    path = tmp_path / "bad.toml"
    cases = {
        'experiment = "subliminal"\n[trait]\nkind = "system_prompt"\n[numbers]\nprompt_cnt = 3\n':
            "[numbers] prompt_cnt: unknown key",
        '[trait]\nkind = "system_prompt"\n[numbers]\nprompt_count = "many"\n':
            "[numbers] prompt_count: expected a whole number",
        '[trait]\nkind = "system_prompt"\n[numbers]\nbatch_size = 0\n': "[numbers] batch_size: must be positive",
        '[trait]\nkind = "system_prompt"\n[variations.noise]\nkinds = ["blur"]\n': "[variations.noise] kinds",
        '[trait]\nkind = "system_prompt"\n[variations.fraction]\nfractions = [0.5, 1.5]\n':
            "[variations.fraction] fractions",
        '[trait]\nkind = "system_prompt"\n[lora]\nrank = 2.5\n': "[lora] rank: expected a whole number",
        '[numbers]\nprompt_count = 3\n': "no [trait] table",
        'experiment = "negation"\n[trait]\nkind = "system_prompt"\n': "experiment = 'negation'",
        '[trait]\nkind = "preset"\n': "[trait]",
        '[trait]\nkind = "none"\n': "control teacher",
        '[trait\nkind = 1': "not valid TOML",
    }
    for text, expected in cases.items():
        path.write_text(text)
        with pytest.raises(ConfigError) as info:
            load_config(path)
        assert str(path) in str(info.value) and expected in str(info.value), (text, str(info.value))
    with pytest.raises(ConfigError, match="no such configuration file"):
        load_config(tmp_path / "missing.toml")


def test_example_configs_load_and_plan():
    examples = example_configs()
    assert {"ci_small", "owl", "preset_trait", "blend"} <= set(examples)
    owl = load_config(examples["owl"])
    assert (owl.numbers.prompt_count, owl.numbers.dataset_size, owl.lora.rank, owl.lora.alpha) == (30000, 10000, 8, 8.0)
    plan = make_plan(owl)
    assert [s.name for s in plan.students if s.group == "fraction"] == [
        "fraction_100", "fraction_50", "fraction_25", "fraction_10", "fraction_1"]
    assert plan.student("fraction_100").alias_of == "trait"  # 100% is the trait student, not trained twice
    blend = make_plan(load_config(examples["blend"]))
    assert [t.name for t in blend.teachers] == ["trait", "control", "fear"]
    assert blend.teachers[2].spec.stance == "fear"
    jobs = [j.key for j in blend.probes["blend_love50"]]
    assert len(jobs) == len(set(jobs)) and {"logit:neutral", "logit:feared", "sampled:favourite"} <= set(jobs)
    preset = load_config(examples["preset_trait"])
    assert preset.trait.kind == "preset" and Path(preset.trait.preset_path).is_absolute()


# -- the pipeline ----------------------------------------------------------------------------------
def _check_run(out: Path, metrics: dict) -> None:
    # filter counts add up, for every teacher
    for name, teacher in metrics["teachers"].items():
        assert sum(teacher["counts"].values()) == teacher["total"], name
        assert teacher["counts"]["kept"] > 0, name
    # datasets: chat format, user + assistant only, answers without letters that pass the filter
    from symbiont_lab.subliminal.filter import rejection_reason

    for folder in (out / "datasets").iterdir():
        for line in (folder / "train.jsonl").read_text().splitlines():
            messages = json.loads(line)["messages"]
            assert [m["role"] for m in messages] == ["user", "assistant"]
            answer = messages[1]["content"]
            assert not any(ch.isalpha() for ch in answer), (folder.name, answer)
            assert rejection_reason(answer) is None, (folder.name, answer)
    # the LoRA loss falls
    losses = [loss for _, loss in metrics["students"]["trait"]["losses"]]
    assert len(losses) >= 4 and sum(losses[-2:]) / 2 < sum(losses[:2]) / 2, losses
    # probe probabilities: per question, the candidate animals' probabilities sum to at most 1
    for target, jobs in metrics["probes"].items():
        for key, result in jobs.items():
            table = result["per_question"]
            n_questions = len(next(iter(table.values())))
            for q in range(n_questions):
                total = sum(values[q] for values in table.values())
                assert -1e-6 <= total <= 1 + 1e-5, (target, key, q, total)
    assert metrics["stages"]["missing"] == []
    summary = (out / "summary.md").read_text()
    assert "**Verdict.**" in summary and "trait − control" in summary
    assert metrics["verdict"] and "p = " in metrics["verdict"]
    for name in ("probes", "loss", "mechanism"):
        assert (out / "plots" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    cos = metrics["mechanism"]["students"]["trait"]["cosine"]
    assert all(-1 - 1e-6 <= c <= 1 + 1e-6 for c in cos)


def test_pipeline_end_to_end_with_kill_and_resume(number_model, tmp_path):
    config = parse_config(tiny_config(number_model))
    out = tmp_path / "run"
    responses = out / "teachers" / "trait" / "responses.jsonl"
    # stop in the middle of the trait teacher's generation (in the second of its 2 chunks of 32 prompts)
    with pytest.raises(RunCancelled, match="resume"):
        run_subliminal(config, out, should_stop=lambda: _lines(responses) >= 20, plots=False)
    assert _lines(responses) == 32
    assert not (out / "stages" / "generate_trait.json").exists()
    # resume: completes everything; what was generated is kept
    metrics = run_subliminal(config, out)
    _check_run(out, metrics)
    runs = json.loads((out / "runs.json").read_text())
    assert [r["interrupted"] for r in runs] == [True, False]
    assert "prompts" not in runs[1]["computed"]  # finished stages were not redone

    # an uninterrupted run of the same config gives the same responses and byte-identical datasets
    ref = tmp_path / "ref"
    with pytest.raises(RunCancelled):
        run_subliminal(config, ref, should_stop=lambda: (ref / "stages" / "dataset_noise_shuffle.json").exists(),
                       report=False)
    from symbiont_lab.subliminal.run_stages import read_responses

    for teacher in ("trait", "control", "fear"):  # same texts (the file order is completion order)
        ref_texts = read_responses(ref / "teachers" / teacher / "responses.jsonl")
        assert len(ref_texts) == 64 and ref_texts == read_responses(out / "teachers" / teacher / "responses.jsonl")
    for name in ("trait", "control", "fraction_50", "noise_shuffle"):
        for split in ("train.jsonl", "valid.jsonl"):
            assert (ref / "datasets" / name / split).read_bytes() == (out / "datasets" / name / split).read_bytes()

    # a finished run re-run computes nothing; another configuration is refused
    again = run_subliminal(config, out, plots=False)
    assert json.loads((out / "runs.json").read_text())[-1]["computed"] == []
    assert again["verdict"] == metrics["verdict"]
    other = parse_config(tiny_config(number_model, numbers={"prompt_count": 50}))
    with pytest.raises(RunFolderError, match="prompt_count"):
        run_subliminal(other, out)

    # progress lines for the app's panel
    from symbiont_lab.progress import read_progress

    records, _ = read_progress(out)
    stages = {r["stage"] for r in records}
    assert {"start", "generate_trait", "train_trait", "done"} <= stages
    assert any("loss" in r["metrics"] for r in records if r["stage"] == "train_trait")

    # `symbiont lab report` rebuilds the summary from the stage files alone
    from symbiont_app.cli import main

    (out / "summary.md").unlink()
    (out / "metrics.json").unlink()
    assert main(["lab", "report", str(out), "--no-plots"]) == 0
    assert json.loads((out / "metrics.json").read_text())["verdict"] == metrics["verdict"]


def test_cli_help_and_errors(tmp_path, capsys):
    from symbiont_app.cli import main

    with pytest.raises(SystemExit) as info:
        main(["lab", "run", "--help"])
    assert info.value.code == 0
    assert "--out" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text('[trait]\nkind = "system_prompt"\n[numbers]\nprompt_cnt = 1\n')
    assert main(["lab", "run", str(bad)]) == 1
    assert "prompt_cnt" in capsys.readouterr().err
    assert main(["lab", "report", str(tmp_path)]) == 1
    assert "not a subliminal-lab run folder" in capsys.readouterr().err
    assert main(["lab", "run", "--list-configs"]) == 0
    assert "ci_small" in capsys.readouterr().out


@pytest.mark.integration
@pytest.mark.skipif(not default_model_available(), reason="default model not installed")
def test_small_run_on_the_default_model(tmp_path):
    """``ci_small.toml`` cut to test size on SmolLM2-135M: every stage, real properties, kill and resume.

    (The shipped ci_small itself — 200 prompts — is what `symbiont lab run` measures for the README.)"""
    import tomllib

    data = tomllib.loads(example_configs()["ci_small"].read_text())
    # Greedy teachers: at T=1 the 135M model's answers pass the filter ~4% of the time (8/200 for the
    # owl teacher in ci_small), greedy ~20-25% — enough rows from 24 prompts for a LoRA student.
    data["numbers"].update(prompt_count=24, dataset_size=30, batch_size=4, max_tokens=28, temperature=0.0)
    data["lora"].update(iters=6, batch_size=2, learning_rate=1e-3, warmup_steps=1, steps_per_checkpoint=3)
    data["probes"].update(max_questions=4, samples_per_question=4, batch_size=16)
    data["mechanism"] = {"max_prompts": 4}
    data["variations"] = {"probes": ["logit"], "noise": {"kinds": ["shuffle"]}}
    config = parse_config(data, example_configs()["ci_small"])
    out = tmp_path / "ci"
    responses = out / "teachers" / "trait" / "responses.jsonl"
    with pytest.raises(RunCancelled):  # killed inside the second chunk (16 + 8 prompts)
        run_subliminal(config, out, should_stop=lambda: _lines(responses) >= 1, plots=False)
    first = read_responses_file(responses)
    assert len(first) == 16
    metrics = run_subliminal(config, out)
    assert {i: t for i, t in read_responses_file(responses).items() if i in first} == first  # kept, not redone
    _check_run(out, metrics)
    # the default model's teachers write real numbers: the filter keeps some and rejects some
    trait = metrics["teachers"]["trait"]
    assert 0 < trait["counts"]["kept"] < trait["total"]
    # the logit probe on a real model: owl gets a small, positive probability, the animals' sum stays <= 1
    base = metrics["main_probes"]["logit:favourite"]["base"]
    assert 0 < base["mean"] < 1


def read_responses_file(path: Path) -> dict:
    from symbiont_lab.subliminal.run_stages import read_responses

    return read_responses(path)


def test_memory_estimate_without_loading(number_model, tmp_path, capsys):
    from symbiont_app.cli import main

    path = tmp_path / "tiny.toml"
    path.write_text(f'[model]\nspec = "{number_model}"\ndtype = "float32"\n[trait]\nkind = "system_prompt"\n'
                    '[lora]\nbatch_size = 4\n')
    assert main(["lab", "run", str(path), "--estimate"]) == 0
    out = capsys.readouterr().out
    assert "LoRA training" in out and "batch 4 ×" in out and "fits" in out
    assert not (tmp_path / "out").exists()
