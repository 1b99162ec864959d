"""`symbiont probe`: k-sparse probes for labelled properties at every layer (Gurnee et al. 2023).

    symbiont probe                                       every built-in set, resid_post + mlp_hidden, default model
    symbiont probe --sets french_english code_prose --sae sae_weights/smollm2-135m-instruct/resid_post.15-topk32-4608
    symbiont probe --sets my_labels.csv --positive yes --kinds mlp_hidden --layers 0,10,20

Runs (or resumes) in ``--out``: activations per set, probe results per (set, kind), ``report.md``,
``summary.json``, ``plots/<set>.png``; prints the report's overview. Re-running computes only what
is missing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give whole numbers separated by commas") from None
    if not values:
        raise argparse.ArgumentTypeError(f"{text!r}: give at least one number")
    return tuple(dict.fromkeys(values))


def _kinds(text: str) -> tuple[str, ...]:
    from symbiont_lab.superposition.model_activations import POINT_KINDS, SAE_KIND

    kinds = tuple(dict.fromkeys(v.strip() for v in text.split(",") if v.strip()))
    bad = [k for k in kinds if k not in (*POINT_KINDS, SAE_KIND)]
    if not kinds or bad:
        raise argparse.ArgumentTypeError(f"--kinds {text!r}: choose from {', '.join((*POINT_KINDS, SAE_KIND))}")
    return kinds


def load_sae_for(path: str | None, loaded):
    """(SAE checked against the model, a description for config.json), or (None, None)."""
    if not path:
        return None, None
    from mlx_hooks.sae.formats import load_sae

    sae = load_sae(path, loaded)
    return sae, {"path": str(Path(path).resolve()), "sae_id": sae.cfg.sae_id, "hook_point": sae.cfg.hook_point,
                 "d_sae": sae.cfg.d_sae}


def cmd_probe(args) -> int:
    from symbiont_lab.superposition.model_activations import SAE_KIND
    from symbiont_lab.superposition.probe_data import builtin_names, load_probe_set
    from symbiont_lab.superposition.probe_report import write_report
    from symbiont_lab.superposition.probe_run import ProbeConfig, load_results, run_probes
    from symbiont_lab.superposition.sparse_probe import ProbeSettings, require_sklearn

    from ..cli import load_from_args
    from .lab import machine_description

    require_sklearn()
    sets = [load_probe_set(spec, args.positive) for spec in (args.sets or builtin_names())]
    names = [s.name for s in sets]
    if len(set(names)) != len(names):
        raise ValueError(f"two sets share a name ({', '.join(names)}); rename a file")
    kinds = args.kinds or (("resid_post", "mlp_hidden") + ((SAE_KIND,) if args.sae else ()))
    config = ProbeConfig(kinds=kinds, layers=args.layers, pooling=args.pooling, top=args.top,
                         probe=ProbeSettings(k_values=args.k, folds=args.folds, selection=args.select))
    loaded = load_from_args(args)
    sae, sae_info = load_sae_for(args.sae, loaded)
    out = Path(args.out)
    say = (lambda m: None) if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    say(f"probing {len(sets)} set(s) on {loaded.name}: {', '.join(kinds)} -> {out}")
    summary = run_probes(loaded, sets, config, out, sae, sae_info, say)
    info = {"this invocation": (f"probed {len(summary.computed)} (set, kind) pair(s) in {summary.wall_s:.0f} s"
                                if summary.computed else "nothing left to compute"),
            "model": f"{loaded.name} ({loaded.fingerprint.short})", "machine": machine_description(),
            "run folder": str(out)}
    sets_info = {s.name: {"description": s.description, "positive_label": s.positive_label,
                          "negative_label": s.negative_label, "positives": s.counts()[0], "negatives": s.counts()[1],
                          "source": s.source} for s in sets}
    settings = config.identity(loaded.fingerprint.to_dict(), sae_info)
    write_report(out, load_results(out, sets, list(kinds)), sets_info, settings, info, plots=not args.no_plots)
    text = (out / "report.md").read_text(encoding="utf-8")
    sections = text.split("\n## ")
    print("## " + sections[1] if len(sections) > 1 else text)  # the overview; the rest is in report.md
    say(f"report: {out / 'report.md'}")
    return 0


def register(subparsers) -> None:
    from ..cli import add_model_args

    parser = subparsers.add_parser(
        "probe", help="k-sparse probes: which layers and how many units carry a labelled property",
        description="Sparse probing (Gurnee et al. 2023): for labelled texts, pool each layer's activations per text, "
                    "fit logistic-regression probes on the k best units (k = 1, 2, 4, ... and all units) with grouped "
                    "cross-validation, and report held-out F1 per layer and k with the top units. Resumable.")
    add_model_args(parser)
    parser.add_argument("--sets", nargs="+", default=None, metavar="SET",
                        help="built-in sets (french_english, numbers_words, plural_singular, past_present, sentiment, "
                             "code_prose; default all) or .json/.jsonl/.csv files")
    parser.add_argument("--positive", default=None, metavar="LABEL",
                        help="the positive label of a .jsonl/.csv set (default: 1/true, else the first row's)")
    parser.add_argument("--kinds", type=_kinds, default=None, metavar="K,K",
                        help="point kinds: resid_pre, resid_post, attn_z, attn_out, mlp_hidden, mlp_out, sae "
                             "(default resid_post,mlp_hidden, plus sae with --sae)")
    parser.add_argument("--sae", default=None, metavar="PATH", help="an SAE whose latents are probed too")
    parser.add_argument("--layers", type=_int_list, default=None, metavar="I,J", help="layers to probe (default all)")
    parser.add_argument("--pooling", choices=["mean", "last"], default="mean",
                        help="a text's activation: mean over its tokens (the first left out) or the last token")
    parser.add_argument("--k", type=_int_list, default=(1, 2, 4, 8, 16, 32), metavar="K,K",
                        help="units per sparse probe (default 1,2,4,8,16,32)")
    parser.add_argument("--folds", type=int, default=5, help="cross-validation folds (default 5)")
    parser.add_argument("--select", choices=["mean_diff", "l1"], default="mean_diff",
                        help="how units are chosen inside a training fold (default mean_diff)")
    parser.add_argument("--top", type=int, default=8, help="top units listed per layer (default 8)")
    parser.add_argument("--out", default="out/probe", help="run folder (default out/probe)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    parser.set_defaults(func=cmd_probe)
