"""What Symbiont and the peer libraries share in benchmarks/peers.py: the weights as a
Hugging Face llama folder, the token ids, the stored activations and the LoRA data.

The peers (transformers, TransformerLens, nnsight, SAELens) read PyTorch/Hugging Face
formats only, so the default model's weights, dequantized to float32 by Symbiont's own
loader, are written out as ``config.json`` + ``model.safetensors`` + tokenizer files:
the same numbers on both sides, which the benchmark checks through the logits.
No torch here: this module runs in the project's interpreter.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

HF_TEXT_FILES = ("tokenizer.json", "tokenizer_config.json", "generation_config.json")
# Keys of a Symbiont/mlx-lm config that a float32 Hugging Face checkpoint does not carry.
MLX_ONLY_KEYS = ("quantization", "quantization_config", "rope_traditional")


def hf_config(config: dict) -> dict:
    """The ``config.json`` of the float32 Hugging Face copy of a converted model."""
    out = {k: v for k, v in config.items() if k not in MLX_ONLY_KEYS}
    if out.get("model_type") != "llama":
        raise ValueError(f"the peer benchmark writes llama checkpoints only, not {out.get('model_type')!r}")
    out.setdefault("architectures", ["LlamaForCausalLM"])
    out.setdefault("hidden_act", "silu")
    out["torch_dtype"] = "float32"
    return out


def write_hf_folder(weights: dict[str, np.ndarray], config: dict, tokenizer_dir: str | os.PathLike | None,
                    out_dir: str | os.PathLike) -> Path:
    """Write ``weights`` (Hugging Face names, e.g. ``model.layers.0.self_attn.q_proj.weight``)
    as float32 ``model.safetensors`` with ``config.json`` and the tokenizer files of
    ``tokenizer_dir``, into ``out_dir`` (built beside it, then renamed into place)."""
    from safetensors.numpy import save_file

    out_dir = Path(out_dir)
    bad = [k for k, v in weights.items() if not np.all(np.isfinite(v))]
    if bad:
        raise ValueError(f"{out_dir}: weights hold NaN or infinite values ({', '.join(bad[:3])})")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        tensors = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in weights.items()}
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(hf_config(config), indent=2) + "\n")
        if tokenizer_dir is not None:
            for name in HF_TEXT_FILES:
                if (Path(tokenizer_dir) / name).is_file():
                    shutil.copyfile(Path(tokenizer_dir) / name, tmp / name)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def model_weights(model) -> dict[str, np.ndarray]:
    """A (dequantized) mlx-lm model's parameters as float32 numpy arrays, by Hugging Face name
    (mlx-lm's llama names are the Hugging Face ones)."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    out = {}
    for name, value in tree_flatten(model.parameters()):
        if name.endswith((".scales", ".biases")):
            raise ValueError(f"{name}: the model is still quantized; load it with runtime_dtype='float32'")
        out[name] = np.array(value.astype(mx.float32))
    return out


def read_hf_weights(folder: str | os.PathLike) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(Path(folder) / "model.safetensors"))


def token_ids(tokenizer, n: int, seed: int = 0) -> list[int]:
    """``n`` ids of ordinary English text (a fixed passage repeated), BOS-free, deterministic."""
    passage = ("The owl watched the river from an old oak. Each night it counted the stars that fell "
               "into the water, and each morning it told the fish how many there had been. ")
    ids: list[int] = []
    while len(ids) < n:
        ids += list(tokenizer.encode(passage, add_special_tokens=False))
    return ids[:n]


def write_lora_dataset(folder: str | os.PathLike, n_train: int = 64, seed: int = 0) -> Path:
    """A chat JSONL dataset (``train.jsonl``, ``valid.jsonl``) of number continuations, the
    subliminal lab's kind of data, that both LoRA trainers read as mlx-lm chat records."""
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)

    def record() -> str:
        start = ", ".join(str(x) for x in rng.integers(100, 1000, size=5))
        answer = ", ".join(str(x) for x in rng.integers(100, 1000, size=10))
        return json.dumps({"messages": [
            {"role": "user", "content": f"The sequence starts with: {start}. Add 10 more numbers. Answer with numbers only."},
            {"role": "assistant", "content": answer}]})

    for name, n in (("train.jsonl", n_train), ("valid.jsonl", 4)):
        (folder / name).write_text("\n".join(record() for _ in range(n)) + "\n")
    return folder


def format_ratio(value: float | None) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.2f}"


def ratios_line(sae: float | None, lora: float | None, generate: float | None, forward: float | None) -> str:
    """The last line benchmarks/peers.py prints (Symbiont ÷ peer; above 1 = Symbiont faster)."""
    return (f"ratios: sae={format_ratio(sae)} lora={format_ratio(lora)} generate={format_ratio(generate)} "
            f"forward={format_ratio(forward)}")


def summary(values: list[float]) -> tuple[float, float]:
    """(best, median) of per-round throughputs (higher is better)."""
    if not values:
        raise ValueError("no rounds measured")
    return float(max(values)), float(np.median(values))
