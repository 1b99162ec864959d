"""What capturing costs in one long forward, and what the CPU kernels give back: the peers
benchmark's 512-token forward on the default model, plain (no hooks, MLX's kernels) against
resid_pre + resid_post of every layer captured, with MLX's kernels and inside
``cpu_kernels()`` (as every symbiont command runs; on the CPU backend only).

    python benchmarks/forward_capture_cost.py [--rounds 5] [--tokens 512]

Rounds run the variants back to back, their order alternating; the last two lines read
`captured/plain = R` and `captured+kernels/plain = R` (medians of the per-round ratios).
The first near 1 says capturing is nearly free; the second is the kernels' gain.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, ".."))
from mlx_hooks.backend import reexec_with_fast_blas  # noqa: E402

reexec_with_fast_blas()

import mlx.core as mx  # noqa: E402

import peers_data  # noqa: E402
import peers_symbiont as sym  # noqa: E402
from mlx_hooks.backend import backend_info  # noqa: E402
from mlx_hooks.loader import load_model  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=512)
    args = parser.parse_args()
    print(backend_info().summary())
    loaded = load_model("default", runtime_dtype="float32")
    ids = peers_data.token_ids(loaded.tokenizer, args.tokens)
    points = sym.forward_points(loaded.fingerprint.n_layers)

    def plain() -> float:
        started = time.perf_counter()
        mx.eval(loaded.model(mx.array([ids])))
        return len(ids) / (time.perf_counter() - started)

    def captured() -> float:
        return sym.forward_tps(loaded.model, ids, points, warm_up=False, kernels=False)

    def captured_kernels() -> float:
        return sym.forward_tps(loaded.model, ids, points, warm_up=False, kernels=None)  # as symbiont runs

    variants = {"plain": plain, "captured": captured, "captured+kernels": captured_kernels}
    for run in variants.values():  # warm-up
        run()
    rounds = []  # {variant: tok/s} per round, the order alternating
    for i in range(args.rounds):
        order = list(variants.items()) if i % 2 == 0 else list(reversed(variants.items()))
        rounds.append({name: run() for name, run in order})
    medians = {name: statistics.median(r[name] for r in rounds) for name in variants}
    print(f"{len(points)} points, {len(ids)} tokens, {args.rounds} rounds: "
          + ", ".join(f"{name} {tps:.1f} tok/s" for name, tps in medians.items()))
    print(f"captured/plain = {statistics.median(r['captured'] / r['plain'] for r in rounds):.3f}")
    print(f"captured+kernels/plain = {statistics.median(r['captured+kernels'] / r['plain'] for r in rounds):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
