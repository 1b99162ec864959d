"""MLX CPU-backend kernels against NumPy (and torch if installed), at a 135M llama's shapes.

    python benchmarks/mlx_cpu_kernels.py [--rounds 5] [--repeats 5]

A stand-alone reproduction for MLX upstream: it needs only mlx and numpy (torch is
used when importable). Shapes are SmolLM2-135M's (d_model 576, d_mlp 1536, 9 query
heads × 64, vocab 49152) on a 512-token prompt:

  element-wise on [512, 1536] float32: exp, sigmoid, silu (eager and mx.compile), tanh,
      and relu as the baseline of an element-wise op without a transcendental function
  causal attention [1, 9, 512, 64]: mx.fast.scaled_dot_product_attention against the
      same attention written out in MLX (matmul, additive mask, softmax, matmul)
  decode gemv: [1, 576] × [49152, 576]ᵀ float32, and mx.quantized_matmul 4-bit
      (group 64) at that shape
  at a TopK SAE's training shapes (4608 latents, k 32, 512 tokens): the k-th largest
      latent per token (mx.topk against mx.argpartition, k 32 and 256), the gather of
      the k decoder rows per token, the scatter-add of their gradients, and the dense
      [512, 576] x [576, 4608] product for scale; beside MLX's own top-k, Symbiont's
      two-pass one (mlx_hooks.sae.top_k: argpartition of chunk maxima, then of k chunks)

MLX's element-wise kernels run on one thread (its CPU stream's), as NumPy's ufuncs do, so
torch is limited to ``--torch-threads`` (default 1) as well; matrix products in MLX and
NumPy use their BLAS's threads. Each op runs ``--repeats`` times per round (the best call
counts), rounds alternate the libraries, and the table gives the median over rounds in ms
with the ratio of MLX to the fastest reference (> 1: MLX slower). Every result is checked
against the reference before timing.

On Linux the script re-executes itself with OpenBLAS preloaded when one is installed
(MLX's Linux wheel otherwise uses the netlib reference BLAS); the BLAS in use is printed.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
try:  # this project's helper; the benchmark runs without it too
    from mlx_hooks.backend import backend_info, reexec_with_fast_blas
except ImportError:
    backend_info = reexec_with_fast_blas = None
if reexec_with_fast_blas is not None:
    reexec_with_fast_blas()

import mlx.core as mx  # noqa: E402
import mlx.nn as nn  # noqa: E402
import numpy as np  # noqa: E402

try:
    import torch  # noqa: E402
except ImportError:
    torch = None
try:  # the two-pass top-k shown beside MLX's (left out when this file runs outside the project)
    from mlx_hooks.sae.top_k import top_k_indices  # noqa: E402
except ImportError:
    top_k_indices = None

SEQ, D_MODEL, D_MLP, HEADS, HEAD_DIM, VOCAB = 512, 576, 1536, 9, 64, 49152
SAE_LATENTS, SAE_K = 4608, 32


def best_call_ms(fn, repeats: int, sync) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        sync(fn())
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def np_sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def np_causal_attention(q, k, v, scale):  # [H, L, hd]
    scores = (q @ k.transpose(0, 2, 1)) * scale  # [H, L, L]
    scores = scores + np.triu(np.full(scores.shape[-2:], -np.inf, dtype=np.float32), 1)
    scores = np.exp(scores - scores.max(-1, keepdims=True))
    return (scores / scores.sum(-1, keepdims=True)) @ v


def mlx_causal_attention(q, k, v, scale, mask):  # [1, H, L, hd], mask [L, L] additive
    scores = (q * scale) @ k.swapaxes(-1, -2) + mask  # [1, H, L, L]
    return mx.softmax(scores, axis=-1, precise=True) @ v


def cases():
    """(name, shape, MLX variants {label: fn}, reference {library: fn}, check) per op."""
    rng = np.random.default_rng(0)
    x_np = rng.standard_normal((SEQ, D_MLP), dtype=np.float32)
    x = mx.array(x_np)
    compiled_silu = mx.compile(nn.silu)
    elementwise = [
        ("exp", mx.exp, np.exp, "exp"),
        ("sigmoid", mx.sigmoid, np_sigmoid, "sigmoid"),
        ("silu", nn.silu, lambda a: a * np_sigmoid(a), "silu"),
        ("tanh", mx.tanh, np.tanh, "tanh"),
        ("relu (no transcendental)", nn.relu, lambda a: np.maximum(a, 0), "relu"),
    ]
    out = []
    for name, mlx_fn, np_fn, torch_name in elementwise:
        mlx_variants = {"mlx": lambda f=mlx_fn: f(x)}
        if name == "silu":
            mlx_variants["mlx compiled"] = lambda: compiled_silu(x)
        refs = {"numpy": lambda f=np_fn: f(x_np)}
        if torch is not None:
            tx = torch.from_numpy(x_np)
            tf = getattr(torch.nn.functional, torch_name, None) or getattr(torch, torch_name)
            refs["torch"] = lambda f=tf, t=tx: f(t)
        out.append((name, f"[{SEQ}, {D_MLP}]", mlx_variants, refs, 1e-5))

    q_np, k_np, v_np = (rng.standard_normal((HEADS, SEQ, HEAD_DIM), dtype=np.float32) for _ in range(3))
    q, k, v = (mx.array(a)[None] for a in (q_np, k_np, v_np))
    scale = HEAD_DIM**-0.5
    mask = mx.triu(mx.full((SEQ, SEQ), -mx.inf), k=1)
    attention = {
        "mlx fast.sdpa causal": lambda: mx.fast.scaled_dot_product_attention(q, k, v, scale=scale, mask="causal"),
        "mlx unfused": lambda: mlx_causal_attention(q, k, v, scale, mask),
    }
    refs = {"numpy": lambda: np_causal_attention(q_np, k_np, v_np, scale)[None]}
    if torch is not None:
        tq, tk, tv = (torch.from_numpy(a)[None] for a in (q_np, k_np, v_np))
        refs["torch"] = lambda tq=tq, tk=tk, tv=tv: torch.nn.functional.scaled_dot_product_attention(tq, tk, tv,
                                                                                                  is_causal=True)
    out.append(("causal attention", f"[1, {HEADS}, {SEQ}, {HEAD_DIM}]", attention, refs, 1e-4))

    w_np = (rng.standard_normal((VOCAB, D_MODEL), dtype=np.float32) * 0.05).astype(np.float32)
    h_np = rng.standard_normal((1, D_MODEL), dtype=np.float32)
    w, h = mx.array(w_np), mx.array(h_np)
    wq, scales, biases = mx.quantize(w, group_size=64, bits=4)
    w_deq_np = np.array(mx.dequantize(wq, scales, biases, group_size=64, bits=4))
    refs = {"numpy": lambda: h_np @ w_np.T}
    if torch is not None:
        refs["torch"] = lambda tw=torch.from_numpy(w_np), th=torch.from_numpy(h_np): th @ tw.T
    out.append(("gemv float32", f"[1, {D_MODEL}] x [{VOCAB}, {D_MODEL}]T", {"mlx": lambda: h @ w.T}, refs, 1e-4))
    out.append((
        "quantized_matmul 4-bit", f"[1, {D_MODEL}] x [{VOCAB}, {D_MODEL}]T g64",
        {"mlx": lambda: mx.quantized_matmul(h, wq, scales, biases, transpose=True, group_size=64, bits=4)},
        {"numpy (dequantized f32)": lambda: h_np @ w_deq_np.T}, 1e-3,
    ))

    pre_np = rng.standard_normal((SEQ, SAE_LATENTS), dtype=np.float32)
    pre = mx.array(pre_np)
    w_dec_np = rng.standard_normal((SAE_LATENTS, D_MODEL), dtype=np.float32)
    w_dec = mx.array(w_dec_np)
    index_np = np.argpartition(-pre_np, SAE_K - 1, axis=-1)[:, :SAE_K].astype(np.uint32)  # [512, 32]
    index = mx.array(index_np)
    rows_np = rng.standard_normal((SEQ * SAE_K, D_MODEL), dtype=np.float32)
    rows = mx.array(rows_np)
    refs = {"numpy": lambda: w_dec_np[index_np]}
    if torch is not None:
        refs["torch"] = lambda tw=torch.from_numpy(w_dec_np), ti=torch.from_numpy(index_np.astype(np.int64)): tw[ti]
    out.append(("gather rows W[index]", f"[{SAE_LATENTS}, {D_MODEL}][{SEQ}, {SAE_K}]", {"mlx": lambda: w_dec[index]},
                refs, 0.0))

    def np_scatter_add():
        out = np.zeros_like(w_dec_np)
        np.add.at(out, index_np.reshape(-1), rows_np)
        return out

    refs = {"numpy add.at": np_scatter_add}
    if torch is not None:
        tr, ti = torch.from_numpy(rows_np), torch.from_numpy(index_np.reshape(-1).astype(np.int64))
        refs["torch"] = lambda tr=tr, ti=ti: torch.zeros(SAE_LATENTS, D_MODEL).index_add_(0, ti, tr)
    out.append((
        "scatter-add rows", f"[{SEQ * SAE_K}, {D_MODEL}] -> [{SAE_LATENTS}, {D_MODEL}]",
        {"mlx": lambda: mx.zeros((SAE_LATENTS, D_MODEL)).at[index.reshape(-1)].add(rows)}, refs, 1e-5,
    ))
    x_sae_np = rng.standard_normal((SEQ, D_MODEL), dtype=np.float32)
    x_sae = mx.array(x_sae_np)
    w_enc_np = np.ascontiguousarray(w_dec_np.T)
    w_enc = mx.array(w_enc_np)
    out.append(("matmul (SGEMM)", f"[{SEQ}, {D_MODEL}] x [{D_MODEL}, {SAE_LATENTS}]", {"mlx": lambda: x_sae @ w_enc},
                {"numpy": lambda: x_sae_np @ w_enc_np}, 1e-5))
    for top in (32, 256):
        out.append((
            f"k-th largest, k={top}", f"[{SEQ}, {SAE_LATENTS}]",
            {
                "mlx topk": lambda t=top: mx.topk(pre, t, axis=-1).min(axis=-1),
                "mlx argpartition": lambda t=top: mx.take_along_axis(
                    pre, mx.argpartition(-pre, t - 1, axis=-1)[:, :t], axis=-1).min(axis=-1),
            } | ({} if top_k_indices is None else {
                # What the SAE trainer does instead on the CPU backend: chunk maxima first.
                "mlx two-pass": lambda t=top: mx.take_along_axis(
                    pre, top_k_indices(pre, t, two_pass=True), axis=-1).min(axis=-1),
            }),
            {"numpy": lambda t=top: np.partition(pre_np, -t, axis=-1)[:, -t]}, 1e-6,
        ))
    return out


def to_numpy(result):
    if isinstance(result, mx.array):
        return np.array(result)
    if torch is not None and isinstance(result, torch.Tensor):
        return result.numpy()
    return np.asarray(result)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5, help="calls per round; the fastest counts")
    parser.add_argument("--torch-threads", type=int, default=1)
    args = parser.parse_args()
    if torch is not None:
        torch.set_num_threads(args.torch_threads)
    if mx.default_device().type != mx.cpu:
        print(f"note: MLX's default device is {mx.default_device()}; this benchmark is about the CPU backend")
        mx.set_default_device(mx.cpu)
    torch_version = f"{torch.__version__} ({torch.get_num_threads()} threads)" if torch else "not installed"
    print(f"mlx {mx.__version__}, numpy {np.__version__}, torch {torch_version}")
    print(f"{platform.platform()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    if backend_info is not None:
        print(backend_info().summary())
    print(f"numpy BLAS: {np.show_config(mode='dicts')['Build Dependencies']['blas'].get('name', '?')}")
    rows = []
    for name, shape, mlx_variants, refs, tolerance in cases():
        timings = {label: [] for label in [*mlx_variants, *refs]}
        reference = to_numpy(next(iter(refs.values()))())
        for label, fn in {**mlx_variants, **refs}.items():
            result = to_numpy(fn())
            error = np.abs(result - reference).max() / max(np.abs(reference).max(), 1e-30)
            if error > tolerance:
                raise AssertionError(f"{name}: {label} differs from {next(iter(refs))} by {error:.2e} (relative)")
        for round_index in range(args.rounds):
            order = [*mlx_variants.items(), *refs.items()]
            for label, fn in order if round_index % 2 == 0 else order[::-1]:
                sync = mx.eval if label.startswith("mlx") else (lambda _: None)
                timings[label].append(best_call_ms(fn, args.repeats, sync))
        medians = {label: statistics.median(values) for label, values in timings.items()}
        fastest = min(refs, key=medians.get)
        for label in mlx_variants:
            others = "  ".join(f"{r} {medians[r]:.2f}" for r in refs)
            rows.append((name, shape, label, medians[label], others, medians[label] / medians[fastest], fastest))
    print()
    header = (f"{'op':26s} {'shape':34s} {'variant':22s} {'ms':>8s}   {'reference ms':30s} "
              f"{'MLX / fastest reference':>24s}")
    print(header)
    print("-" * len(header))
    for name, shape, label, ms, others, ratio, fastest in rows:
        print(f"{name:26s} {shape:34s} {label:22s} {ms:8.2f}   {others:30s} {ratio:8.2f} ({fastest})")
    print("ms: median over rounds of the fastest of --repeats calls; ratio > 1: MLX slower")
    return 0


if __name__ == "__main__":
    sys.exit(main())
