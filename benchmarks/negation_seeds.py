"""Seeds one at a time vs seeds batched into one vectorised model (the negation lab's TinyLSTM).

    python benchmarks/negation_seeds.py [--seeds 8] [--steps 150] [--rounds 3]

Trains the same seeds on the same concept-task batches (lengths 6–12, batch 32) three ways,
rounds interleaved so machine noise hits all alike (best round per variant):
  reference   one seed at a time: TinyLSTM with MLX's nn.LSTM, compiled Adam step
  one_fast    one seed at a time: the batched implementation with M = 1
  batched     all seeds as one model (SeedBatch, M = --seeds)
and prints ms per seed-step and the ratios (no timed assertions). The last line reads
`reference/batched = R`. It also prints how far the batched weights end up from the
reference's after the same steps (float32 rounding and the tanh approximation only).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from mlx_hooks.backend import reexec_with_fast_blas  # noqa: E402

reexec_with_fast_blas()

import mlx.core as mx  # noqa: E402
import numpy as np  # noqa: E402
from mlx.utils import tree_flatten  # noqa: E402

from mlx_hooks.backend import backend_info  # noqa: E402
from symbiont_lab.negation import tasks  # noqa: E402
from symbiont_lab.negation.models import ReferenceTrainer, SeedBatch, init_params  # noqa: E402


def batches(seeds: int, steps: int):
    schedule = tasks.length_schedule(steps, tasks.rng_for("bench", "lengths"))
    datas = [tasks.training_data("concept", schedule, 32, ("bench", s)) for s in range(seeds)]
    out = []
    for step in range(steps):
        xs, ys = zip(*(d.batch(step) for d in datas))
        table = np.array([tasks.COMPONENTS[c].label for c in datas[0].components], dtype=np.float32)
        out.append((mx.array(np.stack(xs).astype(np.int32)), mx.array(np.stack([table[k] for k in ys]))))
    mx.eval(out)
    return out


def run_reference(trees, data):
    trainers = [ReferenceTrainer(t) for t in trees]
    start = time.perf_counter()
    for k, trainer in enumerate(trainers):
        for x, y in data:
            trainer.step(x[k], y[k])
    return time.perf_counter() - start, trainers


def run_one_fast(trees, data):
    models = [SeedBatch.from_trees([t]) for t in trees]
    start = time.perf_counter()
    for k, model in enumerate(models):
        for x, y in data:
            model.step(x[k:k + 1], y[k:k + 1])
    return time.perf_counter() - start, models


def run_batched(trees, data):
    model = SeedBatch.from_trees(trees)
    start = time.perf_counter()
    for x, y in data:
        model.step(x, y)
    return time.perf_counter() - start, model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(backend_info().summary())
    trees = [init_params(tasks.seed_int("bench", s), tasks.VOCAB) for s in range(args.seeds)]
    data = batches(args.seeds, args.steps)
    one_per_length = {}
    for batch in data:
        one_per_length.setdefault(batch[0].shape[2], batch)
    warm = list(one_per_length.values())
    run_reference(trees[:1], warm), run_one_fast(trees[:1], warm), run_batched(trees, warm)  # compile every length
    times = {"reference": [], "one_fast": [], "batched": []}
    last = {}
    for _ in range(args.rounds):
        for name, fn in (("reference", run_reference), ("one_fast", run_one_fast), ("batched", run_batched)):
            seconds, last[name] = fn(trees, data)
            times[name].append(seconds)
    seed_steps = args.seeds * args.steps
    best = {name: min(v) for name, v in times.items()}
    for name, v in times.items():
        print(f"{name:10s} {1e3 * best[name] / seed_steps:7.3f} ms per seed-step "
              f"(rounds: {', '.join(f'{s:.2f}' for s in v)} s for {seed_steps} seed-steps)")
    diff = max(float(mx.abs(a - b).max())
               for k, trainer in enumerate(last["reference"])
               for (_, a), (_, b) in zip(tree_flatten(last["batched"].member_tree(k)), tree_flatten(trainer.params)))
    print(f"max |batched - reference| weight after {args.steps} steps: {diff:.2e}")
    print(f"one_fast/batched = {best['one_fast'] / best['batched']:.2f}")
    print(f"reference/one_fast = {best['reference'] / best['one_fast']:.2f}")
    print(f"reference/batched = {best['reference'] / best['batched']:.2f}")


if __name__ == "__main__":
    main()
