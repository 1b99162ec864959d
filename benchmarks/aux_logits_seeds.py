"""Aux-logit lab: seeds one at a time vs seeds stacked into one MLX model.

    python benchmarks/aux_logits_seeds.py [--seeds 5] [--epochs 2] [--m 3] [--rounds 2]

Runs :func:`symbiont_lab.aux_logits.experiments.run_unit` (teacher + three students, scikit-learn's
digits, batch 64) for the same seeds two ways, rounds interleaved so machine noise hits both
alike (best round per variant): ``alone`` (one unit per seed) and ``stacked`` (one unit for all
seeds). Prints seconds per seed and the ratio (no timed assertions); the last line reads
``alone/stacked = R``. Also checks the two give the same accuracies (to one test digit).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from mlx_hooks.backend import reexec_with_fast_blas  # noqa: E402

reexec_with_fast_blas()

from mlx_hooks.backend import backend_info  # noqa: E402
from symbiont_lab.aux_logits.data import load_digits_dataset  # noqa: E402
from symbiont_lab.aux_logits.experiments import AuxConfig, run_unit  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--m", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print(backend_info().summary())
    data = load_digits_dataset()
    config = AuxConfig(epochs=args.epochs)
    seeds = list(range(args.seeds))
    run_unit(config, args.m, [0], data)  # warm-up: compile
    best = {"alone": float("inf"), "stacked": float("inf")}
    results = {}
    for _ in range(args.rounds):
        start = time.perf_counter()
        alone = {}
        for s in seeds:
            alone.update(run_unit(config, args.m, [s], data)[0])
        best["alone"] = min(best["alone"], time.perf_counter() - start)
        start = time.perf_counter()
        stacked, _ = run_unit(config, args.m, seeds, data)
        best["stacked"] = min(best["stacked"], time.perf_counter() - start)
        results = {"alone": alone, "stacked": stacked}
    worst = max(abs(results["alone"][s]["accuracy"][r] - results["stacked"][s]["accuracy"][r])
                for s in seeds for r in results["alone"][s]["accuracy"])
    print(f"{args.seeds} seeds, m={args.m}, {args.epochs} epochs: largest accuracy difference alone vs stacked "
          f"{worst * 360:.0f} test digit(s) of 360")
    for name, seconds in best.items():
        print(f"{name:8s} {seconds:7.2f} s  ({seconds / args.seeds:.2f} s per seed)")
    print(f"alone/stacked = {best['alone'] / best['stacked']:.2f}")


if __name__ == "__main__":
    main()
