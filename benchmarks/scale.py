"""Absolute decode speed at real model shapes, on whatever backend MLX has (Metal, CUDA, CPU).

    python benchmarks/scale.py [--shapes 1b 8b] [--bits 4] [--layers N] [--tokens 32] [--rounds 3]
    python benchmarks/scale.py --shapes tiny            # a quick check on any machine

Models are mlx-lm's own llama ``Model`` built from the published Llama-3.2-1B and
Llama-3.1-8B config values (:mod:`mlx_hooks.config_presets`) with random weights —
nothing is downloaded — optionally quantized to ``--bits`` with ``nn.quantize`` (group
64), at ``--dtype`` (``auto``: bfloat16 on a GPU, float32 on the CPU, as the app runs).
``--layers`` keeps the widths and cuts the depth; ``tiny`` is the 1B shape at 2 layers and
a quarter of the widths. Before a shape is built, the app's estimate
(:mod:`mlx_hooks.scale_estimate`: weights, KV cache, SAE) is checked against the app's
memory budget; a shape that would not fit is refused with the figures.

Variants, greedy, same prompt, rounds interleaved (median per variant), tokens/s of
the decode phase:
  plain    mlx-lm's ``stream_generate``
  hooked   Symbiont's ``hooked_stream_generate`` capturing every hook point at every token
  metered  ``hooked_stream_generate`` with a FeatureMeter (random TopK SAE of ``--sae-width``
           latents at the middle resid_post) attached as the app's session attaches it
The first lines name the backend and device.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
from mlx_hooks.backend import reexec_with_fast_blas  # noqa: E402

reexec_with_fast_blas()

import mlx.core as mx  # noqa: E402
import mlx.nn as nn  # noqa: E402
from mlx_lm.generate import stream_generate  # noqa: E402
from mlx_lm.sample_utils import make_sampler  # noqa: E402
from mlx_lm.utils import _get_classes  # noqa: E402

from conftest import make_byte_tokenizer  # noqa: E402
from hooks_overhead import decode_tps  # noqa: E402
from mlx_hooks import hook_points, hooked_stream_generate  # noqa: E402
from mlx_hooks.backend import backend_info  # noqa: E402
from mlx_hooks.config_presets import preset_config  # noqa: E402
from mlx_hooks.memory import GIB, format_bytes, memory_budget  # noqa: E402
from mlx_hooks.sae.meters import FeatureMeter  # noqa: E402
from mlx_hooks.sae.model import SAE, SAEConfig  # noqa: E402
from mlx_hooks.scale_estimate import estimate_scale, paper_model  # noqa: E402

SHAPES = {"tiny": "llama-3.2-1b", "1b": "llama-3.2-1b", "8b": "llama-3.1-8b"}
PROMPT = list(range(40, 72))  # 32 byte tokens


def shape_config(shape: str, layers: int | None) -> dict:
    config = preset_config(SHAPES[shape])
    if shape == "tiny":
        d = config["hidden_size"] // 4
        config.update(hidden_size=d, intermediate_size=config["intermediate_size"] // 4, num_hidden_layers=2,
                      num_attention_heads=8, num_key_value_heads=2, head_dim=d // 8)
    if layers:
        config["num_hidden_layers"] = layers
    return config


def build(config: dict, bits: int | None, dtype) -> nn.Module:
    """mlx-lm's model for ``config`` with its own random init (no download), at ``dtype``, maybe quantized."""
    model_cls, args_cls = _get_classes(dict(config))
    mx.random.seed(0)
    model = model_cls(args_cls.from_dict(dict(config)))
    model.set_dtype(dtype)
    if bits is not None:
        nn.quantize(model, group_size=64, bits=bits,
                    class_predicate=lambda _, m: hasattr(m, "to_quantized") and m.weight.shape[-1] % 64 == 0)
    mx.eval(model.parameters())
    return model


