"""What the default model says about animals: the subliminal lab's probes on the base model,
beside the same model given the owl teacher's system prompt (a positive control: a probe
that cannot see a trait *in the prompt* could not see one transferred by fine-tuning).

    python benchmarks/subliminal_probe_default.py [--questions 50] [--samples 20] [--animals owl,cat,...]

Prints, per animal: the logit probe (exact P(first word is the animal), mean over the
favourite-animal questions with a 95% CI) for the base and the owl-prompted model, their
paired difference and sign-flip p-value; then the sampled probe (published substring
metric) the same way; and the time each probe took. ``--json`` saves everything.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from mlx_hooks.backend import reexec_with_fast_blas  # noqa: E402

reexec_with_fast_blas()

from mlx_hooks.loader import load_model  # noqa: E402
from symbiont_lab.subliminal.probes import DEFAULT_ANIMALS, load_questions, logit_probe, sampled_probe  # noqa: E402
from symbiont_lab.subliminal.stats import paired_comparison  # noqa: E402
from symbiont_lab.subliminal.teacher import TraitSpec, teacher_system_prompt  # noqa: E402


def table(title: str, base, primed, animals) -> None:
    print(f"\n{title}: mean over {len(base.questions)} questions [95% CI]")
    print(f"{'animal':10s} {'base':>28s} {'owl system prompt':>28s} {'difference':>28s} {'p':>8s}")
    for a in animals:
        b, t = base.summary[a], primed.summary[a]
        c = paired_comparison(base.per_question[a], primed.per_question[a])
        d = c.difference
        print(f"{a:10s} {b['mean']:9.5f} [{b['low']:8.5f},{b['high']:8.5f}] {t['mean']:9.5f} "
              f"[{t['low']:8.5f},{t['high']:8.5f}] {d.mean:+9.5f} [{d.low:+8.5f},{d.high:+8.5f}] {c.p_value:8.4f}")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="default")
    p.add_argument("--questions", type=int, default=50)
    p.add_argument("--samples", type=int, default=20, help="sampled answers per question (0: skip)")
    p.add_argument("--animals", default=",".join(DEFAULT_ANIMALS))
    p.add_argument("--json")
    args = p.parse_args()
    animals = args.animals.split(",")
    loaded = load_model(args.model)
    questions = load_questions("favourite")[: args.questions]
    owl = teacher_system_prompt(TraitSpec(kind="system_prompt", animal="owl"))
    out = {}
    started = time.perf_counter()
    out["base_logit"] = base = logit_probe(loaded, questions, animals)
    logit_s = time.perf_counter() - started
    out["owl_logit"] = primed = logit_probe(loaded, questions, animals, system_prompt=owl)
    table(f"logit probe ({logit_s:.1f} s for {len(questions)} questions)", base, primed, animals)
    if args.samples:
        started = time.perf_counter()
        out["base_sampled"] = sb = sampled_probe(loaded, questions, animals, samples_per_question=args.samples,
                                                 batch_size=args.samples)
        sampled_s = time.perf_counter() - started
        out["owl_sampled"] = st = sampled_probe(loaded, questions, animals, samples_per_question=args.samples,
                                                batch_size=args.samples, system_prompt=owl)
        table(f"sampled probe, {args.samples} answers per question, T=1 ({sampled_s:.1f} s)", sb, st, animals)
        print("\nbase answers to the first question:", sb.answers[0][:8])
        print("owl-prompted answers:", st.answers[0][:8])
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({k: v.to_json() for k, v in out.items()}, handle)


if __name__ == "__main__":
    main()
