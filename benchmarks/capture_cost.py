"""What full capture costs per token, by how many points are captured, at a real shape.

    python benchmarks/capture_cost.py [--shape 1b] [--dtype auto] [--tokens 32] [--rounds 3]

Greedy decode of a random-weight model of a real shape (``benchmarks/scale.py``'s
shapes), rounds interleaved, median tok/s of: mlx-lm's own ``stream_generate``; hooked
generation with nothing captured; capturing every layer's ``resid_post``; ``resid_post``
+ ``attn_out`` + ``mlp_out``; every point. Then the extra milliseconds per token of each
against plain, and per captured point. On the CPU backend the capture hides inside a
long step; on a fast GPU it is a visible share of a ~3 ms step, and this tells whether
the cost follows the number of points (graph nodes and kernel launches per point) or is
a fixed per-token price.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from mlx_hooks.backend import reexec_with_fast_blas  # noqa: E402

reexec_with_fast_blas()

import mlx.core as mx  # noqa: E402
from mlx_lm.generate import stream_generate  # noqa: E402
from mlx_lm.sample_utils import make_sampler  # noqa: E402

from conftest import make_byte_tokenizer  # noqa: E402
from hooks_overhead import interleaved_rounds  # noqa: E402
from mlx_hooks import hook_points, hooked_stream_generate  # noqa: E402
from mlx_hooks.backend import backend_info  # noqa: E402
from scale import PROMPT, SHAPES, build, shape_config  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=list(SHAPES), default="1b")
    parser.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], default="auto")
    parser.add_argument("--layers", type=int, default=None)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(backend_info().summary())
    on_gpu = mx.default_device().type == mx.gpu
    dtype_name = args.dtype if args.dtype != "auto" else ("bfloat16" if on_gpu else "float32")
    tokenizer = make_byte_tokenizer()
    model = build(shape_config(args.shape, args.layers), None, getattr(mx, dtype_name))
    points = hook_points(model)
    kinds = lambda *names: [p for p in points if p.split(".")[0] in names]  # noqa: E731
    sets = {"nothing": [], "resid_post": kinds("resid_post"),
            "resid_post+attn_out+mlp_out": kinds("resid_post", "attn_out", "mlp_out"), "every point": points}
    variants = {"plain": lambda: stream_generate(model, tokenizer, mx.array(PROMPT), max_tokens=args.tokens,
                                                 sampler=make_sampler(0.0))}
    for name, capture in sets.items():
        variants[name] = (lambda capture=capture: hooked_stream_generate(model, tokenizer, PROMPT,
                                                                          max_tokens=args.tokens, capture=capture))
    results = interleaved_rounds(variants, args.rounds)
    medians = {name: statistics.median(v) for name, v in results.items()}
    plain_ms = 1000 / medians["plain"]
    print(f"{args.shape} shape, {dtype_name}, {args.tokens} tokens x {args.rounds} rounds; plain step {plain_ms:.2f} ms")
    for name, tps in medians.items():
        extra = 1000 / tps - plain_ms
        n = len(sets.get(name, []))
        per_point = f", {1000 * extra / n:.1f} us per point" if n else ""
        print(f"  {name:28s} {tps:8.2f} tok/s  ratio {tps / medians['plain']:.3f}  +{extra:.2f} ms/token "
              f"({n} points{per_point})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
