"""`symbiont preset export|import|show`: steering presets from the command line.

    symbiont preset export --vector happy.safetensors=0.3 --name cheerful -o cheerful.symbiont-preset --gguf cheerful.gguf
    symbiont preset export --from cheerful.json -o cheerful.symbiont-preset     # convert, no model needed
    symbiont preset import cheerful.symbiont-preset [--model M] [--allow-different-weights]
    symbiont preset import happy.gguf -o happy.symbiont-preset           # a llama.cpp control vector
    symbiont preset show cheerful.json
"""

from __future__ import annotations

import sys

from symbiont_app.cli import add_model_args, load_from_args

from .steer import add_sampling_args, load_vector_specs, parse_positions, parse_vector_spec, sampling_from_args


def _describe_positions(positions) -> str:
    return positions if isinstance(positions, str) else ",".join(str(p) for p in positions)


def print_preset(preset, out=None) -> None:
    out = out or sys.stdout  # looked up at call time: tests and the app swap sys.stdout
    fp = preset.fingerprint
    print(f"preset {preset.name!r}  (created with {preset.created_with.get('name')} "
          f"{preset.created_with.get('version')})", file=out)
    if preset.description:
        print(f"  {preset.description}", file=out)
    print(f"target model: {preset.target_model_name}  [{fp.short}: {fp.architecture}, {fp.n_layers} layers, "
          f"d_model {fp.d_model}, vocab {fp.vocab_size}]", file=out)
    s = preset.sampling
    print(f"sampling: temp {s.temp:g}, top_p {s.top_p:g}, min_p {s.min_p:g}, top_k {s.top_k}, seed {s.seed}", file=out)
    print(f"interventions ({len(preset.interventions)}):", file=out)
    for i, e in enumerate(preset.interventions):
        if hasattr(e, "vector"):
            unit = "× typical norm" if e.relative else "absolute"
            print(f"  [{i}] steering  {e.vector:<20} at {e.hook_point:<14} coefficient {e.coefficient:g} ({unit}), "
                  f"positions {_describe_positions(e.positions)}", file=out)
        else:
            value = f"{e.value:g}" + (" × max activation" if e.value_mode == "max_multiple" else "")
            print(f"  [{i}] sae_clamp {e.sae_id} latent {e.latent} ({e.label!r}) at {e.hook_point} = {value}, "
                  f"positions {_describe_positions(e.positions)}", file=out)
    if preset.vectors:
        print("vectors:", file=out)
        for name, v in sorted(preset.vectors.items()):
            origin = v.source.get("contrast_set", "prompts")
            print(f"  {name:<20} [{v.d_model}] {v.method} at {v.hook_point}, norm {v.norm:.3f}, typical residual "
                  f"norm {v.typical_norm:.3f}, from {origin}", file=out)
    for note in preset.notes:
        print(f"note: {note}", file=out)


def cmd_export(args) -> int:
    from mlx_hooks.control_vector import export_preset_control_vector
    from mlx_hooks.presets import Preset, PresetError, SteeringEntry, read_preset, write_preset

    if not args.output and not args.gguf:
        raise PresetError("give -o/--output (.json or .symbiont-preset) and/or --gguf FILE.gguf")
    if args.source:
        if args.vector:
            raise PresetError("--from re-exports a preset as it is; leave out --vector")
        preset = read_preset(args.source)
    else:
        if not args.vector:
            raise PresetError("give --vector FILE[:NAME]=COEF (repeatable), or --from PRESET")
        if not args.name:
            raise PresetError("give the preset a --name")
        chosen = load_vector_specs(args.vector)
        names = [v.name for v, _ in chosen]
        if len(set(names)) != len(names):
            raise PresetError(f"vector names repeat ({names}); rename one with `symbiont steer extract --name`")
        loaded = load_from_args(args)
        preset = Preset(
            name=args.name, target_model_name=loaded.name, fingerprint=loaded.fingerprint,
            description=args.description or "", sampling=sampling_from_args(args),
            interventions=[SteeringEntry(v.name, args.point or v.hook_point, c, not args.absolute, args.positions)
                           for v, c in chosen],
            vectors={v.name: v for v, _ in chosen},
        )
        if preset.fingerprint.d_model != chosen[0][0].d_model:
            raise PresetError(f"vector {chosen[0][0].name!r} has width {chosen[0][0].d_model}, "
                              f"{loaded.name} has {preset.fingerprint.d_model}")
    if args.output:
        for path in write_preset(args.output, preset):
            print(f"wrote {path}")
    if args.gguf:
        for note in export_preset_control_vector(args.gguf, preset):
            print(f"note: {note}", file=sys.stderr)
        print(f"wrote {args.gguf} (llama.cpp control vector; use with --control-vector)")
    return 0


