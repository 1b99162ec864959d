"""`symbiont steer extract|apply|sweep`: steering vectors from the command line.

    symbiont steer extract --contrast happy_sad --layer 15 --chat-template -o happy.safetensors
    symbiont steer apply   --vector happy.safetensors=0.3 --prompt "Today I feel" --baseline
    symbiont steer sweep   --vector happy.safetensors --prompt "Today I feel" --coefficients -0.4 0 0.4

Coefficients are relative (× the vector's typical residual norm) unless ``--absolute``.
"""

from __future__ import annotations

import argparse
import math
import sys
from importlib import resources
from pathlib import Path

from symbiont_app import arg_types
from symbiont_app.cli import add_model_args, load_from_args


def _builtin_sets() -> str:
    folder = resources.files("mlx_hooks") / "contrast_sets"
    return ", ".join(sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".json")))


def parse_positions(text: str):
    """``all``/``prompt``/``generated``/``last`` or comma-separated absolute positions."""
    if text in ("all", "prompt", "generated", "last"):
        return text
    try:
        return tuple(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"positions {text!r}: use all, prompt, generated, last or e.g. 3,4,5") from None


def parse_vector_spec(text: str, need_coefficient: bool = True) -> tuple[Path, str | None, float | None]:
    """``FILE[:NAME][=COEF]`` → (file, vector name or None for all, coefficient)."""
    coefficient = None
    spec = text
    if "=" in text:
        spec, _, value = text.rpartition("=")
        try:
            coefficient = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"--vector {text!r}: {value!r} is not a number") from None
        if not math.isfinite(coefficient):
            raise argparse.ArgumentTypeError(f"--vector {text!r}: the coefficient must be a finite number")
    elif need_coefficient:
        raise argparse.ArgumentTypeError(f"--vector {text!r}: give a coefficient, FILE[:NAME]=COEF")
    path, name = Path(spec), None
    if not path.exists() and ":" in spec:
        head, _, name = spec.rpartition(":")
        path = Path(head)
    return path, name, coefficient


def load_vector_specs(specs) -> list[tuple]:
    """[(SteeringVector, coefficient)] for ``--vector`` arguments (all vectors of a file unless named)."""
    from mlx_hooks.steering import SteeringError
    from mlx_hooks.vector_file import load_vectors

    chosen = []
    for path, name, coefficient in specs:
        vectors = load_vectors(path)
        if name is not None:
            if name not in vectors:
                raise SteeringError(f"{path}: has no vector {name!r} (it holds: {', '.join(sorted(vectors))})")
            vectors = {name: vectors[name]}
        chosen.extend((v, coefficient) for v in vectors.values())
    return chosen


def add_sampling_args(parser: argparse.ArgumentParser, default_temp: float | None = 0.0) -> None:
    parser.add_argument("--temp", type=arg_types.nonnegative_float, default=default_temp, help="temperature; 0 = greedy")
    parser.add_argument("--top-p", type=arg_types.probability, default=None, help="in [0, 1]; 0 or 1 = off")
    parser.add_argument("--min-p", type=arg_types.probability, default=None, help="in [0, 1]; 0 = off")
    parser.add_argument("--top-k", type=arg_types.nonnegative_int, default=None, help="0 = off")
    parser.add_argument("--seed", type=arg_types.seed, default=None, help="a whole number in [0, 2^64)")


def sampling_from_args(args, base=None):
    """SamplingSettings from flags; flags left unset keep ``base``'s values (a preset's)."""
    from dataclasses import replace

    from mlx_hooks.sampling import SamplingSettings

    settings = base or SamplingSettings()
    given = {k: getattr(args, k) for k in ("temp", "top_p", "min_p", "top_k", "seed") if getattr(args, k) is not None}
    return replace(settings, **given)


