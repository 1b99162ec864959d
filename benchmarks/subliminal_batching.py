"""Teacher number generation: batched vs one sequence at a time, on the default model.

    python benchmarks/subliminal_batching.py [--prompts 32] [--single 8] [--max-tokens 48] [--batch-sizes 8,32]

The owl teacher (system-prompt trait) answers the lab's number prompts at temperature
1.0, in one process, side by side:
  stream_generate   mlx-lm's own one-prompt generation, prompt after prompt (the baseline)
  batch=1           the lab's generator with one row at a time
  batch=B           the lab's generator, B rows (continuous batching, shared prompt prefix)
  batch=B no-prefix the same without sharing the prompt prefix's KV cache
The one-at-a-time variants run the first --single prompts, the batched ones all --prompts.
Prints sequences/s and generated tokens/s per variant and the ratios to the baseline
(no timed assertions). The last line reads `batched/one-at-a-time = R` for the largest B.
``--warmup`` (auto: on a GPU) first runs every variant once untimed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from mlx_hooks.backend import reexec_with_fast_blas  # noqa: E402

reexec_with_fast_blas()

import mlx.core as mx  # noqa: E402
from mlx_lm.generate import stream_generate  # noqa: E402
from mlx_lm.sample_utils import make_sampler  # noqa: E402

from mlx_hooks.backend import backend_info  # noqa: E402
from mlx_hooks.cpu_kernels import cpu_kernels, default_enabled as cpu_kernels_default  # noqa: E402
from mlx_hooks.loader import load_model  # noqa: E402
from symbiont_lab.subliminal.filter import filter_responses  # noqa: E402
from symbiont_lab.subliminal.numbers import encode_chat, generate_responses  # noqa: E402
from symbiont_lab.subliminal.prompts import make_number_prompts  # noqa: E402
from symbiont_lab.subliminal.teacher import TraitSpec, teacher_context  # noqa: E402


def run_stream_generate(loaded, teacher, prompts, max_tokens):
    sampler = make_sampler(temp=1.0)
    mx.random.seed(0)
    texts, tokens = [], 0
    start = time.perf_counter()
    for prompt in prompts:
        ids = encode_chat(loaded.tokenizer, teacher.messages(prompt))
        pieces = []
        for response in stream_generate(loaded.model, loaded.tokenizer, mx.array(ids), max_tokens=max_tokens,
                                         sampler=sampler):
            pieces.append(response.text)
            tokens += 1
        texts.append("".join(pieces))
    return time.perf_counter() - start, texts, tokens


def run_lab(loaded, spec, prompts, max_tokens, batch_size, share_prefix=True):
    start = time.perf_counter()
    out = dict(generate_responses(loaded, spec, prompts, batch_size=batch_size, max_tokens=max_tokens, seed=0,
                                  share_prefix=share_prefix))
    elapsed = time.perf_counter() - start
    texts = [out[i] for i in range(len(prompts))]
    tokens = sum(min(len(loaded.tokenizer.encode(t)) + 1, max_tokens) for t in texts)  # +1: the stop token
    return elapsed, texts, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--single", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--batch-sizes", default="8,32")
    parser.add_argument("--model", default="default")
    parser.add_argument("--warmup", choices=("auto", "on", "off"), default="auto",
                        help="run every variant once untimed first; auto: on a GPU, where MLX compiles kernels "
                             "for each new shape on first use (continuous batching makes many), off on the CPU")
    args = parser.parse_args()

    loaded = load_model(args.model)
    print(f"backend: {backend_info()}  model: {loaded.name} ({loaded.runtime_dtype})  "
          f"CPU kernels: {'on' if cpu_kernels_default() else 'off'}")
    spec = TraitSpec("system_prompt", animal="owl")
    prompts = make_number_prompts(args.prompts, seed=0)
    single = prompts[: args.single]
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    warmup = args.warmup == "on" or (args.warmup == "auto" and mx.default_device() == mx.gpu)
    # Every variant inside cpu_kernels(), as the symbiont commands run (on the CPU backend the
    # kernels speed prefill and batched MLPs; $SYMBIONT_KERNELS=mlx runs MLX's own).
    with cpu_kernels(), teacher_context(spec, loaded) as teacher:
        # (name, prompts run, a function running them) in the order printed; rows[0] is the baseline
        variants = [
            ("stream_generate", single, lambda: run_stream_generate(loaded, teacher, single, args.max_tokens)),
            ("batch=1", single, lambda: run_lab(loaded, spec, single, args.max_tokens, 1)),
            *[(f"batch={b}", prompts, lambda b=b: run_lab(loaded, spec, prompts, args.max_tokens, b)) for b in sizes],
            (f"batch={sizes[-1]} no-prefix", prompts,
             lambda: run_lab(loaded, spec, prompts, args.max_tokens, sizes[-1], share_prefix=False)),
        ]
        run_lab(loaded, spec, prompts[:2], 4, 2)  # warm-up (first-call allocations)
        if warmup:
            # Measured on an H200: without this the first variant to meet each shape paid ~80 s of
            # kernel compilation, so the ratios depended on the order of the variants.
            for _, _, run in variants:
                run()
        rows = []
        for name, ran, run in variants:
            elapsed, texts, tokens = run()
            rows.append((name, len(ran), elapsed, tokens, texts))

    base = rows[0][1] / rows[0][2]
    print(f"{'variant':22s} {'seqs':>5s} {'seconds':>8s} {'seq/s':>7s} {'tok/s':>7s} {'x base':>7s} {'kept':>5s}")
    for name, n, elapsed, tokens, texts in rows:
        kept = filter_responses(texts).counts["kept"]
        print(f"{name:22s} {n:5d} {elapsed:8.1f} {n / elapsed:7.3f} {tokens / elapsed:7.1f} "
              f"{n / elapsed / base:7.2f} {kept:5d}")
    reference = rows[1][4]  # batch=1 texts: per-sequence keys should make every batched variant agree
    for name, n, _, _, texts in rows[2:]:
        same = sum(a == b for a, b in zip(reference, texts))
        print(f"{name}: {same}/{len(reference)} texts identical to batch=1 (same seed, per-sequence keys)")
    best = rows[1 + len(sizes)]
    print(f"batched/one-at-a-time = {best[1] / best[2] / base:.2f}  (batch={sizes[-1]} vs stream_generate, seq/s)")


if __name__ == "__main__":
    main()
