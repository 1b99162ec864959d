"""Symbiont's side of benchmarks/peers.py: one round of each workload, timed the same way
as the peers' side (benchmarks/peers_torch.py) times its libraries.

Each function returns a throughput (higher is better) and does its own warm-up outside
the timed span, so a round measures steady-state speed, as the peers' rounds do. Symbiont's
workloads run inside ``cpu_kernels()``, as every ``symbiont`` command and the app's engine
do (on the CPU backend: the matmul attention and the fast SiLU; nothing elsewhere).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import mlx.core as mx
import numpy as np

from mlx_hooks.cpu_kernels import cpu_kernels
from mlx_hooks.generate import hooked_stream_generate
from mlx_hooks.hooks import hooked


def forward_points(n_layers: int) -> list[str]:
    """The 60 points of workload 1: resid_pre and resid_post of every layer."""
    return [f"resid_{kind}.{i}" for i in range(n_layers) for kind in ("pre", "post")]


def captured_forward(model, ids: list[int], points: list[str], kernels: bool | None = None
                     ) -> tuple[mx.array, dict[str, mx.array]]:
    """Logits ``[1, L, V]`` and every point's activation ``[1, L, D]``, evaluated
    (``kernels``: ``cpu_kernels``'s choice, None = as the symbiont commands choose)."""
    with cpu_kernels(kernels), hooked(model, capture=points) as session:
        logits = model(mx.array([ids]))
        cache = {p: session.recorder.stack(p) for p in points}
        mx.eval(logits, cache)
    return logits, cache


def forward_tps(model, ids: list[int], points: list[str], repeats: int = 1, warm_up: bool = True,
                kernels: bool | None = None) -> float:
    """Tokens/s of a captured forward over ``ids`` (after one untimed call with ``warm_up``)."""
    if warm_up:
        captured_forward(model, ids, points, kernels)
    start = time.perf_counter()
    for _ in range(repeats):
        captured_forward(model, ids, points, kernels)
    return repeats * len(ids) / (time.perf_counter() - start)


def generate_tokens(model, tokenizer, prompt: list[int], max_tokens: int, points: list[str]) -> tuple[list[int], float]:
    """Greedy tokens with every point captured per token, and tokens/s over the whole call
    (prefill included, as the peers' ``generate`` calls are timed)."""
    start = time.perf_counter()
    tokens = []
    with cpu_kernels():
        for step in hooked_stream_generate(model, tokenizer, prompt, max_tokens=max_tokens, capture=points):
            if len(step.activations) != len(points):
                raise RuntimeError(f"step {step.index}: {len(step.activations)} of {len(points)} points captured")
            tokens.append(step.token)
    elapsed = time.perf_counter() - start
    return tokens, len(tokens) / elapsed


def sae_tokens_per_second(activations: np.ndarray, steps: int, warmup: int, batch_size: int = 512,
                          d_sae: int = 4608, k: int = 32) -> float:
    """Training tokens/s of Symbiont's TopKTrainer, over the steps after ``warmup``."""
    from mlx_hooks.sae.model import SAEConfig
    from mlx_hooks.sae.train import TopKTrainer, TrainConfig

    config = TrainConfig(d_sae=d_sae, k=k, steps=steps, batch_size=batch_size, warmup_steps=1,
                         checkpoint_every=10**9, report_every=1)
    stamps: list[float] = []
    with tempfile.TemporaryDirectory(prefix="peers-sae-") as run_dir:
        trainer = TopKTrainer(SAEConfig(d_in=activations.shape[1], d_sae=d_sae, k=k), config, activations, run_dir)
        trainer.train(callback=lambda report: stamps.append(time.perf_counter()))
    if len(stamps) <= warmup:
        raise RuntimeError(f"SAE training reported {len(stamps)} steps, fewer than the {warmup} warm-up steps")
    return (len(stamps) - 1 - warmup) * batch_size / (stamps[-1] - stamps[warmup])


def _steps_per_second(stamps: list[float], warmup: int) -> float:
    if len(stamps) <= warmup + 1:
        raise RuntimeError(f"LoRA training reported {len(stamps)} steps, too few past {warmup} warm-up steps")
    return (len(stamps) - 1 - warmup) / (stamps[-1] - stamps[warmup])


def symbiont_lora_steps_per_second(model_dir: Path, data_dir: Path, steps: int, warmup: int) -> float:
    """Steps/s of the subliminal lab's LoRA trainer (rank 8, 7 projections, batch 4)."""
    from symbiont_lab.subliminal.student import LoRAConfig
    from symbiont_lab.subliminal.student_train import train_student

    stamps: list[float] = []
    config = LoRAConfig(rank=8, alpha=8.0, batch_size=4, iters=steps, steps_per_checkpoint=10**9, max_seq_length=512)
    with tempfile.TemporaryDirectory(prefix="peers-lora-") as adapter_dir, cpu_kernels():
        train_student(str(model_dir), data_dir, adapter_dir, config,
                      on_report=lambda *args, **kwargs: stamps.append(time.perf_counter()))
    return _steps_per_second(stamps, warmup)


def mlx_lm_lora_steps_per_second(model_dir: Path, data_dir: Path, steps: int, warmup: int) -> float:
    """Steps/s of ``mlx_lm.lora``'s own training path (``train_model``: its LoRA layers, Adam and
    loop), configured as the lab's trainer is: rank 8, scale 1, every projection of all layers,
    batch 4, answer-only loss, no validation."""
    import contextlib
    import io
    import types

    from mlx_lm import lora
    from mlx_lm.tuner.callbacks import TrainingCallback
    from mlx_lm.tuner.datasets import load_dataset
    from mlx_lm.utils import load

    stamps: list[float] = []

    class Stamp(TrainingCallback):
        def on_train_loss_report(self, info):
            stamps.append(time.perf_counter())

    model, tokenizer = load(str(model_dir))
    with tempfile.TemporaryDirectory(prefix="peers-mlx-lora-") as adapter_dir:
        args = types.SimpleNamespace(**{
            **lora.CONFIG_DEFAULTS, "model": str(model_dir), "train": True, "data": str(data_dir),
            "num_layers": len(model.layers), "batch_size": 4, "iters": steps, "learning_rate": 2e-4,
            "steps_per_report": 1, "steps_per_eval": 10**9, "save_every": 10**9, "adapter_path": adapter_dir,
            "max_seq_length": 512, "mask_prompt": True, "lora_parameters": {"rank": 8, "dropout": 0.0, "scale": 1.0},
        })
        train_set, _valid_set, _ = load_dataset(args, tokenizer)
        with contextlib.redirect_stdout(io.StringIO()):
            # No validation set: the lab's trainer runs none either (steps_per_eval=0).
            lora.train_model(args, model, train_set, [], Stamp())
    return _steps_per_second(stamps, warmup)
