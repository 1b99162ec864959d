"""GGUF -> MLX conversion: time and peak memory for a ~100 MB K-quant file, against Q8_0.

    python benchmarks/gguf_convert.py [--layers 10] [--keep DIR]

Writes two GGUF files of the same Llama-2-shaped model (hidden 1024, MLP 2816,
32000-piece SentencePiece vocabulary, random but valid blocks): one laid out like
llama.cpp's Q4_K_M (Q4_K matrices; Q6_K for ffn_down, attn_v and the output),
one all-Q8_0 (the baseline: carried over without dequantizing). Each is converted in
a fresh subprocess, which reports its own wall time and peak RSS (ru_maxrss); a
third subprocess that only imports the converter gives the interpreter's own
footprint. Also times the content hash that keys the cache.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

HIDDEN, FFN, HEADS, KV_HEADS, VOCAB = 1024, 2816, 16, 4, 32000
# Bytes per 256-weight block and where its float16 scales sit (see ggml-common.h).
_BLOCKS = {"Q4_K": (144, (0, 2)), "Q6_K": (210, (208,)), "Q8_0": (34 * 8, tuple(range(0, 272, 34)))}

CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
from mlx_hooks.gguf_convert import convert_gguf, inspect_gguf
import mlx.core, mlx_lm  # what the app has loaded anyway
t1 = time.perf_counter()
if sys.argv[1] != "-":
    inspect_gguf(sys.argv[1])
    t2 = time.perf_counter()
    convert_gguf(sys.argv[1], sys.argv[2])
    t3 = time.perf_counter()
else:
    t2 = t3 = t1
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"import_s": t1 - t0, "header_s": t2 - t1, "convert_s": t3 - t2,
                  "max_rss_mib": rss / (2**20 if sys.platform == "darwin" else 2**10)}))
"""


