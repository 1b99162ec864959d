"""What capturing costs in one long forward: the peers benchmark's 512-token forward on the
default model, plain (no hooks) against resid_pre + resid_post of every layer captured.

    python benchmarks/forward_capture_cost.py [--rounds 5] [--tokens 512]

Rounds alternate the two; the last line reads `captured/plain = R` (median of the per-round
ratios). R near 1 says a captured forward is as fast as MLX's own forward, so a gap to the
torch peers at this workload is the backend's kernels, not the hooks.
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
        return sym.forward_tps(loaded.model, ids, points, warm_up=False)

    plain(), captured()  # warm-up
    rounds = []  # (plain, captured) tok/s, the order alternating
    for i in range(args.rounds):
        if i % 2:
            c = captured()
            rounds.append((plain(), c))
        else:
            p = plain()
            rounds.append((p, captured()))
    print(f"{len(points)} points, {len(ids)} tokens, {args.rounds} rounds: plain "
          f"{statistics.median(p for p, _ in rounds):.1f} tok/s, captured {statistics.median(c for _, c in rounds):.1f} tok/s")
    print(f"captured/plain = {statistics.median(c / p for p, c in rounds):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