def cmd_import(args) -> int:
    import warnings

    from mlx_hooks.control_vector import open_control_vector, read_control_vector
    from mlx_hooks.preset_apply import apply_preset, check_compatibility
    from mlx_hooks.presets import read_preset, write_preset

    # file problems first, before the model loads
    control_vector = args.file.lower().endswith(".gguf")
    if control_vector:
        open_control_vector(args.file)
    else:
        preset = read_preset(args.file)
    loaded = load_from_args(args)
    if control_vector:
        preset = read_control_vector(args.file, fingerprint=loaded.fingerprint, model_name=loaded.name)
        print(f"{args.file}: llama.cpp control vector, {len(preset.steering)} direction(s) at "
              f"{', '.join(e.hook_point for e in preset.steering)}")
    else:
        verdict = check_compatibility(preset.fingerprint, loaded.fingerprint)
        print(f"{args.file}: {verdict.describe()}")
    with warnings.catch_warnings():  # the messages are printed below, once
        warnings.simplefilter("ignore")
        from mlx_hooks.sae.registry import make_resolver

        applied = apply_preset(preset, loaded.model, loaded.fingerprint, sae_resolver=make_resolver(loaded),
                               allow_different_weights=args.allow_different_weights)
    for message in applied.messages:
        print(f"warning: {message}", file=sys.stderr)
    count = sum(len(v) for v in applied.interventions.values())
    print(f"ok: {count} intervention(s) at {', '.join(applied.interventions) or 'no hook points'} ready for "
          f"{loaded.name}")
    if args.output:
        for path in write_preset(args.output, preset):
            print(f"wrote {path}")
    return 0


def cmd_show(args) -> int:
    from mlx_hooks.presets import read_preset

    print_preset(read_preset(args.file))
    return 0


def register(subparsers) -> None:
    preset = subparsers.add_parser("preset", help="steering presets: export, import (check), show")
    sub = preset.add_subparsers(dest="preset_command", required=True)

    export = sub.add_parser("export", help="build a preset from vector files (or convert one) and/or a control vector")
    add_model_args(export)
    export.add_argument("--vector", action="append", type=parse_vector_spec, metavar="FILE[:NAME]=COEF",
                        help="vector file and coefficient (repeatable)")
    export.add_argument("--from", dest="source", metavar="PRESET", help="re-export this preset (no model needed)")
    export.add_argument("--name", help="preset name (letters, digits, _ . -)")
    export.add_argument("--description")
    export.add_argument("--absolute", action="store_true", help="coefficients are absolute (default: × typical norm)")
    export.add_argument("--positions", type=parse_positions, default="all")
    export.add_argument("--point", help="apply the vectors at this hook point instead of their own")
    add_sampling_args(export)
    export.add_argument("-o", "--output", help="FILE.json (+ FILE.safetensors) or FILE.symbiont-preset")
    export.add_argument("--gguf", help="also write the steering as a llama.cpp control-vector GGUF")
    export.set_defaults(func=cmd_export)

    imp = sub.add_parser("import", help="check a preset (or read a llama.cpp control-vector .gguf) against a model")
    imp.add_argument("file", help=".json, .symbiont-preset, or a llama.cpp control vector .gguf")
    add_model_args(imp)
    imp.add_argument("--allow-different-weights", action="store_true",
                     help="accept a preset made for the same architecture with other weights (with a warning)")
    imp.add_argument("-o", "--output", help="also save it as a preset (.json + .safetensors, or .symbiont-preset)")
    imp.set_defaults(func=cmd_import)

    show = sub.add_parser("show", help="print a preset's contents")
    show.add_argument("file")
    show.set_defaults(func=cmd_show)