# -- extract -----------------------------------------------------------------------------------------
def cmd_extract(args) -> int:
    from mlx_hooks.contrast import ContrastSet, load_contrast_set
    from mlx_hooks.steering import SteeringError, extract_steering_vector
    from mlx_hooks.vector_file import save_vectors

    if args.contrast:
        contrast = load_contrast_set(args.contrast)
    elif args.positive and args.negative:
        contrast = ContrastSet("command-line", tuple(args.positive), tuple(args.negative),
                               paired=len(args.positive) == len(args.negative))
    else:
        raise SteeringError("give --contrast NAME|FILE, or --positive and --negative prompts")
    if not args.output and not args.preset:
        raise SteeringError("give --output FILE.safetensors and/or --preset FILE.json|.symbiont-preset")
    loaded = load_from_args(args)
    name = args.name or "".join(c if c.isalnum() or c in "_.-" else "_" for c in contrast.name)[:64]
    vector = extract_steering_vector(
        loaded.model, loaded.tokenizer, contrast.positive, contrast.negative, name=name, hook_point=args.point,
        layer=args.layer, method=args.method, tokens=args.tokens, chat_template=args.chat_template,
        system_prompt=args.system, source=contrast.source_summary(),
    )
    print(f"{vector.name}: {vector.method} at {vector.hook_point} ({vector.token_mode} token"
          f"{'' if vector.token_mode == 'last' else 's'}) from {len(contrast.positive)} positive / "
          f"{len(contrast.negative)} negative prompts; norm {vector.norm:.3f}, typical residual norm "
          f"{vector.typical_norm:.3f}" + (f", PCA explains {vector.source['pca_explained']:.1%}"
                                          if "pca_explained" in vector.source else ""))
    if args.output:
        save_vectors(args.output, [vector])
        print(f"wrote {args.output}")
    if args.preset:
        from mlx_hooks.presets import Preset, SteeringEntry, write_preset

        preset = Preset(
            name=vector.name, target_model_name=loaded.name, fingerprint=loaded.fingerprint,
            description=f"{contrast.positive_label} vs {contrast.negative_label} ({contrast.name})",
            interventions=[SteeringEntry(vector.name, vector.hook_point, args.coefficient, not args.absolute,
                                         args.positions)],
            vectors={vector.name: vector},
        )
        for path in write_preset(args.preset, preset):
            print(f"wrote {path}")
    return 0


# -- apply -----------------------------------------------------------------------------------------------
def _generate(loaded, ids, interventions, sampling, max_tokens) -> None:
    from mlx_hooks.generate import hooked_stream_generate

    for step in hooked_stream_generate(loaded.model, loaded.tokenizer, ids, max_tokens=max_tokens, sampling=sampling,
                                       interventions=interventions, top_k=0):
        sys.stdout.write(step.text)
        sys.stdout.flush()
    sys.stdout.write("\n")


def cmd_apply(args) -> int:
    from mlx_hooks.steering import SteeringError, SteeringSet, prompt_tokens

    if not args.vector and not args.preset:
        raise SteeringError("give --vector FILE[:NAME]=COEF (repeatable) and/or --preset FILE")
    chosen = load_vector_specs(args.vector or [])  # read the files before the model: fail fast
    loaded = load_from_args(args)
    interventions: dict[str, list] = {}
    sampling = None
    if args.preset:
        import warnings

        from mlx_hooks.preset_apply import import_preset

        with warnings.catch_warnings():  # printed below as notes
            warnings.simplefilter("ignore")
            from mlx_hooks.sae.registry import make_resolver

            applied = import_preset(args.preset, loaded.model, loaded.fingerprint, sae_resolver=make_resolver(loaded),
                                    allow_different_weights=args.allow_different_weights)
        for message in applied.messages:
            print(f"note: {message}", file=sys.stderr)
        interventions = {k: list(v) for k, v in applied.interventions.items()}
        sampling = applied.sampling
    steering = SteeringSet(loaded.model)
    for vector, coefficient in chosen:
        steering.add(vector, coefficient, relative=not args.absolute, positions=args.positions, hook_point=args.point)
    for point, items in steering.interventions().items():
        interventions.setdefault(point, []).extend(items)
    sampling = sampling_from_args(args, sampling)
    ids = prompt_tokens(loaded.tokenizer, args.prompt, args.chat_template, args.system)
    for applied_vector in steering.applied:
        mode = "× typical norm" if applied_vector.relative else "absolute"
        print(f"steering: {applied_vector.vector.name} at {applied_vector.hook_point}, coefficient "
              f"{applied_vector.coefficient:g} ({mode}), positions {applied_vector.positions}", file=sys.stderr)
    if args.baseline:
        print("-- baseline --")
        _generate(loaded, ids, None, sampling, args.max_tokens)
        print("-- steered --")
    _generate(loaded, ids, interventions, sampling, args.max_tokens)
    return 0


# -- sweep -----------------------------------------------------------------------------------------------
def cmd_sweep(args) -> int:
    from mlx_hooks.steering import SteeringError
    from mlx_hooks.sweep import format_sweep, steering_sweep

    chosen = load_vector_specs([parse_vector_spec(args.vector, need_coefficient=False)])
    if len(chosen) != 1:
        raise SteeringError(f"{args.vector}: holds {len(chosen)} vectors; choose one with FILE:NAME")
    vector = chosen[0][0]
    loaded = load_from_args(args)
    rows = steering_sweep(
        loaded.model, loaded.tokenizer, args.prompt, vector, args.coefficients, relative=not args.absolute,
        positions=args.positions, hook_point=args.point, probe_positive=args.probe_positive,
        probe_negative=args.probe_negative, max_tokens=args.max_tokens, chat_template=args.chat_template,
        system_prompt=args.system, sampling=sampling_from_args(args),
    )
    unit = "× typical norm" if not args.absolute else "absolute"
    print(f"{vector.name} at {args.point or vector.hook_point}, coefficients {unit}; proj = mean residual·v̂ over "
          "generated positions; ±lp = mean log-prob of positive/negative probe tokens at the first generated "
          "position (@1) and over all generated positions")
    print(format_sweep(rows))
    return 0


