"""`symbiont lab aux-logits`: the auxiliary-logit subliminal-learning experiment.

    symbiont lab aux-logits                       5 seeds, m = 1,2,3,5,10,50; MNIST (cache or Hub), offline digits
    symbiont lab aux-logits --data digits         scikit-learn's 8×8 digits, no network
    symbiont lab aux-logits --seeds 10 --aux 3    more seeds, the headline m only
    symbiont lab aux-logits --mnist ~/data/mnist  MNIST from local IDX or parquet files

Runs (or resumes) in ``--out`` and writes ``report.md`` (our numbers beside the published
ones, with verdicts), ``summary.json``, ``plots/*.png`` and ``progress.jsonl`` there; prints
the report. Re-running the same command computes only the (m, seed) pairs that are missing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .lab import lab_subparsers, machine_description
from .lab_negation import _positive


def _aux_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--aux {text!r}: give whole numbers like 1,2,3,5,10,50") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"--aux {text!r}: each m must be at least 1")
    return tuple(dict.fromkeys(values))


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: a learning rate between 0 and 1")
    return value


def _init_scale(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value <= 100:
        raise argparse.ArgumentTypeError(f"{text!r}: an initial-weight scale above 0 (1 = as published)")
    return value


def build_config(args):
    from symbiont_lab.aux_logits.experiments import AuxConfig

    fields = {"seeds": args.seeds, "epochs": args.epochs, "student_epochs": args.student_epochs, "batch": args.batch, "lr": args.lr, "hidden": args.hidden,
              "init_scale": args.init_scale}
    if args.aux is not None:
        fields["aux"] = args.aux
    return AuxConfig(**{k: v for k, v in fields.items() if v is not None})


def _load_with_bar(args, say):
    """The data set, with a progress bar on stderr while MNIST downloads (Ctrl-C cancels it)."""
    from symbiont_app.hub_terminal import TerminalBar
    from symbiont_lab.aux_logits.mnist_hub import load_chosen_dataset

    bar = TerminalBar(sys.stderr)
    try:
        return load_chosen_dataset(args.data, args.mnist, on_progress=None if args.quiet else bar.update, say=say)
    finally:
        bar.close()


def cmd_aux_logits(args) -> int:
    from symbiont_lab.aux_logits.report import write_report
    from symbiont_lab.aux_logits.runner import RunFolder, run_lab

    config = build_config(args)
    say = (lambda m: None) if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    data = _load_with_bar(args, say)
    out = Path(args.out) if args.out else Path("out/lab") / ("aux-logits-mnist" if data.name == "mnist" else "aux-logits")
    say(f"aux-logits lab ({data.name}: {len(data.x_train)} train / {len(data.x_test)} test) -> {out}")
    summary = run_lab(config, out, data=data, chunk_seeds=args.chunk_seeds, progress=say)
    runs = RunFolder(out).runs()
    config.dataset = data.name
    info = {
        "compute wall time": f"{sum(r.get('wall_s', 0) for r in runs):.0f} s over {len(runs)} invocation(s)"
                             + (" (some interrupted)" if any(r.get("interrupted") for r in runs) else ""),
        "this invocation": (f"computed {sum(len(v) for v in summary.computed.values())} (m, seed) result(s) in "
                            f"{summary.wall_s:.0f} s" if summary.computed else "nothing left to compute"),
        "machine": machine_description(),
        "data": data.source,
        "run folder": str(out),
    }
    write_report(out, RunFolder(out).results(config), config, run_info=info, plots=not args.no_plots)
    print((out / "report.md").read_text(encoding="utf-8"))
    say(f"report: {out / 'report.md'}")
    return 0


def register(subparsers) -> None:
    parser = lab_subparsers(subparsers).add_parser(
        "aux-logits", help="subliminal learning through auxiliary logits in an MLP on digits",
        description="Reproduce the auxiliary-logit experiment (MLP teacher with extra logits; students trained "
                    "only on those logits of noise) and compare with the published figures. Resumable: re-run "
                    "the same command to continue.")
    parser.add_argument("--seeds", type=_positive, default=None, help="seeds per m (default 5)")
    parser.add_argument("--aux", type=_aux_list, default=None, metavar="M,M,...",
                        help="numbers of auxiliary logits to sweep (default 1,2,3,5,10,50)")
    parser.add_argument("--data", choices=("auto", "mnist", "digits"), default="auto",
                        help="auto (default): MNIST from the Hugging Face cache, else downloaded from the Hub "
                             "(ylecun/mnist, with a progress bar), else offline scikit-learn's 8x8 digits; "
                             "mnist: MNIST or an error; digits: the 8x8 digits, no network")
    parser.add_argument("--mnist", default=None, metavar="DIR",
                        help="folder with local MNIST files (the four IDX files, or train*.parquet and test*.parquet)")
    parser.add_argument("--out", default=None,
                        help="run folder (default out/lab/aux-logits, or out/lab/aux-logits-mnist on MNIST)")
    parser.add_argument("--epochs", type=_positive, default=None,
                        help="teacher epochs (default 13 on digits, 5 on MNIST)")
    parser.add_argument("--student-epochs", type=_positive, default=None,
                        help="student epochs on noise, each as many steps as a teacher epoch (default: --epochs, "
                             "as published)")
    parser.add_argument("--batch", type=_positive, default=None, help="batch size (default 64 on digits, 1024 on MNIST)")
    parser.add_argument("--lr", type=_rate, default=None, help="Adam learning rate (default 3e-4)")
    parser.add_argument("--hidden", type=_positive, default=None, help="width of both hidden layers (default 256)")
    parser.add_argument("--init-scale", type=_init_scale, default=None,
                        help="multiply every network's initial weights by this (default 1: nn.Linear's rule, as published)")
    parser.add_argument("--chunk-seeds", type=_positive, default=None,
                        help="seeds trained together as one stacked model (default 5)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    parser.set_defaults(func=cmd_aux_logits)
