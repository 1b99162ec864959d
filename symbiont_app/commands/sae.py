"""`symbiont sae`: look at, search and score sparse autoencoders.

    symbiont sae inspect PATH [--latent I] [--model M]          config, fit to a model, a latent's record
    symbiont sae search  PATH --label TEXT                      latents by label
    symbiont sae search  PATH --contrast POS_FILE NEG_FILE      latents more active on one prompt set
    symbiont sae eval    PATH --model M --text FILE             FVU, L0, dead latents, loss recovered
    symbiont sae train   --out FOLDER [--model M] [--point P] [--corpus builtin|DIR] ...   train a TopK SAE

PATH is an SAE folder or file in any format `mlx_hooks.sae.formats` reads (SAELens,
Gemma Scope, Llama Scope, sparsify). Each sub-command is one ``_add_*`` function listed in
``SUBCOMMANDS``; adding another (e.g. ``train``) is one more function and one more entry.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

from symbiont_app import arg_types


def _load(args, model=None):
    """The SAE at args.path, with load warnings printed to stderr."""
    from mlx_hooks.sae.formats import load_sae

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sae = load_sae(args.path, model, hook_point=args.hook_point)
    for warning in caught:
        print(f"warning: {warning.message}", file=sys.stderr)
    return sae


def _loaded_model(args):
    from ..cli import load_from_args

    return load_from_args(args) if args.model else None


def read_texts(path: str | Path, one_per_line: bool) -> list[str]:
    """Texts of a .jsonl file (its ``text`` fields) or a .txt file (each non-empty line, or the whole file)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: file not found")
    content = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        from mlx_hooks.sae.corpus import read_jsonl_texts

        texts = read_jsonl_texts(path)
    elif one_per_line:
        texts = [line.strip() for line in content.splitlines() if line.strip()]
    else:
        texts = [content] if content.strip() else []
    if not texts:
        raise ValueError(f"{path}: no text in it")
    return texts


def _show_tokens(example) -> str:
    pieces = [t.replace("\n", "\\n") for t in example.tokens]
    pieces[example.focus] = f"[[{pieces[example.focus]}]]"
    return "".join(pieces)


# -- inspect -----------------------------------------------------------------------------------------
def cmd_inspect(args) -> int:
    from mlx_hooks.sae.features import load_feature_records
    from mlx_hooks.sae.formats import detect_format

    loaded = _loaded_model(args)
    sae = _load(args, loaded)
    cfg = sae.cfg
    kind, location = detect_format(args.path)
    print(f"path          {location} ({kind})")
    print(f"sae id        {cfg.sae_id}")
    print(f"architecture  {cfg.architecture}" + (f", k={cfg.k}" if cfg.k else ""))
    print(f"widths        d_in={cfg.d_in}, d_sae={cfg.d_sae} ({cfg.dtype})")
    print(f"hook point    {cfg.hook_point}")
    print(f"input         normalisation {cfg.normalisation}"
          + (f" (scale {cfg.input_scale:g})" if cfg.normalisation == "constant_scale" else "")
          + f", b_dec subtracted: {'yes' if cfg.apply_b_dec_to_input else 'no'}")
    print(f"model         {cfg.model_name or 'not recorded'}")
    recorded = cfg.model_fingerprint
    if recorded:
        from mlx_hooks.fingerprint import ModelFingerprint

        print(f"fingerprint   {ModelFingerprint.from_dict(recorded).short}")
    else:
        print("fingerprint   not recorded")
    if loaded is not None:
        print(f"fits          {loaded.name} ({loaded.fingerprint.short}): hook point and width check out")
    records = load_feature_records(location) if location.is_dir() else None
    if records is None:
        print("records       none (build them with mlx_hooks.sae.features.build_feature_records)")
    else:
        print(f"records       {len(records.records)} latents over {records.n_tokens} tokens; "
              f"{len(records.user_labels)} user labels")
    if args.latent is not None:
        if not 0 <= args.latent < cfg.d_sae:
            raise ValueError(f"latent {args.latent} is out of range (0..{cfg.d_sae - 1})")
        if records is None or sae.max_activations is None:
            raise ValueError(f"{location}: no feature records for these weights; cannot show latent {args.latent}")
        record = records.records[args.latent]
        print()
        user = records.user_labels.get(args.latent)
        print(f"latent {args.latent}: {records.label(args.latent)!r}" + (" (user label)" if user else " (automatic)"))
        print(f"  frequency {record.frequency:.4%}, max {record.max_activation:.3f}, "
              f"mean when active {record.mean_activation:.3f}")
        for example in record.top_contexts:
            print(f"  {example.value:8.3f}  text {example.text_index} token {example.position}: {_show_tokens(example)}")
        print("  promotes:   " + ", ".join(f"{t.text!r} {t.logit:+.2f}" for t in record.promoted))
        print("  suppresses: " + ", ".join(f"{t.text!r} {t.logit:+.2f}" for t in record.suppressed))
    return 0


