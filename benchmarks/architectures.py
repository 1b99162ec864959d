"""Every supported architecture family: the hook invariants' errors and the cost of hooking.

    python benchmarks/architectures.py [--tokens 48] [--rounds 9] [--hidden 512] [--layers 6] [--vocab 32000]

Part 1, on tiny random models (tests/tiny_models.py): the max absolute error of each
invariant the test matrix (tests/test_architectures.py) asserts —
hooked (every point captured) vs unhooked logits; resid_post − resid_pre − attn_out −
mlp_out; resid_pre.0 − embed·scale; self-patch of every point kind (worst over kinds);
lens(last resid_post) vs the model's log-probabilities; streamed capture vs a full forward.
Part 2, on random models of the same families at realistic per-token widths
(``--hidden``, ``--layers``, ``--vocab``): greedy decode tok/s of mlx-lm's own
``stream_generate`` (plain) and of ``hooked_stream_generate`` capturing every hook point
at every token (hooked-full): medians after a warm-up round, and the median of each round's
hooked ÷ plain (the two back to back, their order alternating).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
from mlx_hooks.backend import reexec_with_fast_blas  # noqa: E402

reexec_with_fast_blas()

import mlx.core as mx  # noqa: E402
import numpy as np  # noqa: E402
from mlx_lm.generate import stream_generate  # noqa: E402
from mlx_lm.sample_utils import make_sampler  # noqa: E402

from conftest import make_byte_tokenizer  # noqa: E402
from hooks_overhead import decode_tps  # noqa: E402
from mlx_hooks import hook_points, hooked, hooked_stream_generate  # noqa: E402
from mlx_hooks.activation_cache import ActivationRecorder  # noqa: E402
from mlx_hooks.backend import backend_info  # noqa: E402
from mlx_hooks.interventions import Patch  # noqa: E402
from mlx_hooks.lens import lens_logprobs  # noqa: E402
from mlx_hooks.points import ModelAdapter  # noqa: E402
from tiny_models import ARCHITECTURES, make_model, scaled_config  # noqa: E402

TOKENS = [12, 80, 33, 7, 101, 55, 3, 240, 17, 64, 9, 130]


def _run(model, tokens=TOKENS, capture=(), interventions=None):
    with hooked(model, capture=capture, interventions=interventions) as session:
        logits = model(mx.array([tokens]))
        mx.eval(logits)
    return logits[0], {p: session.recorder.stack(p)[0] for p in capture}


def _max(a, b) -> float:
    return float(mx.abs(mx.array(a) - mx.array(b)).max())


def invariant_errors(arch: str, tokenizer) -> dict[str, float]:
    model = make_model(arch)
    adapter = ModelAdapter(model)
    points = hook_points(model)
    plain = model(mx.array([TOKENS]))[0]
    logits, c = _run(model, capture=points)
    n = adapter.n_layers
    errors = {
        "hooked": _max(logits, plain),
        "additive": max(_max(c[f"resid_post.{i}"] - c[f"resid_pre.{i}"], c[f"attn_out.{i}"] + c[f"mlp_out.{i}"])
                        for i in range(n)),
        "embed": _max(c["resid_pre.0"], c["embed"] * adapter.dims.embed_scale),
        "self_patch": max(_max(_run(model, interventions={p: Patch(c[p])})[0], logits)
                          for p in ["embed"] + [q for q in points if q.endswith(".1")]),
        "lens": _max(lens_logprobs(model, c[f"resid_post.{n - 1}"]), logits - mx.logsumexp(logits, -1, keepdims=True)),
    }
    recorder, streamed_points = ActivationRecorder(), [f"resid_post.{i}" for i in range(n)]
    steps = list(hooked_stream_generate(model, tokenizer, TOKENS, max_tokens=10, capture=streamed_points,
                                        recorder=recorder))
    _, full = _run(model, tokens=TOKENS + [s.token for s in steps], capture=streamed_points)
    errors["streamed"] = max(_max(recorder.stack(p)[0], full[p]) for p in streamed_points)
    return errors


def decode_speed(arch: str, tokenizer, hidden: int, layers: int, tokens: int, rounds: int,
                 vocab: int = 32000) -> tuple[float, float, float]:
    """(plain tok/s, hooked-full tok/s, ratio): medians over ``rounds`` after one warm-up round;
    the ratio is the median of each round's hooked ÷ plain, the two runs of a round back to back
    and their order alternating, so load that drifts between rounds cancels."""
    model = make_model(arch, config=scaled_config(arch, hidden, layers, vocab=vocab), embed_scale=1.0)
    points = hook_points(model)

    def plain_run() -> float:
        return decode_tps(stream_generate(model, tokenizer, mx.array(TOKENS), max_tokens=tokens, sampler=make_sampler(0.0)))

    def hooked_run() -> float:
        return decode_tps(hooked_stream_generate(model, tokenizer, TOKENS, max_tokens=tokens, capture=points))

    plain_run(), hooked_run()  # warm-up: first-call allocations and lazy imports
    plain, hooked_full = [], []
    for round_ in range(rounds):
        if round_ % 2:
            hooked_full.append(hooked_run())
            plain.append(plain_run())
        else:
            plain.append(plain_run())
            hooked_full.append(hooked_run())
    ratio = statistics.median(h / p for h, p in zip(hooked_full, plain))
    return statistics.median(plain), statistics.median(hooked_full), ratio


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--only", nargs="*", default=None, help="architectures to run (default: all)")
    args = parser.parse_args()
    print(backend_info().summary())
    tokenizer = make_byte_tokenizer()
    names = ("hooked", "additive", "embed", "self_patch", "lens", "streamed")
    print(f"\n{'architecture':13s}" + "".join(f"{n:>11s}" for n in names)
          + f"{'plain tok/s':>13s}{'hooked tok/s':>14s}{'ratio':>7s}")
    for arch in args.only or ARCHITECTURES:
        errors = invariant_errors(arch, tokenizer)
        plain, full, ratio = decode_speed(arch, tokenizer, args.hidden, args.layers, args.tokens, args.rounds, args.vocab)
        print(f"{arch:13s}" + "".join(f"{errors[n]:11.1e}" for n in names)
              + f"{plain:13.1f}{full:14.1f}{ratio:7.2f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
