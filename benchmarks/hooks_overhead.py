"""Decode speed of hooked generation against plain mlx-lm, in one process, interleaved.

    python benchmarks/hooks_overhead.py [--tokens 64] [--rounds 3]

Three variants on the embedded default model, greedy, same prompt, rounds interleaved
so machine noise hits all of them alike (median per variant):
  plain        mlx_lm.stream_generate
  hooked_none  hooked_stream_generate with nothing attached
  hooked_full  capturing resid_post of every layer, with entropy and top-5 per step
Then the memory-bandwidth bound: bytes of weights read per token / read bandwidth
measured with all cores. The last line reads `hooked_full/plain = R` (target >= 0.95).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from mlx_hooks.backend import reexec_with_fast_blas  # noqa: E402

reexec_with_fast_blas()

import mlx.core as mx  # noqa: E402
import numpy as np  # noqa: E402
from mlx.utils import tree_flatten  # noqa: E402
from mlx_lm.generate import stream_generate  # noqa: E402
from mlx_lm.sample_utils import make_sampler  # noqa: E402

from mlx_hooks.backend import backend_info  # noqa: E402
from mlx_hooks.generate import hooked_stream_generate  # noqa: E402
from mlx_hooks.loader import load_model  # noqa: E402

PROMPT = "Write a short story about an owl who learns to count."


def decode_tps(stream) -> float:
    """Tokens/s over the decode phase: from the first step to the last."""
    times = []
    for _ in stream:
        times.append(time.perf_counter())
    if len(times) < 3:
        raise RuntimeError("generation stopped too early to time")
    return (len(times) - 1) / (times[-1] - times[0])


def interleaved_rounds(variants: dict, rounds: int) -> dict[str, list[float]]:
    """Decode tok/s of every variant (name -> a function starting a fresh stream), one untimed
    warm-up of the first variant, then ``rounds`` rounds with the variants back to back, so
    machine noise hits all of them alike."""
    decode_tps(next(iter(variants.values()))())  # warm-up
    results: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, make in variants.items():
            results[name].append(decode_tps(make()))
    return results


def read_bandwidth(gib: float = 1.0, repeats: int = 5) -> float:
    """Bytes/s of memory reads with every core summing its own slice (numpy releases the GIL)."""
    workers = os.cpu_count() or 1
    data = np.ones(int(gib * 2**30) // 8, dtype=np.float64)
    slices = np.array_split(data, workers)
    best = 0.0
    with ThreadPoolExecutor(workers) as pool:
        for _ in range(repeats):
            start = time.perf_counter()
            list(pool.map(np.sum, slices))
            best = max(best, data.nbytes / (time.perf_counter() - start))
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dtype", default="auto")
    args = parser.parse_args()

    loaded = load_model("default", runtime_dtype=args.dtype)
    model, tok = loaded.model, loaded.tokenizer
    prompt = list(tok.apply_chat_template([{"role": "user", "content": PROMPT}], add_generation_prompt=True))
    points = [f"resid_post.{i}" for i in range(loaded.fingerprint.n_layers)]
    variants = {
        "plain": lambda: stream_generate(model, tok, mx.array(prompt), max_tokens=args.tokens, sampler=make_sampler(0.0)),
        "hooked_none": lambda: hooked_stream_generate(model, tok, prompt, max_tokens=args.tokens, top_k=0,
                                                      step_activations=False),
        "hooked_full": lambda: hooked_stream_generate(model, tok, prompt, max_tokens=args.tokens, capture=points,
                                                      top_k=5),
    }
    print(backend_info().summary())
    print(f"model: {loaded.name}, runtime dtype {loaded.runtime_dtype}, {args.tokens} tokens x {args.rounds} rounds")
    results = interleaved_rounds(variants, args.rounds)
    medians = {name: statistics.median(v) for name, v in results.items()}
    for name, value in medians.items():
        runs = ", ".join(f"{v:.1f}" for v in results[name])
        print(f"{name:12s} {value:7.2f} tok/s   (runs: {runs})")

    weight_bytes = sum(v.nbytes for _, v in tree_flatten(model.parameters()))
    bandwidth = read_bandwidth()
    bound = bandwidth / weight_bytes
    print(f"weights read per token: {weight_bytes / 2**20:.0f} MiB; read bandwidth (all {os.cpu_count()} cores): "
          f"{bandwidth / 2**30:.1f} GiB/s; bandwidth bound {bound:.1f} tok/s; "
          f"plain decode = {medians['plain'] / bound:.2f} x bound")
    print(f"hooked_none/plain = {medians['hooked_none'] / medians['plain']:.3f}")
    print(f"hooked_full/plain = {medians['hooked_full'] / medians['plain']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
