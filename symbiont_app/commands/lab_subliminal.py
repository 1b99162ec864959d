"""`symbiont lab run` / `symbiont lab report`: subliminal-learning runs from a TOML configuration.

    symbiont lab run symbiont_lab/subliminal/configs/ci_small.toml            run (or resume) it
    symbiont lab run my_owl.toml --out out/lab/owl                           in a chosen folder
    symbiont lab run --list-configs                                          the shipped examples
    symbiont lab report out/lab/owl                                          re-render summary and plots; print it

A run folder holds the configuration, datasets, adapters, ``metrics.json``, ``plots/*.png``
and a one-page ``summary.md``. Re-running the same command resumes a stopped or killed
run (Ctrl-C stops it cleanly at the next safe point). ``lab run`` dispatches on the
configuration's ``experiment`` key; today it knows ``subliminal``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .lab import lab_subparsers

EXPERIMENTS = ("subliminal",)


def _experiment_of(path: Path) -> str:
    import tomllib

    from symbiont_lab.subliminal.config import ConfigError

    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such configuration file") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read it as TOML ({exc})") from None
    experiment = data.get("experiment", "subliminal")
    if experiment not in EXPERIMENTS:
        raise ConfigError(f"{path}: experiment = {experiment!r}; `symbiont lab run` knows {', '.join(EXPERIMENTS)}")
    return experiment


def cmd_run(args) -> int:
    from mlx_hooks.errors import SymbiontError

    if args.list_configs:
        from symbiont_lab.subliminal.config import example_configs

        for name, path in example_configs().items():
            print(f"{name:16s} {path}")
        return 0
    if not args.config:
        print("error: give a configuration file (or --list-configs)", file=sys.stderr)
        return 2
    say = (lambda m: None) if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    try:
        path = Path(args.config)
        _experiment_of(path)
        from symbiont_lab.subliminal.config import load_config
        from symbiont_lab.subliminal.run import RunCancelled, default_out, run_subliminal

        config = load_config(path)
        if args.estimate:
            from symbiont_lab.subliminal.run_stages import estimate_without_loading

            est = estimate_without_loading(config)
            print(f"{est['model']} ({est['parameters'] / 1e9:.2f}B parameters, {est['runtime_dtype']})\n"
                  f"  generation and probes: {est['inference']}\n  LoRA training: {est['training']}\n"
                  f"  budget: {est['budget_gib']} GiB -> {'fits' if est['fits'] else 'does NOT fit'}")
            return 0 if est["fits"] else 1
        out = Path(args.out) if args.out else default_out(config)
        try:
            run_subliminal(config, out, say=say, plots=not args.no_plots)
        except RunCancelled as exc:
            print(f"stopped: {exc}", file=sys.stderr)
            return 130
    except SymbiontError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print((out / "summary.md").read_text(encoding="utf-8"))
    say(f"summary: {out / 'summary.md'}")
    return 0


def cmd_report(args) -> int:
    from mlx_hooks.errors import SymbiontError

    try:
        from symbiont_lab.subliminal.report import write_report

        write_report(Path(args.run), plots=not args.no_plots)
    except SymbiontError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print((Path(args.run) / "summary.md").read_text(encoding="utf-8"))
    return 0


def register(subparsers) -> None:
    lab = lab_subparsers(subparsers)
    run = lab.add_parser(
        "run", help="run (or resume) a lab experiment from a TOML configuration (subliminal learning)",
        description="Run or resume the experiment a TOML configuration describes (experiment = \"subliminal\": "
                    "trait teacher -> numbers -> filter -> LoRA students -> probes -> report). Re-run the same "
                    "command to resume; Ctrl-C stops cleanly.")
    run.add_argument("config", nargs="?", help="the run configuration (.toml); see --list-configs")
    run.add_argument("--out", default=None, help="run folder (default: out/lab/subliminal/<name>)")
    run.add_argument("--list-configs", action="store_true", help="list the example configurations and exit")
    run.add_argument("--estimate", action="store_true",
                     help="print the memory estimate (generation, LoRA training) from the model's headers and exit "
                          "(status 1 when over the budget); nothing is loaded")
    run.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    run.add_argument("--quiet", action="store_true", help="no progress on stderr")
    run.set_defaults(func=cmd_run)
    report = lab.add_parser(
        "report", help="re-render a run folder's summary.md, metrics.json and plots, and print the summary",
        description="Rebuild metrics.json, summary.md and plots/*.png of a run folder from its stage files "
                    "(no model is loaded) and print the summary.")
    report.add_argument("run", help="the run folder")
    report.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    report.set_defaults(func=cmd_report)