def _add_inspect(sub) -> None:
    parser = sub.add_parser("inspect", help="an SAE's config, its fit to a model, and a latent's record")
    _add_common(parser, model_required=False)
    parser.add_argument("--latent", type=int, default=None, help="show this latent's record")
    parser.set_defaults(func=cmd_inspect)


# -- search ------------------------------------------------------------------------------------------
def cmd_search(args) -> int:
    from mlx_hooks.sae.search import contrast_latents, search_labels

    if args.label is not None:
        sae = _load(args)
        if sae.labels is None:
            raise ValueError(f"{args.path}: no labels (no feature records or labels.json beside the weights)")
        matches = search_labels(sae, args.label, limit=args.top)
        if not matches:
            print(f"no label matches {args.label!r}")
        for match in matches:
            print(f"{match.index:>7}  {match.score:5.1f}  {match.label}")
        return 0
    if not args.model:
        raise ValueError("--contrast needs --model (the prompts are run through it)")
    loaded = _loaded_model(args)
    sae = _load(args, loaded)
    positive, negative = (read_texts(p, one_per_line=True) for p in args.contrast)
    for title, direction in ((f"more active on {args.contrast[0]}", "a"), (f"more active on {args.contrast[1]}", "b")):
        found = contrast_latents(sae, loaded.model, loaded.tokenizer, positive, negative, top_n=args.top,
                                 direction=direction, max_seq_len=args.max_seq_len)
        print(title)
        print(f"{'latent':>7}  {'mean+':>8}  {'mean-':>8}  {'diff':>8}  label")
        for item in found:
            print(f"{item.index:>7}  {item.mean_a:8.4f}  {item.mean_b:8.4f}  {item.difference:+8.4f}  {item.label}")
    return 0


def _add_search(sub) -> None:
    parser = sub.add_parser("search", help="find latents by label, or by contrasting two prompt sets")
    _add_common(parser, model_required=False)
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--label", metavar="TEXT", help="words or part of a word of the label")
    what.add_argument("--contrast", nargs=2, metavar=("POS_FILE", "NEG_FILE"),
                      help="two prompt sets (.txt: one prompt per line, or .jsonl with a text field)")
    parser.add_argument("--top", type=int, default=20, help="how many latents to list")
    parser.add_argument("--max-seq-len", type=int, default=128, help="tokens per window when running prompts")
    parser.set_defaults(func=cmd_search)


# -- eval --------------------------------------------------------------------------------------------
def cmd_eval(args) -> int:
    from mlx_hooks.sae.activations import token_windows
    from mlx_hooks.sae.evaluate import evaluate_sae, format_loss_recovered

    loaded = _loaded_model(args)
    sae = _load(args, loaded)
    texts = read_texts(args.text, one_per_line=args.text.endswith(".jsonl"))
    windows = token_windows(loaded.tokenizer, texts, args.context)
    if len(windows) == 0:
        raise ValueError(f"{args.text}: fewer than {args.context} tokens; lower --context")
    result = evaluate_sae(loaded.model, sae, windows[: args.max_windows] if args.max_windows else windows)
    print(f"tokens               {result.tokens}")
    print(f"FVU                  {1.0 - result.variance_explained:.4f} (variance explained {result.variance_explained:.4f})")
    print(f"L0                   {result.l0:.2f} active latents per token")
    print(f"dead latents         {result.dead_fraction:.2%}")
    print(f"next-token loss      clean {result.clean_loss:.4f}, with SAE {result.sae_loss:.4f}, "
          f"zero-ablated {result.zero_ablation_loss:.4f} (nats)")
    print(f"loss recovered       {format_loss_recovered(result.loss_recovered)}")
    return 0


