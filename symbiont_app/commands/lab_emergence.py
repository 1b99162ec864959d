"""`symbiont lab emergence`: grokking live, and effective information of micro vs macro units.

    symbiont lab emergence                           the default run (p = 59; three arms; EI on the default model)
    symbiont lab emergence --no-language-model       grokking and its EI only
    symbiont lab emergence --p 23 --steps 800        a smaller modulus

Trains the grokking network (a + b mod p) with weight decay, without it, and on a large
training fraction; measures effective information (Hoel et al. 2013) of neurons, residual
dimensions, Fourier features and random directions at its checkpoints, and of neurons,
residual dimensions, SAE latents, steering directions and same-norm random directions on the
language model. Runs (or resumes) in ``--out`` and writes ``summary.md``, ``summary.json``,
``plots/*.png`` and ``progress.jsonl`` there; prints the summary. Re-running the same command
continues where it stopped.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from .lab import lab_subparsers, machine_description
from .lab_negation import _positive


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must lie strictly between 0 and 1")
    return value


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: must be a finite number ≥ 0")
    return value


def build_config(args):
    from symbiont_lab.emergence.config import EmergenceConfig

    config = EmergenceConfig()
    fields = {"p": args.p, "steps": args.steps, "train_fraction": args.fraction, "large_fraction": args.large_fraction,
              "lr": args.lr, "weight_decay": args.weight_decay, "seed": args.seed, "n_boot": args.n_boot,
              "model": args.model, "sae": args.sae}
    config = replace(config, **{k: v for k, v in fields.items() if v is not None})
    grok = {"units": args.units, "prompts": args.prompts}
    config = replace(config, grok_ei=replace(config.grok_ei, **{k: v for k, v in grok.items() if v is not None}))
    if args.no_language_model:
        return replace(config, model_ei=None)
    model = {"layer": args.layer, "strength": args.strength}
    return replace(config, model_ei=replace(config.model_ei, **{k: v for k, v in model.items() if v is not None}))


def cmd_emergence(args) -> int:
    from symbiont_lab.emergence.report import write_report
    from symbiont_lab.emergence.runner import RunFolder, run_lab

    config = build_config(args)
    out = Path(args.out) if args.out else Path("out/lab/emergence")
    say = (lambda m: None) if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    say(f"emergence lab (p = {config.p}; language model: {config.model if config.model_ei else 'skipped'}) -> {out}")
    summary = run_lab(config, out, progress=say)
    if summary.stopped:
        say("stopped before the end: run the same command again to continue")
        return 1
    runs = RunFolder(out).runs()
    info = {
        "compute wall time": f"{sum(r.get('wall_s', 0) for r in runs):.0f} s over {len(runs)} invocation(s)"
                             + (" (some interrupted)" if any(r.get("interrupted") for r in runs) else ""),
        "this invocation": (f"computed {len(summary.computed)} piece(s) in {summary.wall_s:.0f} s"
                            if summary.computed else "nothing left to compute"),
        "machine": machine_description(),
        "run folder": str(out),
    }
    write_report(out, config, run_info=info, plots=not args.no_plots)
    print((out / "summary.md").read_text(encoding="utf-8"))
    say(f"summary: {out / 'summary.md'}")
    return 0


def register(subparsers) -> None:
    parser = lab_subparsers(subparsers).add_parser(
        "emergence", help="grokking on modular addition, and effective information of micro vs macro units",
        description="Train a one-layer transformer on a + b mod p until it groks (with controls: no weight decay, a "
                    "large training fraction), with live curves; measure effective information (Hoel et al. 2013) of "
                    "neuron-, residual-, Fourier- and random-direction interventions across its checkpoints, and of "
                    "neurons, residual dimensions, SAE latents and steering directions on a language model, with "
                    "bootstrap intervals and controls. Resumable: re-run the same command to continue.")
    parser.add_argument("--out", default=None, help="run folder (default out/lab/emergence)")
    parser.add_argument("--p", type=_positive, default=None, help="modulus (default 59; published 113 and 97)")
    parser.add_argument("--steps", type=_positive, default=None,
                        help="step budget of each arm (default 2500; the generalising arms stop 300 steps after "
                             "test accuracy reaches 0.99)")
    parser.add_argument("--fraction", type=_fraction, default=None, help="training fraction (default 0.3)")
    parser.add_argument("--large-fraction", type=_fraction, default=None,
                        help="training fraction of the large-fraction control (default 0.7)")
    parser.add_argument("--lr", type=_fraction, default=None, help="AdamW learning rate (default 1e-2; published 1e-3)")
    parser.add_argument("--weight-decay", type=_non_negative, default=None,
                        help="AdamW weight decay of the main and large-fraction arms (default 1.0)")
    parser.add_argument("--seed", type=int, default=None, help="initial weights, split, prompts (default 0)")
    parser.add_argument("--units", type=_positive, default=None,
                        help="units per EI scale on the grokking network (default 4: 16 states)")
    parser.add_argument("--prompts", type=_positive, default=None,
                        help="input pairs each EI state is tried on (default 96)")
    parser.add_argument("--no-language-model", action="store_true", help="skip EI on the language model")
    parser.add_argument("--model", default=None, help="language model (default: the embedded default model)")
    parser.add_argument("--sae", default=None, metavar="PATH",
                        help="SAE folder for --model (default: the shipped SAE, for the default model only)")
    parser.add_argument("--layer", type=int, default=None,
                        help="block intervened on in the language model (default 15, the shipped SAE's)")
    parser.add_argument("--strength", type=_non_negative, default=None,
                        help="steering strength as a fraction of the typical residual norm (default 0.3)")
    parser.add_argument("--n-boot", type=_positive, default=None, help="bootstrap resamples (default 1000)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    parser.set_defaults(func=cmd_emergence)