def register(subparsers) -> None:
    steer = subparsers.add_parser("steer", help="steering vectors: extract, apply, sweep coefficients")
    sub = steer.add_subparsers(dest="steer_command", required=True)

    extract = sub.add_parser("extract", help="extract a steering vector from contrasting prompts")
    add_model_args(extract)
    extract.add_argument("--contrast", help=f"built-in contrast set ({_builtin_sets()}) or a .json/.jsonl file")
    extract.add_argument("--positive", nargs="+", type=arg_types.nonempty_text,
                         help="positive prompts (instead of --contrast)")
    extract.add_argument("--negative", nargs="+", type=arg_types.nonempty_text,
                         help="negative prompts (instead of --contrast)")
    extract.add_argument("--point", help="hook point, e.g. resid_post.15 (default resid_post.<layer>)")
    extract.add_argument("--layer", type=int, help="layer for resid_post.<layer> (default: the middle one)")
    extract.add_argument("--method", choices=["mean_diff", "pca"], default="mean_diff")
    extract.add_argument("--tokens", choices=["last", "mean"], default="last", help="read the last token or the mean")
    extract.add_argument("--chat-template", action="store_true", help="wrap each prompt as a user message")
    extract.add_argument("--system", type=arg_types.text, help="system prompt (with --chat-template)")
    extract.add_argument("--name", help="vector name (default: the contrast set's)")
    extract.add_argument("-o", "--output", help="write the vector to this .safetensors file")
    extract.add_argument("--preset", help="also write a preset (.json + sidecar, or .symbiont-preset)")
    extract.add_argument("--coefficient", type=arg_types.finite_float, default=0.2, help="the preset's coefficient")
    extract.add_argument("--absolute", action="store_true", help="the preset's coefficient is absolute")
    extract.add_argument("--positions", type=parse_positions, default="all", help="the preset's positions")
    extract.set_defaults(func=cmd_extract)

    apply = sub.add_parser("apply", help="generate with steering vectors and/or a preset")
    add_model_args(apply)
    apply.add_argument("--prompt", required=True, type=arg_types.nonempty_text)
    apply.add_argument("--vector", action="append", type=parse_vector_spec, metavar="FILE[:NAME]=COEF",
                       help="vector file and coefficient (repeatable)")
    apply.add_argument("--preset", help="a preset file (.json or .symbiont-preset)")
    apply.add_argument("--allow-different-weights", action="store_true",
                       help="load a preset made for the same architecture with other weights")
    apply.add_argument("--absolute", action="store_true", help="--vector coefficients are absolute")
    apply.add_argument("--positions", type=parse_positions, default="all")
    apply.add_argument("--point", help="apply --vector at this hook point instead of its own")
    apply.add_argument("--chat-template", action="store_true", help="wrap the prompt as a user message")
    apply.add_argument("--system", type=arg_types.text, help="system prompt (with --chat-template)")
    apply.add_argument("--max-tokens", type=arg_types.max_tokens, default=64)
    apply.add_argument("--baseline", action="store_true", help="first generate without steering, for comparison")
    add_sampling_args(apply, default_temp=None)
    apply.set_defaults(func=cmd_apply)

    sweep = sub.add_parser("sweep", help="generate one prompt across coefficients and measure the effect")
    add_model_args(sweep)
    sweep.add_argument("--vector", required=True, metavar="FILE[:NAME]")
    sweep.add_argument("--prompt", required=True, type=arg_types.nonempty_text)
    sweep.add_argument("--coefficients", type=arg_types.finite_float, nargs="+", default=[-0.4, -0.2, 0.0, 0.2, 0.4])
    sweep.add_argument("--absolute", action="store_true", help="coefficients are absolute")
    sweep.add_argument("--positions", type=parse_positions, default="all")
    sweep.add_argument("--point", help="apply at this hook point instead of the vector's own")
    sweep.add_argument("--probe-positive", nargs="+", help="probe words (default: the contrast set's)")
    sweep.add_argument("--probe-negative", nargs="+")
    sweep.add_argument("--chat-template", action="store_true")
    sweep.add_argument("--system", type=arg_types.text)
    sweep.add_argument("--max-tokens", type=arg_types.max_tokens, default=16)
    add_sampling_args(sweep)
    sweep.set_defaults(func=cmd_sweep)
