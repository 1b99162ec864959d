"""Which run-time precision decodes the default model fastest on this backend.

    python benchmarks/default_dtype.py [--tokens 32] [--rounds 2]

Loads the embedded default model once per precision (stored 4-/8-bit GGUF weights,
float32, bfloat16, float16), then times greedy decode of each, rounds interleaved,
and prints tok/s with the ratio to float32. `--dtype auto` in the loader follows
this measurement: float32 on the CPU backend, stored (quantized) weights on a GPU.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from mlx_hooks.backend import reexec_with_fast_blas  # noqa: E402

reexec_with_fast_blas()

import mlx.core as mx  # noqa: E402
from mlx_lm.generate import stream_generate  # noqa: E402
from mlx_lm.sample_utils import make_sampler  # noqa: E402

from hooks_overhead import PROMPT, decode_tps  # noqa: E402
from mlx_hooks.backend import backend_info  # noqa: E402
from mlx_hooks.loader import load_model  # noqa: E402

DTYPES = ("stored", "float32", "bfloat16", "float16")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print(backend_info().summary())
    models = {d: load_model("default", runtime_dtype=d) for d in DTYPES}
    tok = models["float32"].tokenizer
    prompt = mx.array(tok.apply_chat_template([{"role": "user", "content": PROMPT}], add_generation_prompt=True))
    results = {d: [] for d in DTYPES}
    for _ in range(args.rounds):
        for dtype, loaded in models.items():
            stream = stream_generate(loaded.model, tok, prompt, max_tokens=args.tokens, sampler=make_sampler(0.0))
            results[dtype].append(decode_tps(stream))
    base = statistics.median(results["float32"])
    for dtype in DTYPES:
        value = statistics.median(results[dtype])
        label = "stored (Q4_1 + Q8_0 embedding)" if dtype == "stored" else dtype
        print(f"{label:32s} {value:7.2f} tok/s   {value / base:5.2f} x float32")
    return 0


if __name__ == "__main__":
    sys.exit(main())
