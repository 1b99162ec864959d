"""`symbiont`: the command line.

    symbiont chat   [--prompt TEXT] [--show prob|entropy|both] ...   stream a reply (or a REPL)
    symbiont lens   --prompt TEXT                                    logit lens, layers x positions
    symbiont patch  --clean TEXT --corrupted TEXT --answers A B      activation patching
    symbiont models list|info|import|estimate|download               what models and backend there are
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from mlx_hooks.backend import reexec_with_fast_blas

from . import arg_types

GIB = 2**30


def add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", default="default",
        help="'default' (embedded SmolLM2-135M-Instruct), a Hugging Face repo id, a model folder, or a .gguf file",
    )
    parser.add_argument(
        "--dtype", default="auto", choices=["auto", "stored", "float32", "bfloat16", "float16"],
        help="run-time precision of the weights; auto: as stored on a GPU, float32 on the CPU backend",
    )
    parser.add_argument(
        "--memory-budget", type=arg_types.positive_float, default=None, metavar="GB",
        help="refuse to load past this many GiB (default: SYMBIONT_MEMORY_BUDGET_GB, else the smaller of 75%% of "
             "RAM and Metal's recommended working set, less what other Symbiont processes hold)",
    )


def load_from_args(args, capture_points: int = 0):
    from mlx_hooks.hub import looks_like_repo_id
    from mlx_hooks.loader import load_model
    from mlx_hooks.memory import default_budget_bytes

    budget = -1 if args.memory_budget is None else int(args.memory_budget * GIB)
    if looks_like_repo_id(args.model):  # not cached: estimate, verdict, then a download with a progress bar
        from .hub_terminal import fetch_with_progress

        fetch_with_progress(args.model, runtime_dtype=args.dtype, capture_points=capture_points,
                            budget_bytes=default_budget_bytes() if budget == -1 else budget)
    print(f"loading {args.model} ...", file=sys.stderr, flush=True)
    loaded = load_model(args.model, runtime_dtype=args.dtype, memory_budget_bytes=budget, capture_points=capture_points)
    _warn_slow_blas()
    return loaded


def _warn_slow_blas() -> None:
    from mlx_hooks.backend import backend_info

    warning = backend_info().slow_blas_warning
    if warning:
        print(f"warning: {warning}", file=sys.stderr)


# -- chat ------------------------------------------------------------------------------------------
def _shade(step, show: str) -> str:
    """Text piece with its probability/entropy, for --show."""
    if show == "prob":
        return f"{step.text}[{step.prob:.2f}]"
    if show == "entropy":
        return f"{step.text}[{step.raw_entropy:.2f}b]"
    return f"{step.text}[p={step.prob:.2f} H={step.raw_entropy:.2f}b]"


def cmd_chat(args) -> int:
    from mlx_hooks.chat import ChatSession
    from mlx_hooks.sampling import SamplingSettings

    # the settings are checked together before the model loads (each flag was checked on its own by argparse)
    sampling = SamplingSettings(temp=args.temp, top_p=args.top_p, min_p=args.min_p, top_k=args.top_k, seed=args.seed)
    loaded = load_from_args(args)
    chat = ChatSession(loaded.model, loaded.tokenizer, system_prompt=args.system)

    def answer(text: str) -> None:
        steps = []
        for step in chat.send(text, max_tokens=args.max_tokens, sampling=sampling, top_k=args.alternatives):
            steps.append(step)
            sys.stdout.write(step.text if args.show == "none" else _shade(step, args.show))
            sys.stdout.flush()
        sys.stdout.write("\n")
        if args.show != "none" and steps:
            mean_h = sum(s.raw_entropy for s in steps) / len(steps)
            mean_p = sum(s.prob for s in steps) / len(steps)
            print(f"-- {len(steps)} tokens, mean p {mean_p:.3f}, mean entropy {mean_h:.3f} bits, "
                  f"{steps[-1].generation_tps:.1f} tok/s", file=sys.stderr)

    if args.prompt is not None:
        answer(args.prompt)
        return 0
    print(f"chatting with {loaded.name} (empty line or Ctrl-D to quit)", file=sys.stderr)
    while True:
        try:
            line = input("> ")
        except EOFError:
            break
        if not line.strip():
            break
        try:
            arg_types.check_text(line, "input")
        except ValueError as exc:
            print(f"symbiont: error: {exc}", file=sys.stderr)
            continue
        answer(line)
    return 0


# -- lens ------------------------------------------------------------------------------------------
def cmd_lens(args) -> int:
    from mlx_hooks.lens import run_logit_lens

    loaded = load_from_args(args)
    tokens = _prompt_tokens(loaded.tokenizer, args.prompt, args.chat_template)
    if not tokens:
        raise ValueError(f"--prompt {args.prompt!r}: encodes to no tokens; give some text")
    result = run_logit_lens(loaded.model, tokens, k=1, kind=args.kind)
    tok = loaded.tokenizer
    columns = range(max(0, len(tokens) - args.last), len(tokens))
    width = args.width
    header = "layer".ljust(14) + "".join(_cell(tok.decode([tokens[c]]), width) for c in columns)
    print(header)
    for row, point in enumerate(result.points):
        cells = "".join(
            _cell(f"{tok.decode([int(result.top_tokens[row, c, 0])])} {result.top_probs[row, c, 0]:.2f}", width)
            for c in columns
        )
        print(point.ljust(14) + cells)
    return 0


def _cell(text: str, width: int) -> str:
    text = text.replace("\n", "\\n")
    return (text[: width - 1] if len(text) >= width else text).ljust(width)


def _prompt_tokens(tokenizer, text: str, chat_template: bool) -> list[int]:
    if chat_template and getattr(tokenizer, "chat_template", None):
        return list(tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True))
    return list(tokenizer.encode(text))


# -- patch -----------------------------------------------------------------------------------------
def cmd_patch(args) -> int:
    from mlx_hooks.patching import activation_patching

    loaded = load_from_args(args)
    tok = loaded.tokenizer
    clean, corrupted = list(tok.encode(args.clean)), list(tok.encode(args.corrupted))
    answers = []
    for word in args.answers:
        ids = list(tok.encode(word))
        if not ids:
            raise ValueError(f"--answers {word!r}: encodes to no tokens; give a word such as ' Paris'")
        if len(ids) != 1:
            print(f"note: answer {word!r} is {len(ids)} tokens; using its first, {tok.decode(ids[:1])!r}", file=sys.stderr)
        answers.append(ids[0])
    result = activation_patching(loaded.model, clean, corrupted, (answers[0], answers[1]), kind=args.kind)
    print(f"logit diff clean {result.clean_logit_diff:.3f}, corrupted {result.corrupted_logit_diff:.3f}")
    print("layer".ljust(14) + "".join(_cell(tok.decode([t]), args.width) for t in clean))
    for row, layer in enumerate(result.layers):
        print(f"{args.kind}.{layer}".ljust(14) + "".join(f"{v:+.2f}".ljust(args.width) for v in result.scores[row]))
    layer, pos, score = result.best()
    print(f"strongest: {args.kind}.{layer} at position {pos} ({tok.decode([clean[pos]])!r}), score {score:.2f}")
    return 0


# -- models ----------------------------------------------------------------------------------------
def cmd_models(args) -> int:
    from mlx_hooks import loader

    if args.action == "info":
        from mlx_hooks.backend import backend_info

        print(backend_info().summary())
        try:
            print(f"default model: {loader.DEFAULT_MODEL_NAME} at {loader.default_model_path()}")
        except Exception as exc:  # noqa: BLE001 - report, do not fail `info`
            print(f"default model: not available ({exc})")
        if args.spec:
            from pathlib import Path

            from mlx_hooks import hub
            from mlx_hooks.architectures import describe

            source = loader.resolve_source(args.spec)
            if source.kind == "hub" and hub.cached_snapshot(source.location) is None:
                # Not downloaded: the repo's config.json is all `info` needs (no weights fetched).
                folder, config = Path(source.location), hub.plan_download(source.location).config
            else:
                folder = loader.folder_for(source)
                config = loader.read_config(folder)
            print(f"\n{args.spec} ({folder})")
            for line in describe(loader.model_dims(folder, config)):
                print(f"  {line}")
        return 0
    if args.action == "list":
        from mlx_hooks.gguf_convert import default_cache_dir

        try:
            print(f"default\t{loader.DEFAULT_MODEL_NAME}\t{loader.default_model_path()}")
        except Exception as exc:  # noqa: BLE001
            print(f"default\t(not installed: {exc})")
        from mlx_hooks.gguf_cache import read_record

        converted = default_cache_dir() / "models" / "gguf"
        for folder in sorted(converted.glob("*")) if converted.is_dir() else []:
            # hidden: conversions in progress or killed mid-way; no source record: not a finished conversion
            if folder.is_dir() and not folder.name.startswith(".") and read_record(folder) is not None:
                print(f"gguf\t{folder.name}\t{folder}")
        try:
            from huggingface_hub import scan_cache_dir

            for repo in sorted(scan_cache_dir().repos, key=lambda r: r.repo_id):
                if repo.repo_type == "model":
                    print(f"hub\t{repo.repo_id}\t{repo.size_on_disk / 2**20:.0f} MiB")
        except Exception:  # noqa: BLE001 - no hub cache yet
            pass
        return 0
    if args.action == "import":
        if not args.spec or not args.spec.lower().endswith(".gguf"):
            print("symbiont models import: give a .gguf file", file=sys.stderr)
            return 2
        folder = loader.folder_for(loader.resolve_source(args.spec))
        print(f"converted {args.spec} -> {folder}")
        return 0
    if args.action == "download":
        from mlx_hooks.hub import looks_like_repo_id

        from .hub_terminal import fetch_with_progress

        if not args.spec or not looks_like_repo_id(args.spec):
            print("symbiont models download: give a Hugging Face repo id (org/name)", file=sys.stderr)
            return 2
        budget = loader.default_budget_bytes() if args.memory_budget is None else int(args.memory_budget * GIB)
        folder = fetch_with_progress(args.spec, runtime_dtype=args.dtype, context_tokens=args.context,
                                     capture_points=args.capture_points, budget_bytes=budget)
        print(folder)
        return 0
    from mlx_hooks.config_presets import is_preset

    if args.action == "estimate" and args.spec and (is_preset(args.spec) or args.spec.endswith(".json")):
        return estimate_on_paper(args)
    if args.action == "estimate":
        from mlx_hooks.memory import memory_budget

        estimate = loader.estimate_for(args.spec or "default", args.dtype, args.context, args.capture_points)
        print(estimate.describe())
        if args.memory_budget is None:
            budget_now = memory_budget()
            budget = budget_now.bytes
            print(budget_now.describe())  # which limit binds: RAM share, Metal's working set, others' claims
        else:
            budget = int(args.memory_budget * GIB)
        fits = "fits" if estimate.total_bytes <= budget else "does NOT fit"
        print(f"budget {budget / GIB:.2f} GiB: {fits}")
        return 0
    return 2


def estimate_on_paper(args) -> int:
    """``models estimate`` of a preset or a config.json: the model built lazily, measured, judged
    against a Mac of ``--machine-memory`` (see :mod:`mlx_hooks.scale_estimate`)."""
    from mlx_hooks.config_presets import PUBLISHED_PARAMS, config_from_spec
    from mlx_hooks.scale_estimate import estimate_scale, format_scale, paper_model

    name, config = config_from_spec(args.spec)
    dtype = args.dtype if args.dtype in ("float32", "float16", "bfloat16") else "bfloat16"
    model = paper_model(name, config, bits=args.bits, dtype=dtype)
    estimate = estimate_scale(model, args.context, args.capture_points, args.capture_kind, args.sae_width,
                              args.sae_kind, args.machine_memory, args.memory_budget, args.chip, args.bandwidth)
    print(format_scale(estimate, PUBLISHED_PARAMS.get(name)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="symbiont", description="Look inside a language model while it talks.")
    sub = parser.add_subparsers(dest="command", required=True)

    chat = sub.add_parser("chat", help="chat with a model, streaming tokens")
    add_model_args(chat)
    chat.add_argument("--prompt", type=arg_types.text, help="answer this one message and exit (for scripts)")
    chat.add_argument("--system", type=arg_types.text, help="system prompt")
    chat.add_argument("--max-tokens", type=arg_types.max_tokens, default=256, help="-1: up to the context length")
    chat.add_argument("--temp", type=arg_types.nonnegative_float, default=0.7, help="temperature; 0 = greedy")
    chat.add_argument("--top-p", type=arg_types.probability, default=0.0, help="nucleus mass in [0, 1]; 0 or 1 = off")
    chat.add_argument("--min-p", type=arg_types.probability, default=0.0, help="in [0, 1]; 0 = off")
    chat.add_argument("--top-k", type=arg_types.nonnegative_int, default=0, help="0 = off")
    chat.add_argument("--seed", type=arg_types.seed, default=None, help="a whole number in [0, 2^64)")
    chat.add_argument("--alternatives", type=arg_types.nonnegative_int, default=5,
                      help="top-k alternatives recorded per token")
    chat.add_argument(
        "--show", choices=["none", "prob", "entropy", "both"], default="none",
        help="annotate each token with its probability and/or the entropy (bits) of the distribution it came from",
    )
    chat.set_defaults(func=cmd_chat)

    lens = sub.add_parser("lens", help="logit lens: the top token each layer would predict at each position")
    add_model_args(lens)
    lens.add_argument("--prompt", required=True, type=arg_types.nonempty_text)
    lens.add_argument("--chat-template", action="store_true", help="wrap the prompt as a user message")
    lens.add_argument("--kind", default="resid_post", choices=["resid_pre", "resid_post"])
    lens.add_argument("--last", type=arg_types.positive_int, default=8, help="show the last N positions")
    lens.add_argument("--width", type=arg_types.positive_int, default=12, help="column width")
    lens.set_defaults(func=cmd_lens)

    patch = sub.add_parser("patch", help="activation patching: which layer and position carries the answer")
    add_model_args(patch)
    patch.add_argument("--clean", required=True, type=arg_types.nonempty_text,
                       help="clean prompt, e.g. 'The Eiffel Tower is in the city of'")
    patch.add_argument("--corrupted", required=True, type=arg_types.nonempty_text,
                       help="corrupted prompt with the same token count")
    patch.add_argument("--answers", nargs=2, required=True, type=arg_types.nonempty_text, metavar=("CLEAN", "CORRUPTED"),
                       help="e.g. ' Paris' ' Rome'")
    patch.add_argument("--kind", default="resid_pre",
                       choices=["resid_pre", "resid_post", "attn_out", "mlp_out", "attn_z", "mlp_hidden"])
    patch.add_argument("--width", type=arg_types.positive_int, default=9)
    patch.set_defaults(func=cmd_patch)

    models = sub.add_parser(
        "models", help="list models, show backend/BLAS, import a GGUF, estimate memory, download a hub repo",
        description="estimate reads a hub repo's safetensors headers without downloading its weights; download "
                    "checks that estimate against the memory budget first, then fetches with a progress bar "
                    "(Ctrl-C cancels; a new run resumes from the files already complete)")
    models.add_argument("action", choices=["list", "info", "import", "estimate", "download"])
    models.add_argument("spec", nargs="?",
                        help="model for info/import/estimate/download (GGUF file, folder, repo id, default)")
    models.add_argument("--dtype", default="auto", choices=["auto", "stored", "float32", "bfloat16", "float16"])
    models.add_argument("--context", type=arg_types.positive_int, default=4096, help="context tokens for the estimate")
    models.add_argument("--capture-points", type=arg_types.nonnegative_int, default=0,
                        help="hook points cached over the context")
    models.add_argument("--memory-budget", type=arg_types.positive_float, default=None, metavar="GB")
    from mlx_hooks.config_presets import CHIP_BANDWIDTH_GBS, PRESETS

    point_kinds = ["resid_pre", "attn_z", "attn_out", "mlp_hidden", "mlp_out", "resid_post"]  # no MLX before the BLAS re-exec
    paper = models.add_argument_group(
        "estimate of a preset or config.json", f"models built from the config without weights; presets: {', '.join(PRESETS)}")
    paper.add_argument("--bits", type=int, choices=[2, 3, 4, 6, 8], default=None, help="quantize the weights (group 64)")
    paper.add_argument("--capture-kind", default="resid_post", choices=point_kinds,
                       help="kind of the captured points (their width sets the activation cache)")
    paper.add_argument("--sae-width", type=arg_types.nonnegative_int, default=0, help="SAE latents (0: no SAE)")
    paper.add_argument("--sae-kind", default="resid_post", choices=point_kinds, help="kind of point the SAE reads")
    paper.add_argument("--machine-memory", type=arg_types.positive_float, default=96.0, metavar="GB",
                       help="the Mac's memory; the budget is the app's share of it (default 96)")
    paper.add_argument("--chip", default="m2-max", choices=list(CHIP_BANDWIDTH_GBS),
                       help="Apple chip whose memory bandwidth bounds decode time (default m2-max, 400 GB/s)")
    paper.add_argument("--bandwidth", type=arg_types.positive_float, default=None, metavar="GB/s",
                       help="memory bandwidth instead of the chip's")
    models.set_defaults(func=cmd_models)

    from .commands import register_all

    register_all(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:
        reexec_with_fast_blas()  # only for the real launcher, before MLX loads
    args = build_parser().parse_args(argv)
    from mlx_hooks.errors import SymbiontError

    from mlx_hooks.errors import DownloadCancelled

    from mlx_hooks.cpu_kernels import cpu_kernels

    try:
        with cpu_kernels():
            return args.func(args)
    except DownloadCancelled as exc:
        print(f"symbiont: {exc}", file=sys.stderr)
        return 130
    except (SymbiontError, ValueError) as exc:
        print(f"symbiont: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
