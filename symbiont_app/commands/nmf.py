"""`symbiont nmf`: factor a layer's token activations with NMF; compare with PCA and an SAE at the same k.

    symbiont nmf                                              mlp_hidden.15 of the default model, k = 16
    symbiont nmf --sae sae_weights/smollm2-135m-instruct/resid_post.15-topk32-4608   + best-matching SAE latents
    symbiont nmf --point sae --sae PATH --components 24       factor the SAE's latent activations instead
    symbiont nmf --texts notes.txt --point mlp_hidden.8 --negatives split

Runs (or resumes) in ``--out``: token activations, per-k results, ``report.md`` (FVU table, every
component's top tokens in context), ``summary.json``, ``plots/fvu.png``; prints the FVU table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _ks(text: str) -> tuple[int, ...]:
    try:
        values = tuple(sorted({int(v) for v in text.split(",") if v.strip()}))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give whole numbers like 4,8,16,32") from None
    if not values or values[0] < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: each k must be at least 1")
    return values


def builtin_texts() -> list[str]:
    """Every text of the built-in probe sets (both sides): French and English, code and prose, digits, tenses..."""
    from symbiont_lab.superposition.probe_data import builtin_names, load_probe_set

    return [t for name in builtin_names() for t in load_probe_set(name).texts]


def cmd_nmf(args) -> int:
    from symbiont_lab.superposition.nmf_report import METHODS, TITLES, write_report
    from symbiont_lab.superposition.nmf_run import NmfConfig, run_nmf, texts_digest
    from symbiont_lab.superposition.sparse_probe import require_sklearn

    from ..cli import load_from_args
    from .lab import machine_description
    from .probe import load_sae_for
    from .sae import read_texts

    require_sklearn()
    texts = builtin_texts() if args.texts == "builtin" else read_texts(args.texts, one_per_line=True)
    loaded = load_from_args(args)
    point = args.point or f"mlp_hidden.{loaded.fingerprint.n_layers // 2}"
    config = NmfConfig(point=point, components=args.components, sweep=args.sweep, negatives=args.negatives,
                       held_out=args.held_out, max_tokens=args.max_tokens, sae_steps=args.sae_steps, seed=args.seed,
                       examples=args.examples)
    sae, sae_info = load_sae_for(args.sae, loaded)
    out = Path(args.out)
    say = (lambda m: None) if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    say(f"NMF of {point} over {len(texts)} texts on {loaded.name} -> {out}")
    import time

    started = time.perf_counter()
    results = run_nmf(loaded, texts, config, out, sae, sae_info, say)
    info = {"this invocation": f"{time.perf_counter() - started:.0f} s", "model": f"{loaded.name} ({loaded.fingerprint.short})",
            "texts": f"{'built-in probe sets' if args.texts == 'builtin' else args.texts} ({len(texts)} texts)",
            "machine": machine_description(), "run folder": str(out)}
    summary = write_report(out, results, config.identity(loaded.fingerprint.to_dict(), texts_digest(texts), sae_info),
                           info, plots=not args.no_plots)
    print(f"held-out FVU at {point} (train in brackets):")
    print("k".rjust(4) + "".join(TITLES[m].rjust(22) for m in METHODS))
    for k, row in summary["fvu"].items():
        print(f"{k:4d}" + "".join(f"{row[m]['test_fvu']:.3f} ({row[m]['train_fvu']:.3f})".rjust(22) for m in METHODS))
    say(f"report: {out / 'report.md'}")
    return 0


def register(subparsers) -> None:
    from ..cli import add_model_args

    parser = subparsers.add_parser(
        "nmf", help="NMF of a layer's activations, against PCA and an SAE at the same number of components",
        description="Factor a tokens x units matrix of activations (MLP neurons by default; the positive part, or "
                    "positive and negative parts split) into k non-negative components with scikit-learn's NMF; show "
                    "each component's top tokens in context and its best-matching SAE latent; compare held-out "
                    "reconstruction with PCA and an SAE of k latents. Resumable.")
    add_model_args(parser)
    parser.add_argument("--point", default=None,
                        help="hook point to factor (default mlp_hidden.<middle layer>), or 'sae' for --sae's latents")
    parser.add_argument("--texts", default="builtin", metavar="FILE",
                        help="'builtin' (the probe sets' 384 texts) or a .txt (one text per line) / .jsonl file")
    parser.add_argument("--sae", default=None, metavar="PATH", help="SAE for the best-matching latents (and --point sae)")
    parser.add_argument("--components", type=int, default=16, help="k whose components are described (default 16)")
    parser.add_argument("--sweep", type=_ks, default=(4, 8, 16, 32), metavar="K,K",
                        help="k values of the NMF / PCA / SAE comparison (default 4,8,16,32)")
    parser.add_argument("--negatives", choices=["clip", "split"], default="clip",
                        help="negative activations: clipped to 0, or split into their own columns (default clip)")
    parser.add_argument("--held-out", type=float, default=0.2, help="fraction of texts held out (default 0.2)")
    parser.add_argument("--max-tokens", type=int, default=8000, help="tokens collected at most (default 8000)")
    parser.add_argument("--sae-steps", type=int, default=400, help="training steps of each comparison SAE (default 400)")
    parser.add_argument("--examples", type=int, default=6, help="top tokens shown per component (default 6)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="out/nmf", help="run folder (default out/nmf)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plot")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    parser.set_defaults(func=cmd_nmf)