def random_blocks(kind: str, rows: int, cols: int, rng):
    import numpy as np

    size, scale_at = _BLOCKS[kind]
    blocks = rng.integers(0, 256, (rows * cols // 256, size), dtype=np.uint8)
    for at in scale_at:  # finite, model-sized scales
        blocks[:, at:at + 2] = (rng.uniform(1e-4, 3e-4, len(blocks))).astype(np.float16).view(np.uint8).reshape(-1, 2)
    return blocks.reshape(rows, -1)


def write_file(path: Path, layers: int, layout: str) -> None:
    """A Llama-2-shaped GGUF; ``layout`` is "Q4_K_M" or "Q8_0"."""
    import gguf
    import numpy as np

    rng = np.random.default_rng(0)
    w = gguf.GGUFWriter(str(path), "llama")
    for key, value in (("context_length", 4096), ("embedding_length", HIDDEN), ("block_count", layers),
                       ("feed_forward_length", FFN), ("attention.head_count", HEADS),
                       ("attention.head_count_kv", KV_HEADS), ("rope.dimension_count", HIDDEN // HEADS)):
        w.add_uint32(f"llama.{key}", value)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    pieces = ["<unk>", "<s>", "</s>", *[f"<0x{b:02X}>" for b in range(256)]]
    pieces += [f"▁w{i}" for i in range(VOCAB - len(pieces))]
    w.add_tokenizer_model("llama")
    w.add_token_list(pieces)
    w.add_token_scores([0.0] * 3 + [0.0] * 256 + [-float(i) for i in range(VOCAB - 259)])
    w.add_token_types([2, 3, 3] + [6] * 256 + [1] * (VOCAB - 259))
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(True)

    def matrix(name: str, rows: int, cols: int, q4km: str = "Q4_K") -> None:
        kind = q4km if layout == "Q4_K_M" else "Q8_0"
        w.add_tensor(name, random_blocks(kind, rows, cols, rng), raw_dtype=gguf.GGMLQuantizationType[kind])

    kv = HIDDEN // HEADS * KV_HEADS
    matrix("token_embd.weight", VOCAB, HIDDEN)
    for i in range(layers):
        for role, rows, cols, kind in (("attn_q", HIDDEN, HIDDEN, "Q4_K"), ("attn_k", kv, HIDDEN, "Q4_K"),
                                       ("attn_v", kv, HIDDEN, "Q6_K"), ("attn_output", HIDDEN, HIDDEN, "Q4_K"),
                                       ("ffn_gate", FFN, HIDDEN, "Q4_K"), ("ffn_up", FFN, HIDDEN, "Q4_K"),
                                       ("ffn_down", HIDDEN, FFN, "Q6_K")):
            matrix(f"blk.{i}.{role}.weight", rows, cols, kind)
        for norm in ("attn_norm", "ffn_norm"):
            w.add_tensor(f"blk.{i}.{norm}.weight", np.ones(HIDDEN, np.float32))
    w.add_tensor("output_norm.weight", np.ones(HIDDEN, np.float32))
    matrix("output.weight", VOCAB, HIDDEN, "Q6_K")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def run_child(gguf: str, out: str, env: dict) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, gguf, out], capture_output=True, text=True, env=env,
                          cwd=os.path.join(os.path.dirname(__file__), ".."))
    if done.returncode:
        raise SystemExit(done.stderr)
    return json.loads(done.stdout.strip().splitlines()[-1])


def folder_bits(folder: Path) -> tuple[float, float]:
    """(MiB on disk, bits per weight of the quantized matrices) of a converted folder."""
    import mlx.core as mx

    weights = {}
    for f in folder.glob("model*.safetensors"):
        weights.update(mx.load(str(f)))
    size = sum(f.stat().st_size for f in folder.glob("model*.safetensors"))
    n = stored = 0
    for name, scales in weights.items():
        if name.endswith(".scales"):
            base = name[: -len("scales")]
            n += scales.size * 32
            stored += sum(weights[base + s].nbytes for s in ("weight", "scales", "biases"))
    return size / 2**20, 8 * stored / n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=10, help="decoder blocks (10: a ~100 MB Q4_K_M file)")
    parser.add_argument("--keep", type=Path, help="write the files here and keep them (default: a temp folder)")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="gguf-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "SYMBIONT_CACHE_DIR": str(root / "cache")}  # the children's digest memo
    from mlx_hooks.gguf_convert import content_digest

    base = run_child("-", "-", env)
    print(f"interpreter + mlx + mlx_lm + converter imported: {base['max_rss_mib']:.0f} MiB peak RSS")
    results = {}
    for layout in ("Q4_K_M", "Q8_0"):
        path = root / f"bench-{layout}.gguf"
        t = time.perf_counter()
        write_file(path, args.layers, layout)
        written = time.perf_counter() - t
        r = run_child(str(path), str(root / f"out-{layout}"), env)
        mib, bits = folder_bits(root / f"out-{layout}")
        os.environ["SYMBIONT_CACHE_DIR"] = str(root / f"hash-{layout}")  # an empty memo: the file is read
        t = time.perf_counter()
        content_digest(path)
        hash_s = time.perf_counter() - t
        t = time.perf_counter()
        content_digest(path)  # remembered: no read
        memo_s = time.perf_counter() - t
        size = path.stat().st_size / 2**20
        results[layout] = r
        print(f"{layout:7s} file {size:6.1f} MiB (written in {written:.1f} s) -> MLX {mib:6.1f} MiB, "
              f"{bits:.2f} bits/weight in the quantized matrices")
        print(f"        convert {r['convert_s']:6.2f} s (reading the header alone: {r['header_s']:.2f} s), "
              f"peak RSS {r['max_rss_mib']:.0f} MiB (+{r['max_rss_mib'] - base['max_rss_mib']:.0f} over imports); "
              f"sha256 of the file {hash_s:.2f} s ({size / hash_s:.0f} MiB/s), again from the memo {memo_s * 1e3:.1f} ms")
    a, b = results["Q4_K_M"], results["Q8_0"]
    print(f"Q4_K_M / Q8_0: time x{a['convert_s'] / b['convert_s']:.2f}, "
          f"RSS over imports x{(a['max_rss_mib'] - base['max_rss_mib']) / (b['max_rss_mib'] - base['max_rss_mib']):.2f}")
    if not args.keep:
        import shutil

        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
