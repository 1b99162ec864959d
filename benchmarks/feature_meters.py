"""Decode speed with live SAE feature meters against plain hooked generation, one process.

    python benchmarks/feature_meters.py [--sae PATH] [--tokens 64] [--rounds 3]

Variants, greedy, same prompt, rounds interleaved (median per variant):
  hooked   hooked_stream_generate with nothing attached
  meters   the shipped SAE's FeatureMeter (top-8 latents + 2 watched per step, in-graph tap)
Last line: `meters/hooked = R` (target >= 0.95).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from mlx_hooks.backend import reexec_with_fast_blas  # noqa: E402

reexec_with_fast_blas()

from hooks_overhead import PROMPT, interleaved_rounds  # noqa: E402
from mlx_hooks.backend import backend_info  # noqa: E402
from mlx_hooks.generate import hooked_stream_generate  # noqa: E402
from mlx_hooks.loader import load_model  # noqa: E402
from mlx_hooks.sae.formats import load_sae  # noqa: E402
from mlx_hooks.sae.meters import FeatureMeter  # noqa: E402

DEFAULT_SAE = os.path.join(os.path.dirname(__file__), "..", "sae_weights", "smollm2-135m-instruct", "resid_post.15-topk32-4608")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sae", default=DEFAULT_SAE)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    loaded = load_model("default")
    sae = load_sae(args.sae, loaded)
    model, tok = loaded.model, loaded.tokenizer
    prompt = list(tok.apply_chat_template([{"role": "user", "content": PROMPT}], add_generation_prompt=True))
    meter = FeatureMeter(sae, top_n=8, watch=[0, 1])
    readings = []

    def with_meters():
        for step in hooked_stream_generate(model, tok, prompt, max_tokens=args.tokens, readers={"sae": meter},
                                           **meter.generate_kwargs()):
            readings.append(step.readings["sae"])
            yield step

    variants = {
        "hooked": lambda: hooked_stream_generate(model, tok, prompt, max_tokens=args.tokens),
        "meters": with_meters,
    }
    print(backend_info().summary())
    print(f"model {loaded.name} ({loaded.runtime_dtype}); SAE {sae.cfg.sae_id} ({sae.cfg.d_sae} latents at {sae.cfg.hook_point})")
    results = interleaved_rounds(variants, args.rounds)
    if not readings or not readings[-1].top:
        raise SystemExit("the meters produced no readings")
    medians = {name: statistics.median(v) for name, v in results.items()}
    for name, value in medians.items():
        print(f"{name:8s} {value:7.2f} tok/s   (runs: {', '.join(f'{v:.1f}' for v in results[name])})")
    top = readings[-1].top[0]
    print(f"last step's strongest latent: {top.index} = {top.value:.2f} ({top.label!r}); L0 {readings[-1].l0}")
    print(f"meters/hooked = {medians['meters'] / medians['hooked']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
