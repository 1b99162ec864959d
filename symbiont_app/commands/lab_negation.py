"""`symbiont lab negation`: the learning-through-negation experiments.

    symbiont lab negation                                  everything, published sizes (20 seeds; 10 for representation)
    symbiont lab negation --seeds 4 --steps 400            a smaller version
    symbiont lab negation --only sorted --only collapse    some experiments
    symbiont lab negation --mix 0.2,0.3 --out out/lab/mix  vary the ground-truth shares of the collapse chain

Runs (or resumes) in ``--out`` and writes ``report.md`` (our numbers beside the published
ones, and whether each effect reproduced), ``summary.json`` and ``plots/*.png`` there;
prints the report. Re-running the same command computes only the seeds that are missing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .lab import lab_subparsers, machine_description

EXPERIMENT_NAMES = ("sorted", "collapse", "representation")


def _fractions(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--mix {text!r}: give shares like 0.1,0.2,0.3") from None
    if not values or not all(0 < v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"--mix {text!r}: shares must lie strictly between 0 and 1")
    return values


def _temperatures(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--soft-temperatures {text!r}: give temperatures like 0.5,2,4") from None
    if not values or not all(0 < v <= 100 for v in values):
        raise argparse.ArgumentTypeError(f"--soft-temperatures {text!r}: temperatures must lie in (0, 100]")
    return values


def _collapse_mix(text: str) -> tuple[tuple[str, float], ...]:
    try:
        parts = tuple((name.strip(), float(share)) for name, _, share in (p.partition("=") for p in text.split(",")))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--collapse-mix {text!r}: give e.g. sorted=0.5,random=0.25,one_swap=0.25") from None
    return parts


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must be at least 1")
    return value


def build_config(args):
    from symbiont_lab.negation.experiments import NegationConfig

    fields = {}
    if args.seeds is not None:
        fields.update(seeds=args.seeds, representation_seeds=args.seeds)
    if args.steps is not None:
        fields.update(steps=args.steps, representation_steps=args.steps)
    if args.mix is not None:
        fields["mix_fractions"] = args.mix
    if args.collapse_mix is not None:
        fields["collapse_mix"] = args.collapse_mix
    if args.soft_temperatures is not None:
        fields["soft_temperatures"] = args.soft_temperatures
    if args.only:
        fields["experiments"] = tuple(dict.fromkeys(args.only))
    return NegationConfig(**fields)


def default_out(args) -> Path:
    return Path("out/lab") / ("negation" if args.steps is None else f"negation-steps{args.steps}")


def cmd_negation(args) -> int:
    from symbiont_lab.negation.report import write_report
    from symbiont_lab.negation.runner import RunFolder, run_lab

    config = build_config(args)
    out = Path(args.out) if args.out else default_out(args)
    say = (lambda m: None) if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    say(f"negation lab -> {out}")
    summary = run_lab(config, out, workers=args.workers, chunk_seeds=args.chunk_seeds, progress=say,
                      verbose=not args.quiet)
    folder = RunFolder(out)
    runs = folder.runs()
    info = {
        "compute wall time": f"{sum(r.get('wall_s', 0) for r in runs):.0f} s over {len(runs)} invocation(s) "
                             f"(CPU time {sum(r.get('cpu_s', 0) for r in runs):.0f} s; per invocation: "
                             + ", ".join(f"{r.get('wall_s', 0):.0f} s on {r.get('workers', 1)} worker(s)"
                                         + (" (interrupted)" if r.get("interrupted") else "") for r in runs) + ")",
        "this invocation": (f"computed {sum(len(v) for v in summary.computed.values())} seed result(s) in "
                            f"{summary.wall_s:.0f} s" if summary.computed else "nothing left to compute"),
        "machine": machine_description(),
        "run folder": str(out),
    }
    results = folder.results(config)
    write_report(out, results, config, run_info=info, plots=not args.no_plots)
    print((out / "report.md").read_text(encoding="utf-8"))
    say(f"report: {out / 'report.md'}")
    return 0


def register(subparsers) -> None:
    parser = lab_subparsers(subparsers).add_parser(
        "negation", help="hard negatives, the collapse chain and input representations on a TinyLSTM",
        description="Reproduce the learning-through-negation experiments (TinyLSTM, MLX) and compare "
                    "with the published tables. Resumable: re-run the same command to continue.")
    parser.add_argument("--seeds", type=_positive, default=None,
                        help="seeds per experiment (default: 20, and 10 for representation, as published)")
    parser.add_argument("--steps", type=_positive, default=None,
                        help="training steps per model (default: 1600, and 2000 for representation, as published)")
    parser.add_argument("--out", default=None,
                        help="run folder (default: out/lab/negation, or out/lab/negation-steps<S> with --steps)")
    parser.add_argument("--only", action="append", choices=EXPERIMENT_NAMES, metavar="EXPERIMENT",
                        help=f"run only this experiment ({', '.join(EXPERIMENT_NAMES)}); repeatable")
    parser.add_argument("--mix", type=_fractions, default=None,
                        help="ground-truth shares of the collapse chain's mix variants (default 0.1,0.2,0.3,0.5)")
    parser.add_argument("--soft-temperatures", type=_temperatures, default=None, metavar="T,T,...",
                        help="extra soft-label collapse variants at these temperatures, sigmoid(logit/T) of the "
                             "previous generation (default: none; the plain soft variant is T=1)")
    parser.add_argument("--collapse-mix", type=_collapse_mix, default=None, metavar="KIND=SHARE,...",
                        help="what the collapse chain's inputs are made of "
                             "(default sorted=0.5,random=0.25,one_swap=0.25)")
    parser.add_argument("--workers", type=_positive, default=None,
                        help="worker processes (default: one per CPU core up to 4; 1 on a GPU)")
    parser.add_argument("--chunk-seeds", type=_positive, default=None,
                        help="seeds trained together as one vectorised model "
                             "(default: 8 for sorted, 2 for collapse and representation)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    parser.set_defaults(func=cmd_negation)