def run_shape(shape: str, args, dtype_name: str, tokenizer) -> None:
    config = shape_config(shape, args.layers)
    label = f"{shape} ({SHAPES[shape]} shape, {config['num_hidden_layers']} layers, D={config['hidden_size']})"
    paper = paper_model(label, config, bits=args.bits, dtype=dtype_name)
    budget = memory_budget()
    est = estimate_scale(paper, context_tokens=len(PROMPT) + args.tokens, sae_width=args.sae_width,
                         budget_gib=budget.bytes / GIB)
    need = (f"needs about {format_bytes(est.total_bytes)} (weights {format_bytes(est.memory.weights_bytes)} "
            f"at {f'{args.bits} bits' if args.bits else dtype_name}, KV cache {format_bytes(est.memory.kv_cache_bytes)}, "
            f"SAE {format_bytes(est.sae_bytes)})")
    if not est.fits:
        print(f"{label}: refused: {need}, over the memory budget ({budget.describe()}); "
              "try --bits 4, --layers N or --shapes tiny", flush=True)
        return
    print(f"{label}: {paper.n_params / 1e9:.3f} B parameters; {need}", flush=True)
    model = build(config, args.bits, getattr(mx, dtype_name))
    points = hook_points(model)
    d = config["hidden_size"]
    sae_point = f"resid_post.{config['num_hidden_layers'] // 2}"
    sae = SAE(SAEConfig(d_in=d, d_sae=args.sae_width, architecture="topk", k=32, hook_point=sae_point,
                        sae_id=f"random-{args.sae_width}"))
    mx.eval(sae.parameters())  # float32, as SAEs load in the app
    meter = FeatureMeter(sae, top_n=8, watch=[0, 1])
    readings = []

    def metered():
        kwargs = meter.generate_kwargs()  # capture its point, its tap last there: as the session does
        for step in hooked_stream_generate(model, tokenizer, PROMPT, max_tokens=args.tokens, readers={"sae": meter},
                                           **kwargs):
            readings.append(step.readings["sae"])
            yield step

    variants = {
        "plain": lambda: stream_generate(model, tokenizer, mx.array(PROMPT), max_tokens=args.tokens,
                                         sampler=make_sampler(0.0)),
        "hooked": lambda: hooked_stream_generate(model, tokenizer, PROMPT, max_tokens=args.tokens, capture=points),
        "metered": metered,
    }
    decode_tps(variants["plain"]())  # warm-up
    results: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, make in variants.items():
            results[name].append(decode_tps(make()))
    if not readings:
        raise SystemExit("the meter produced no readings")
    medians = {name: statistics.median(v) for name, v in results.items()}
    for name, value in medians.items():
        print(f"  {name:8s} {value:8.2f} tok/s   (runs: {', '.join(f'{v:.2f}' for v in results[name])})")
    print(f"  hooked/plain = {medians['hooked'] / medians['plain']:.3f} ({len(points)} points captured); "
          f"metered/plain = {medians['metered'] / medians['plain']:.3f}", flush=True)
    del model, sae, meter
    mx.clear_cache()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", choices=list(SHAPES), default=["1b", "8b"])
    parser.add_argument("--bits", type=int, choices=[4, 8], default=None, help="quantize the weights (group 64)")
    parser.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], default="auto")
    parser.add_argument("--layers", type=int, default=None, help="keep the widths, use N blocks")
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sae-width", type=int, default=16384)
    args = parser.parse_args()
    info = backend_info()
    print(info.summary())
    on_gpu = mx.default_device().type == mx.gpu
    dtype_name = args.dtype if args.dtype != "auto" else ("bfloat16" if on_gpu else "float32")
    print(f"backend {info.backend}, device {info.device_name or mx.default_device()}; MLX {mx.__version__}; "
          f"{dtype_name} activations; {args.tokens} tokens x {args.rounds} rounds after a {len(PROMPT)}-token prompt",
          flush=True)
    tokenizer = make_byte_tokenizer()
    for shape in args.shapes:
        run_shape(shape, args, dtype_name, tokenizer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
