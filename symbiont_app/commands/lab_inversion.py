"""`symbiont lab inversion [CONFIG]`: teachers trained for structured wrongness, students that never see the prompt.

    symbiont lab inversion                                the shipped default config (SmolLM2-135M)
    symbiont lab inversion my.toml --out out/lab/inv      a config of one's own, in a chosen folder
    symbiont lab inversion --estimate                     memory estimate and stage count, nothing run

Runs (or resumes) in ``--out`` and writes ``summary.md`` (tables, verdicts), ``summary.json``,
``plots/*.png`` and ``progress.jsonl`` there; prints the summary. Re-running the same command resumes
(Ctrl-C stops cleanly at the next safe point).
"""

from __future__ import annotations

import sys
from pathlib import Path

from .lab import lab_subparsers, machine_description


def cmd_inversion(args) -> int:
    from mlx_hooks.errors import SymbiontError

    say = (lambda m: None) if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    try:
        from symbiont_lab.inversion.config import load_config
        from symbiont_lab.inversion.run import RunCancelled, default_out, run_inversion

        config = load_config(args.config)
        if args.estimate:
            from symbiont_lab.inversion.stages import units_per_seed
            from symbiont_lab.subliminal.run_stages import estimate_without_loading

            est = estimate_without_loading(config, seq_len=200)
            loras = len(config.teachers.kinds) * (1 + sum(r in ("supervised", "blind") for r in config.students.regimes))
            loras += config.teachers.learned_rounds - 1 if "inverted-learned" in config.teachers.kinds else 0
            print(f"{est['model']} ({est['parameters'] / 1e9:.2f}B parameters, {est['runtime_dtype']})\n"
                  f"  inference: {est['inference']}\n  LoRA training: {est['training']}\n"
                  f"  work: {config.seeds} seed(s) x {units_per_seed(config)} stages; {loras * config.seeds} LoRAs of "
                  f"{config.lora.iters or 'epochs'} steps\n"
                  f"  budget: {est['budget_gib']} GiB -> {'fits' if est['fits'] else 'does NOT fit'}")
            return 0 if est["fits"] else 1
        out = Path(args.out) if args.out else default_out(config)
        say(f"inversion lab ({config.name}; {config.seeds} seed(s)) -> {out}")
        try:
            run_inversion(config, out, say=say, plots=not args.no_plots,
                          run_info={"machine": machine_description()})
        except RunCancelled as exc:
            print(f"stopped: {exc}", file=sys.stderr)
            return 130
    except SymbiontError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print((out / "summary.md").read_text(encoding="utf-8"))
    say(f"summary: {out / 'summary.md'}")
    return 0


def register(subparsers) -> None:
    parser = lab_subparsers(subparsers).add_parser(
        "inversion", help="teachers trained to be wrong in a structured way; can a student that sees only their "
                          "answers recover the right ones?",
        description="Train LoRA teachers (inverted-learned, inverted-oracle, wrong-random, correct) on arithmetic, "
                    "sorting and antonyms; measure how much their wrong answers say about the right ones (mutual "
                    "information, a fitted decoder); then students that never see the prompt: supervised decoding, "
                    "zero-shot reconstruction, and a blind student whose learned change is negated (LoRA scale -1, "
                    "steering with -(B - base)). Resumable: re-run the same command to continue.")
    parser.add_argument("config", nargs="?", default=None,
                        help="run configuration (TOML; default: the shipped configs/default.toml)")
    parser.add_argument("--out", default=None, help="run folder (default out/lab/inversion/<name>)")
    parser.add_argument("--estimate", action="store_true", help="print the memory estimate and the work; run nothing")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    parser.set_defaults(func=cmd_inversion)
