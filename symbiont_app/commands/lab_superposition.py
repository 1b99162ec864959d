"""`symbiont lab superposition`: toy models of superposition, XOR lesions, interference as width fills.

    symbiont lab superposition                          every experiment, 2 seeds (~2-3 min on 2 CPU cores)
    symbiont lab superposition --only phase,pictures    some of them
    symbiont lab superposition --sae PATH               interference of another SAE's decoder

Runs (or resumes) in ``--out`` and writes ``report.md`` (findings with verdicts), ``summary.json``,
``plots/*.png`` and ``progress.jsonl`` there; prints the report. Re-running the same command computes
only the (experiment, seed) pairs that are missing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .lab import lab_subparsers, machine_description
from .lab_negation import _positive


def _experiments(text: str) -> tuple[str, ...]:
    from symbiont_lab.superposition.experiments import EXPERIMENTS

    names = tuple(dict.fromkeys(v.strip() for v in text.split(",") if v.strip()))
    unknown = [n for n in names if n not in EXPERIMENTS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"--only {text!r}: choose from {', '.join(EXPERIMENTS)}")
    return names


def build_config(args):
    from symbiont_lab.superposition.experiments import LabConfig

    fields = {"seeds": args.seeds, "steps": args.steps, "batch": args.batch, "sae_path": args.sae}
    if args.only:
        fields["experiments"] = args.only
    return LabConfig(**{k: v for k, v in fields.items() if v is not None})


def cmd_superposition(args) -> int:
    from symbiont_lab.superposition.report import write_report
    from symbiont_lab.superposition.runner import RunFolder, run_lab

    config = build_config(args)
    if args.no_sae:
        config.experiments = tuple(e for e in config.experiments if e != "interference_sae")
    out = Path(args.out) if args.out else Path("out/lab/superposition")
    say = (lambda m: None) if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    say(f"superposition lab ({', '.join(config.experiments)}; {config.seeds} seed(s)) -> {out}")
    summary = run_lab(config, out, progress=say)
    runs = RunFolder(out).runs()
    info = {
        "compute wall time": f"{sum(r.get('wall_s', 0) for r in runs):.0f} s over {len(runs)} invocation(s)"
                             + (" (some interrupted)" if any(r.get("interrupted") for r in runs) else ""),
        "this invocation": (f"computed {sum(len(v) for v in summary.computed.values())} (experiment, seed) result(s) "
                            f"in {summary.wall_s:.0f} s" if summary.computed else "nothing left to compute"),
        "machine": machine_description(),
        "run folder": str(out),
    }
    write_report(out, RunFolder(out).results(config), config, sae=summary.sae, run_info=info, plots=not args.no_plots)
    print((out / "report.md").read_text(encoding="utf-8"))
    say(f"report: {out / 'report.md'}")
    return 0


def register(subparsers) -> None:
    parser = lab_subparsers(subparsers).add_parser(
        "superposition", help="toy models of superposition, XOR weight lesions, interference as width fills",
        description="Train the ReLU-output toy models of superposition (Elhage et al. 2022) over sparsity, measure "
                    "feature dimensionality, lesion every weight of two-layer XOR networks, and measure interference "
                    "between feature directions (toy models and an SAE's decoder) as more features share the "
                    "dimensions. Resumable: re-run the same command to continue.")
    parser.add_argument("--seeds", type=_positive, default=None, help="seeds per experiment (default 2)")
    parser.add_argument("--only", type=_experiments, default=None, metavar="E,E,...",
                        help="experiments to run: phase, geometry, pictures, xor, interference, interference_sae "
                             "(default all)")
    parser.add_argument("--steps", type=_positive, default=None, help="Adam steps per toy model (default 6000; published 10000)")
    parser.add_argument("--batch", type=_positive, default=None, help="toy-model batch (default 1024)")
    parser.add_argument("--sae", default=None, metavar="PATH",
                        help="SAE whose decoder interference_sae reads (default: the shipped SmolLM2 SAE)")
    parser.add_argument("--no-sae", action="store_true", help="leave out interference_sae")
    parser.add_argument("--out", default=None, help="run folder (default out/lab/superposition)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    parser.set_defaults(func=cmd_superposition)