def _add_eval(sub) -> None:
    parser = sub.add_parser("eval", help="FVU, L0, dead latents and loss recovered on a text file")
    _add_common(parser, model_required=True)
    parser.add_argument("--text", required=True, metavar="FILE", help=".txt (one text) or .jsonl (a text field per line)")
    parser.add_argument("--context", type=int, default=128, help="tokens per window")
    parser.add_argument("--max-windows", type=int, default=0, help="evaluate at most this many windows (0: all)")
    parser.set_defaults(func=cmd_eval)


# -- wiring ------------------------------------------------------------------------------------------
def _add_common(parser: argparse.ArgumentParser, model_required: bool) -> None:
    from ..cli import add_model_args

    parser.add_argument("path", metavar="PATH", help="SAE folder or file (SAELens, Gemma Scope params.npz, Llama Scope, sparsify)")
    add_model_args(parser)
    if not model_required:
        parser.set_defaults(model=None)
    parser.add_argument("--hook-point", default=None,
                        help="override the SAE's hook point (e.g. resid_post.12, mlp_out.12, attn_z.12, mlp_hidden.12)")


def cmd_train(args) -> int:
    from mlx_hooks.sae.pipeline import RunConfig, export_sae, train_sae
    from mlx_hooks.sae.train import TrainConfig

    from ..cli import load_from_args

    loaded = load_from_args(args)
    train = TrainConfig(d_sae=args.d_sae, k=args.k, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                        seed=args.seed)
    run = RunConfig(hook_point=args.point, corpus=args.corpus, context_length=args.context_length, train=train)
    run_dir = Path(args.run_dir or Path(args.out).with_name(Path(args.out).name + ".run"))

    def stage(name, done, total):
        print(f"{name}: {done}/{total}", file=sys.stderr, flush=True)

    def report(r):
        print(f"step {r.step}/{r.steps}  tokens {r.tokens_seen}  mse {r.mse:.4f}  variance explained "
              f"{r.variance_explained:.3f}  L0 {r.l0:.1f}  dead {r.dead_fraction:.3f}", file=sys.stderr, flush=True)

    try:
        sae, evaluation = train_sae(loaded, run, run_dir, on_report=report, on_stage=stage)
    except KeyboardInterrupt:
        print(f"interrupted: run the same command again to resume from {run_dir}", file=sys.stderr)
        return 130
    if evaluation is None:
        print(f"not finished: run the same command again to resume from {run_dir}", file=sys.stderr)
        return 1
    print(json.dumps(evaluation.to_dict(), indent=1))
    export_sae(sae, loaded, run, run_dir, args.out, progress=lambda a, b: stage("feature records", a, b))
    print(f"saved {args.out} (SAELens format, training record, feature records)")
    return 0


def _add_train(sub) -> None:
    from ..cli import add_model_args

    parser = sub.add_parser("train", help="train a TopK SAE on a hook point (resumable: re-run to continue)")
    add_model_args(parser)
    parser.add_argument("--out", required=True, help="folder for the finished SAE (SAELens format)")
    parser.add_argument("--run-dir", help="working folder: corpus, activation buffer, checkpoints (default: OUT.run)")
    parser.add_argument("--point", default="resid_post.15", help="hook point, e.g. resid_post.15")
    parser.add_argument("--corpus", default="builtin",
                        help="'builtin' (Python's docs + model-written text) or a folder of .txt/.jsonl files")
    parser.add_argument("--context-length", type=arg_types.positive_int, default=128)
    parser.add_argument("--d-sae", type=arg_types.positive_int, default=4608, help="number of latents")
    parser.add_argument("--k", type=arg_types.positive_int, default=32, help="active latents per token")
    parser.add_argument("--steps", type=arg_types.positive_int, default=2400)
    parser.add_argument("--batch-size", type=arg_types.positive_int, default=512)
    parser.add_argument("--lr", type=arg_types.positive_float, default=4e-4)
    parser.add_argument("--seed", type=arg_types.seed, default=0)
    parser.set_defaults(func=cmd_train)


SUBCOMMANDS = (_add_inspect, _add_search, _add_eval, _add_train)
"""One function per `symbiont sae` sub-command; each adds its parser to the `sae` sub-parsers."""


def register(subparsers) -> None:
    sae = subparsers.add_parser("sae", help="sparse autoencoders: inspect, search, eval")
    sub = sae.add_subparsers(dest="sae_command", required=True)
    for add in SUBCOMMANDS:
        add(sub)
