"""SAE training speed with the sparse and the dense decode, side by side.

    python benchmarks/sae_train_decode.py [--d-sae 4608 16384] [--k 32 64] [--batch 512 4096]
                                          [--d-in 576] [--steps 4] [--rounds 3]

For each shape (every combination of the lists), two TopKTrainers from the same seed on
the same random float16 activations, one per decode (``TrainConfig.decode``), take
``--steps`` optimizer steps each per round, rounds alternating which goes first so
machine noise hits both alike. Each step is the real one (``TopKTrainer.advance``:
batch read, loss, gradients, Adam, decoder renormalisation, evaluated). Prints tok/s of
each path (best and median over rounds), dense/sparse ratios, and the path ``auto``
picks for the shape on this backend. Nothing dies within a run this short, so the auxiliary loss
(the same dense product in both paths) is not in the timing.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from mlx_hooks.backend import reexec_with_fast_blas  # noqa: E402

reexec_with_fast_blas()

import mlx.core as mx  # noqa: E402
import numpy as np  # noqa: E402

from mlx_hooks.backend import backend_info  # noqa: E402
from mlx_hooks.sae.model import SAEConfig  # noqa: E402
from mlx_hooks.sae.train import TopKTrainer, TrainConfig, resolve_decode  # noqa: E402

PATHS = ("sparse", "dense")


def time_steps(trainer: TopKTrainer, steps: int) -> float:
    """Tokens per second over ``steps`` evaluated optimizer steps."""
    start = time.perf_counter()
    for _ in range(steps):
        trainer.advance()
    return steps * trainer.config.batch_size / (time.perf_counter() - start)


def bench_shape(d_in: int, d_sae: int, k: int, batch: int, steps: int, rounds: int) -> dict[str, list[float]]:
    rng = np.random.default_rng(0)
    rows = max(batch * (steps * rounds + steps + 2), 20_000)
    activations = rng.standard_normal((rows, d_in), dtype=np.float32).astype(np.float16)
    results: dict[str, list[float]] = {path: [] for path in PATHS}
    with tempfile.TemporaryDirectory() as folder:
        trainers = {
            path: TopKTrainer(
                SAEConfig(d_in=d_in, d_sae=d_sae, k=k),
                TrainConfig(d_sae=d_sae, k=k, batch_size=batch, steps=10**6, decode=path, aux_k=min(256, d_sae)),
                activations, os.path.join(folder, path),
            )
            for path in PATHS
        }
        for trainer in trainers.values():
            time_steps(trainer, 1)  # warm-up: first-call allocations
        for round_index in range(rounds):
            order = PATHS if round_index % 2 == 0 else PATHS[::-1]
            for path in order:
                results[path].append(time_steps(trainers[path], steps))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d-in", type=int, default=576, help="activation width (576: SmolLM2-135M)")
    parser.add_argument("--d-sae", type=int, nargs="+", default=[4608, 16384])
    parser.add_argument("--k", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--batch", type=int, nargs="+", default=[512, 4096])
    parser.add_argument("--steps", type=int, default=4, help="steps per path per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    info = backend_info()
    print(info.summary())
    print(f"MLX {mx.__version__}")
    header = (f"{'d_sae':>6} {'k':>4} {'batch':>6} | {'sparse best':>11} {'median':>8} | "
              f"{'dense best':>10} {'median':>8} | {'dense/sparse best':>17} {'median':>7} | auto")
    print(header)
    print("-" * len(header))
    for d_sae, k, batch in itertools.product(args.d_sae, args.k, args.batch):
        r = bench_shape(args.d_in, d_sae, k, batch, args.steps, args.rounds)
        best = {p: max(v) for p, v in r.items()}
        median = {p: statistics.median(v) for p, v in r.items()}
        print(f"{d_sae:>6} {k:>4} {batch:>6} | {best['sparse']:>11.0f} {median['sparse']:>8.0f} | "
              f"{best['dense']:>10.0f} {median['dense']:>8.0f} | "
              f"{best['dense'] / best['sparse']:>17.2f} {median['dense'] / median['sparse']:>7.2f} | "
              f"{resolve_decode('auto', d_sae, k, info.backend)}", flush=True)
    print("tok/s = training tokens per second (batch x steps / wall time); ratio > 1: dense is faster")
    return 0


if __name__ == "__main__":
    sys.exit(main())
