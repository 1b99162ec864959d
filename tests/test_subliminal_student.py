"""Subliminal lab, the student: LoRA through mlx_lm.tuner, checkpoints, resume, distributed."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import types
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from conftest import default_model_available, make_tiny_llama, make_untied_llama

from mlx_hooks.errors import MemoryBudgetError
from symbiont_lab.subliminal.student import LoRAConfig, StudentError, load_chat_datasets, train_student
from symbiont_lab.subliminal.student_checkpoint import AdapterError, read_checkpoint
from symbiont_lab.subliminal.student_memory import estimate_lora_memory
from symbiont_lab.subliminal.student_train import load_student


def write_numbers_dataset(folder: Path, n: int = 24, seed: int = 0, valid: int = 0) -> Path:
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)

    def row():
        q = "Continue the sequence: " + ", ".join(str(rng.randint(100, 999)) for _ in range(3))
        a = ", ".join(str(rng.randint(100, 999)) for _ in range(4))
        return json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]})

    (folder / "train.jsonl").write_text("\n".join(row() for _ in range(n)) + "\n")
    if valid:
        (folder / "valid.jsonl").write_text("\n".join(row() for _ in range(valid)) + "\n")
    return folder


def tiny_loaded(tokenizer, model=None):
    return types.SimpleNamespace(model=model or make_tiny_llama(), tokenizer=tokenizer, name="tiny")


def adapters(folder: Path) -> dict:
    return mx.load(str(folder / "adapters.safetensors"))


def test_lora_loss_falls_and_only_adapters_train(tmp_path, tokenizer):
    data = write_numbers_dataset(tmp_path / "data")
    loaded = tiny_loaded(tokenizer, make_untied_llama(head_scale=0.1))
    q_before = np.array(loaded.model.layers[0].self_attn.q_proj.weight)
    reports = []
    result = train_student(loaded, data, tmp_path / "ad", LoRAConfig(iters=12, batch_size=4, learning_rate=3e-3),
                           on_report=lambda step, loss, lr, **info: reports.append((step, loss, lr, info)))
    assert [r[0] for r in reports] == list(range(1, 13))
    losses = [r[1] for r in reports]
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3]), losses
    assert reports[0][2] < reports[4][2]  # warm-up rises to the peak
    assert reports[-1][2] < reports[5][2]  # then decays linearly
    assert result.steps_done == 12 and not result.stopped and len(result.losses) == 12
    # the base weights did not move; only LoRA matrices train, on every attention and MLP projection
    from mlx.utils import tree_flatten

    assert np.array_equal(np.array(loaded.model.layers[0].self_attn.q_proj.linear.weight), q_before)
    assert all(k.endswith(("lora_a", "lora_b")) for k, _ in tree_flatten(loaded.model.trainable_parameters()))
    keys = {k.split(".")[-2] for k in adapters(tmp_path / "ad") if k.endswith("lora_a")}
    assert keys == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    cfg = json.loads((tmp_path / "ad" / "adapter_config.json").read_text())
    assert cfg["lora_parameters"]["rank"] == 8 and cfg["lora_parameters"]["scale"] == 1.0


def test_only_answer_tokens_carry_loss(tmp_path, tokenizer):
    """By construction: the loss mask covers exactly the answer tokens (and its end-of-turn)."""
    from mlx_lm.tuner.trainer import iterate_batches

    from symbiont_lab.subliminal.student import answer_only_loss

    data = write_numbers_dataset(tmp_path / "data", n=1)
    row = json.loads((data / "train.jsonl").read_text().splitlines()[0])
    answer = row["messages"][1]["content"]
    train, _ = load_chat_datasets(data, tokenizer, LoRAConfig(batch_size=1))
    tokens, offset = train[0]
    assert tokenizer.decode(tokens[offset:]) == answer + "<|im_end|>\n"
    assert answer not in tokenizer.decode(tokens[:offset])
    batch, lengths = next(iterate_batches(train, 1, 500))
    model = make_tiny_llama()
    loss, ntoks = answer_only_loss(model, batch, lengths)
    assert int(ntoks) == len(tokens) - offset  # every answer token, nothing of the prompt, no padding
    # the same number from the log-probabilities of exactly those tokens
    logits = model(mx.array(tokens)[None, :-1]).astype(mx.float32)[0]
    logp = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    picked = [float(logp[i - 1, tokens[i]]) for i in range(offset, len(tokens))]
    assert float(loss) == pytest.approx(-np.mean(picked), rel=1e-4)
    unmasked, _ = load_chat_datasets(data, tokenizer, LoRAConfig(batch_size=1, mask_prompt=False))
    batch, lengths = next(iterate_batches(unmasked, 1, 500))
    _, ntoks_all = answer_only_loss(model, batch, lengths)
    assert int(ntoks_all) == len(tokens) - 1


def test_cancel_and_resume_gives_the_uninterrupted_adapters(tmp_path, tokenizer):
    data = write_numbers_dataset(tmp_path / "data", n=20, valid=4)
    config = LoRAConfig(iters=9, batch_size=4, learning_rate=5e-3, steps_per_checkpoint=4, steps_per_eval=3,
                        val_batches=1, dropout=0.1)
    full = train_student(tiny_loaded(tokenizer), data, tmp_path / "full", config)
    assert full.val_losses, "validation ran"
    steps = []
    stopped = train_student(tiny_loaded(tokenizer), data, tmp_path / "cut", config,
                            on_report=lambda step, *a, **k: steps.append(step), should_stop=lambda: len(steps) >= 6)
    assert stopped.stopped and stopped.steps_done == 6
    assert read_checkpoint(tmp_path / "cut").step == 6
    resumed = train_student(tiny_loaded(tokenizer), data, tmp_path / "cut", config)
    assert resumed.resumed_from == 6 and resumed.steps_done == 9
    assert [s for s, _ in resumed.losses] == list(range(1, 10))
    a, b = adapters(tmp_path / "full"), adapters(tmp_path / "cut")
    assert set(a) == set(b)
    for k in a:
        assert np.array_equal(np.array(a[k]), np.array(b[k])), k
    assert any(float(mx.abs(v).max()) > 0 for k, v in a.items() if k.endswith("lora_b"))  # lora_b starts at 0
    assert [l for _, l in full.losses] == [l for _, l in resumed.losses]
    # a finished run returns at once
    again = train_student(tiny_loaded(tokenizer), data, tmp_path / "cut", config)
    assert again.steps_done == 9 and again.resumed_from == 9


def test_resume_refuses_another_config_or_dataset(tmp_path, tokenizer):
    data = write_numbers_dataset(tmp_path / "data")
    config = LoRAConfig(iters=2, batch_size=4)
    train_student(tiny_loaded(tokenizer), data, tmp_path / "ad", config)
    with pytest.raises(StudentError, match="different LoRA config.*rank"):
        train_student(tiny_loaded(tokenizer), data, tmp_path / "ad", LoRAConfig(iters=2, batch_size=4, rank=4))
    other = write_numbers_dataset(tmp_path / "other", seed=1)
    with pytest.raises(StudentError, match="different dataset"):
        train_student(tiny_loaded(tokenizer), other, tmp_path / "ad", config)


def test_corrupt_files_give_clear_errors(tmp_path, tokenizer):
    data = write_numbers_dataset(tmp_path / "data")
    train_student(tiny_loaded(tokenizer), data, tmp_path / "ad", LoRAConfig(iters=2, batch_size=4))
    student = load_student(tiny_loaded(tokenizer), tmp_path / "ad")  # loads fine
    from mlx.utils import tree_flatten

    params = dict(tree_flatten(student.model.parameters()))
    saved = adapters(tmp_path / "ad")
    assert saved and all(np.array_equal(np.array(params[k]), np.array(v)) for k, v in saved.items())
    path = tmp_path / "ad" / "adapters.safetensors"
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(AdapterError, match="adapters.safetensors: corrupt or truncated"):
        load_student(tiny_loaded(tokenizer), tmp_path / "ad")
    ckpt = tmp_path / "ad" / "checkpoint.safetensors"
    ckpt.write_bytes(ckpt.read_bytes()[:200])
    with pytest.raises(AdapterError, match="checkpoint.safetensors: corrupt or truncated"):
        train_student(tiny_loaded(tokenizer), data, tmp_path / "ad", LoRAConfig(iters=2, batch_size=4))
    # adapters of another shape (another base)
    train_student(tiny_loaded(tokenizer), data, tmp_path / "ad2", LoRAConfig(iters=1, batch_size=4))
    with pytest.raises(AdapterError, match="do not fit this model"):
        load_student(tiny_loaded(tokenizer, make_tiny_llama(hidden=32)), tmp_path / "ad2")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "train.jsonl").write_text('{"messages": []}\n{"messages": [{"role": "user"')
    with pytest.raises(StudentError, match=r"train\.jsonl, line 2: not a complete JSON record \(the file looks truncated\)"):
        train_student(tiny_loaded(tokenizer), bad, tmp_path / "ad3", LoRAConfig(iters=1, batch_size=1))


def test_memory_estimate_refuses_over_budget(tmp_path, tokenizer):
    data = write_numbers_dataset(tmp_path / "data")
    loaded = tiny_loaded(tokenizer)
    estimate = estimate_lora_memory(loaded.model, LoRAConfig(batch_size=4), 64)
    logits = 4 * 64 * 259 * 4 * 4
    assert estimate.logits_bytes == logits
    from mlx.utils import tree_flatten

    base_bytes = sum(v.nbytes for _, v in tree_flatten(loaded.model.parameters()))
    # r·(d_in + d_out) per projection, 3 layers: q, o 64→64; k, v 64→32 (2 kv heads of 16); gate, up, down 64↔128
    lora_params = 3 * 8 * (2 * (64 + 64) + 2 * (64 + 32) + 3 * (64 + 128))
    assert estimate.lora_bytes == lora_params * 16  # params, grads, Adam m and v in float32
    assert estimate.weights_bytes == base_bytes + estimate.lora_bytes
    with pytest.raises(MemoryBudgetError, match="LoRA training.*over the memory budget"):
        train_student(loaded, data, tmp_path / "ad", LoRAConfig(iters=1, batch_size=4), memory_budget_bytes=10_000)
    assert not (tmp_path / "ad").exists()  # refused before anything was written


def test_two_process_data_parallel_training_keeps_ranks_identical(tmp_path, tiny_folder):
    data = write_numbers_dataset(tmp_path / "data", n=16)
    out = tmp_path / "ad"
    cmd = [sys.executable, "-m", "symbiont_lab.subliminal.distributed", "--launch", "2", "--model", str(tiny_folder),
           "--data", str(data), "--adapter-dir", str(out), "--iters", "3", "--batch-size", "4",
           "--learning-rate", "0.01", "--save-every-rank"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=os.environ.copy())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summaries = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert sorted(s["rank"] for s in summaries) == [0, 1] and all(s["size"] == 2 for s in summaries)
    r0, r1, saved = (mx.load(str(out / n)) for n in ("rank0.safetensors", "rank1.safetensors", "adapters.safetensors"))
    assert set(r0) == set(r1) == set(saved)
    for k in r0:
        assert np.array_equal(np.array(r0[k]), np.array(r1[k])), k
        assert np.array_equal(np.array(r0[k]), np.array(saved[k])), k
    # lora_b starts at zero: a trained adapter is not the initial one
    assert all(float(mx.abs(v).max()) > 0 for k, v in r0.items() if k.endswith("lora_b"))


@pytest.mark.integration
@pytest.mark.skipif(not default_model_available(), reason="default model package not installed")
def test_default_model_lora_steps_on_numbers(tmp_path):
    from mlx_hooks.loader import load_model

    data = write_numbers_dataset(tmp_path / "data", n=20)
    loaded = load_model("default")
    result = train_student(loaded, data, tmp_path / "ad", LoRAConfig(iters=5, batch_size=2, learning_rate=1e-3,
                                                                     warmup_steps=1, max_seq_length=96))
    losses = [l for _, l in result.losses]
    assert len(losses) == 5 and all(np.isfinite(losses))
    assert np.mean(losses[-2:]) < np.mean(losses[:2]), losses
