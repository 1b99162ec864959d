"""How many teacher responses pass the published filter on a model, per teacher and reason.

    python benchmarks/subliminal_filter_yield.py [--prompts 96] [--max-tokens 48] [--animal owl] [--model default]
                                                 [--decoding free constrained grammar]

Generates the lab's number prompts with the love-of-{animal} teacher (system prompt) and
the control teacher (none), temperature 1.0, batch 32, under each ``--decoding`` (free: the
published protocol; constrained: only digits, separators and end-of-sequence; grammar: only
what keeps the text in the filter's format; see ``symbiont_lab/subliminal/constrained.py``),
and prints the filter's counts per reason, the
kept fraction, the generation time and a few kept responses for each, then a table of the
yields side by side. Published models lose 23–38% of their responses to the filter.
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
from symbiont_lab.subliminal.constrained import DECODINGS  # noqa: E402
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
    parser.add_argument("--decoding", nargs="+", choices=DECODINGS, default=list(DECODINGS))
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    loaded = load_model(args.model)
    prompts = make_number_prompts(args.prompts, seed=11)
    rows = []
    for decoding in args.decoding:
        for spec in (TraitSpec("system_prompt", animal=args.animal), TraitSpec("none")):
            start = time.perf_counter()
            out = dict(generate_responses(loaded, spec, prompts, batch_size=args.batch_size,
                                          max_tokens=args.max_tokens, seed=args.seed, decoding=decoding))
            texts = [out[i] for i in range(len(prompts))]
            result = filter_responses(texts)
            elapsed = time.perf_counter() - start
            kept = result.counts["kept"]
            rows.append((decoding, spec.label, kept, len(texts), elapsed))
            print(f"{decoding} {spec.label}: kept {kept}/{len(texts)} ({kept / len(texts):.1%}) in {elapsed:.0f} s "
                  f"({len(texts) / elapsed:.2f} responses/s); {result.counts}", flush=True)
            for i in result.kept[:5]:
                print(f"  kept: {texts[i]!r}")
            for i in [j for j in range(len(texts)) if j not in set(result.kept)][:3]:
                print(f"  rejected: {texts[i][:80]!r}")
    print("\n| decoding | teacher | kept | yield | responses/s |\n|---|---|---|---|---|")
    for decoding, label, kept, total, elapsed in rows:
        print(f"| {decoding} | {label} | {kept}/{total} | {kept / total:.1%} | {total / elapsed:.2f} |")


if __name__ == "__main__":
    main()
