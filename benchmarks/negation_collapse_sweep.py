"""Negation lab, collapse chain: which input mix, soft-label temperature and ground-truth share
reproduce the two published effects that the default run does not.

    python benchmarks/negation_collapse_sweep.py [--seeds 20] [--out out/bench/negation-sweep]

Published (the "learning through negation" essay, TinyLSTM, 20 seeds): a hard-label chain
collapses Gen0 85.6 → Gen1 72.8 → Gen2 68.0 (hard-negative accuracy at L = 20); soft labels
(distillation) end higher, Gen2 72.0 (+4.0 over hard); mixing 20–30% ground truth into each
batch "prevents collapse". The essay names the kinds of sequences the chain sees but not
their shares. This sweep runs the lab's collapse experiment (``symbiont lab negation --only
collapse``, published sizes) once per input mix, each run with the plain soft variant and
extra soft temperatures (``sigmoid(logit / T)``) and the ground-truth shares, and prints:

- per mix: Gen0 / Gen1 / Gen2 of the hard chain and Gen0 − Gen2 (published +17.6);
- per mix and soft variant: Gen2 soft − Gen2 hard (published +4.0), paired over seeds (± se);
- per mix and ground-truth share: Gen0 − Gen2 (≈ 0 would be "prevents collapse").

Each mix is its own run folder under ``--out`` (the lab's resumable format): rerunning the
command computes only the seeds that are missing.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from mlx_hooks.backend import reexec_with_fast_blas  # noqa: E402

reexec_with_fast_blas()

from mlx_hooks.backend import backend_info  # noqa: E402
from symbiont_lab.negation.experiments import NegationConfig, mix_name, soft_name  # noqa: E402
from symbiont_lab.negation.report import summarize  # noqa: E402
from symbiont_lab.negation.runner import RunFolder, run_lab  # noqa: E402

MIXES = {
    "default ½ sorted ¼ random ¼ one-swap": (("sorted", 0.5), ("random", 0.25), ("one_swap", 0.25)),
    "½ sorted ½ one-swap": (("sorted", 0.5), ("one_swap", 0.5)),
    "⅓ each": (("sorted", 0.34), ("random", 0.33), ("one_swap", 0.33)),
    "½ sorted ½ random": (("sorted", 0.5), ("random", 0.5)),
}
TEMPERATURES = (0.5, 2.0, 4.0)
FRACTIONS = (0.1, 0.2, 0.3, 0.5)


def fmt(d: dict) -> str:
    return f"{d['mean']:+.1f} ± {d['se']:.1f}" if "se" in d else f"{d['mean']:+.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the published 1,600)")
    parser.add_argument("--out", default="out/bench/negation-sweep")
    parser.add_argument("--mixes", default=None, help="comma-separated mix numbers to run (default: all)")
    args = parser.parse_args()
    print(backend_info().summary())
    chosen = set(int(i) for i in args.mixes.split(",")) if args.mixes else set(range(len(MIXES)))
    summaries = {}
    for index, (name, mix) in enumerate(MIXES.items()):
        fields = {"seeds": args.seeds, "collapse_mix": mix, "soft_temperatures": TEMPERATURES,
                  "mix_fractions": FRACTIONS, "experiments": ("collapse",)}
        if args.steps:
            fields["steps"] = args.steps
        config = NegationConfig(**fields)
        out = Path(args.out) / f"mix{index}"
        if index in chosen:
            start = time.perf_counter()
            run_lab(config, out, verbose=False)
            print(f"  {name}: {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
        if (out / "config.json").is_file():
            results = RunFolder(out).results(config)
            if results.get("collapse"):
                summaries[name] = (summarize(results, config)["collapse"], config)

    print("\nHard-label chain (hard-negative accuracy at L = 20, mean ± sd; published 85.6 / 72.8 / 68.0, Gen0 − Gen2 +17.6)\n")
    print("| input mix | seeds | Gen0 | Gen1 | Gen2 | Gen0 − Gen2 (± se) |")
    print("|---|---|---|---|---|---|")
    for name, (c, _) in summaries.items():
        v = c["variants"]["hard"]
        print(f"| {name} | {c['n']} | {c['gen0']['hard']['mean']:.1f} ± {c['gen0']['hard']['sd']:.1f} "
              f"| {v['gen1']['hard']['mean']:.1f} | {v['gen2']['hard']['mean']:.1f} "
              f"| {fmt(c['declines']['hard']['gen0_minus_gen2'])} |")
    print("\nSoft labels: Gen2 soft − Gen2 hard (published +4.0)\n")
    print("| input mix | " + " | ".join(["T=1 (soft)"] + [f"T={t:g}" for t in TEMPERATURES]) + " |")
    print("|---|" + "---|" * (1 + len(TEMPERATURES)))
    for name, (c, _) in summaries.items():
        cells = [fmt(c["vs_hard_gen2"][v]) for v in ["soft"] + [soft_name(t) for t in TEMPERATURES]]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("\nGround truth in each batch: Gen0 − Gen2 (hard chain above; published: 20–30% prevents collapse)\n")
    print("| input mix | hard | " + " | ".join(f"{round(x * 100)}%" for x in FRACTIONS) + " |")
    print("|---|---|" + "---|" * len(FRACTIONS))
    for name, (c, _) in summaries.items():
        cells = [fmt(c["declines"][v]["gen0_minus_gen2"]) for v in ["hard"] + [mix_name(x) for x in FRACTIONS]]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
