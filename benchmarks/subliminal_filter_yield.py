"""How many teacher responses pass the published filter on a model, per teacher and reason.

    python benchmarks/subliminal_filter_yield.py [--prompts 96] [--max-tokens 48] [--animal owl] [--model default]

Generates the lab's number prompts with the love-of-{animal} teacher (system prompt) and
the control teacher (none), temperature 1.0, batch 32, and prints the filter's counts per
reason, the kept fraction and a few kept responses for each. Published models lose
23–38% of their responses to the filter.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from mlx_hooks.backend import reexec_with_fast_blas  # noqa: E402

reexec_with_fast_blas()

from mlx_hooks.loader import load_model  # noqa: E402
from symbiont_lab.subliminal.filter import filter_responses  # noqa: E402
from symbiont_lab.subliminal.numbers import generate_responses  # noqa: E402
from symbiont_lab.subliminal.prompts import make_number_prompts  # noqa: E402
from symbiont_lab.subliminal.teacher import TraitSpec  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=96)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--animal", default="owl")
    parser.add_argument("--model", default="default")
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()

    loaded = load_model(args.model)
    prompts = make_number_prompts(args.prompts, seed=11)
    for spec in (TraitSpec("system_prompt", animal=args.animal), TraitSpec("none")):
        start = time.perf_counter()
        out = dict(generate_responses(loaded, spec, prompts, batch_size=32, max_tokens=args.max_tokens,
                                      seed=args.seed))
        texts = [out[i] for i in range(len(prompts))]
        result = filter_responses(texts)
        elapsed = time.perf_counter() - start
        print(f"{spec.label}: kept {result.counts['kept']}/{len(texts)} ({1 - result.rejected_fraction:.1%}) "
              f"in {elapsed:.0f} s; {result.counts}", flush=True)
        for i in result.kept[:5]:
            print(f"  kept: {texts[i]!r}")


if __name__ == "__main__":
    main()
