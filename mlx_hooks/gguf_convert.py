"""Turn a llama-architecture GGUF file into a normal MLX model folder.

The folder (``config.json``, ``model.safetensors``, ``tokenizer.json``,
``tokenizer_config.json``, ``generation_config.json``) opens with ``mlx_lm.load``
like any Hugging Face checkpoint, so the rest of Symbiont deals with one kind of
model. :func:`inspect_gguf` reads the header only and refuses what we cannot
convert; :func:`convert_gguf` writes the folder atomically and reuses a finished
one; :func:`converted_dir_for` names the cache folder for a GGUF file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import GGUFError, ModelLoadError

SUPPORTED_ARCHITECTURES = ("llama",)
# What mx.load reads: float tensors, and the three block formats it turns into
# MLX affine-quantized triplets (group size 32). K-quants, Q5_x and IQ types fail
# inside mx.load with an unhelpful message, so we refuse them up front.
SUPPORTED_TENSOR_TYPES = frozenset({"F32", "F16", "BF16", "Q4_0", "Q4_1", "Q8_0"})
QUANTIZED_TENSOR_TYPES = frozenset({"Q4_0", "Q4_1", "Q8_0"})
SUPPORTED_TOKENIZER_MODELS = ("gpt2",)  # byte-level BPE

_TOKEN_CONTROL, _TOKEN_USER_DEFINED = 3, 4  # llama.cpp's tokenizer.ggml.token_type
_FORMAT_VERSION = 1  # bump when the folder layout changes, so old conversions are redone
_SOURCE_RECORD = "symbiont_source.json"

_TOP_LEVEL_NAMES = {
    "token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head",
}
_LAYER_NAMES = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
}
# "scales"/"biases" are the halves of an MLX quantized triplet (from mx.load);
# "bias" is a real additive bias (attention_bias / mlp_bias models).
_SUFFIXES = ("weight", "scales", "biases", "bias")

# Pre-tokenizer split patterns, as published in these models' tokenizer.json.
_LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_PATTERN = _LLAMA3_PATTERN.replace(r"\p{N}{1,3}", r"\p{N}")  # single digits


@dataclass(frozen=True)
class GGUFInfo:
    """What a GGUF file holds, read from its header without loading tensors."""

    path: Path
    """The file that was inspected."""
    architecture: str
    """``general.architecture``, e.g. ``"llama"``."""
    tensor_types: dict[str, int] = field(hash=False)
    """How many tensors use each GGML type, e.g. ``{"Q4_1": 210, "F32": 61}``."""
    n_params: int
    """Number of weights (elements) over all tensors."""
    stored_bytes: int
    """Bytes the tensor data occupies in the file."""
    hidden_size: int
    """Model width (``llama.embedding_length``)."""
    num_hidden_layers: int
    """Number of decoder blocks (``llama.block_count``)."""
    intermediate_size: int
    """MLP width (``llama.feed_forward_length``)."""
    num_attention_heads: int
    """Query heads."""
    num_key_value_heads: int
    """Key/value heads (fewer than query heads under grouped-query attention)."""
    vocab_size: int
    """Rows of the token embedding."""
    context_length: int
    """Longest context the model was trained for."""
    rope_theta: float
    """Rotary embedding base frequency."""
    rms_norm_eps: float
    """Epsilon of the RMS norms."""
    head_dim: int
    """Width of one attention head."""
    tokenizer_pre: str = "default"
    """``tokenizer.ggml.pre``: which pre-tokenizer the vocabulary was trained with."""
    tied_embeddings: bool = True
    """True when there is no separate output matrix (the embedding is reused)."""

    @property
    def quantized(self) -> bool:
        """Whether any tensor is block-quantized."""
        return any(t in QUANTIZED_TENSOR_TYPES for t in self.tensor_types)


def mlx_name(gguf_name: str) -> str | None:
    """The mlx-lm llama parameter name for a GGUF tensor name (None if unknown)."""
    base, _, suffix = gguf_name.rpartition(".")
    if suffix not in _SUFFIXES:
        return None
    if base in _TOP_LEVEL_NAMES:
        return f"{_TOP_LEVEL_NAMES[base]}.{suffix}"
    m = re.fullmatch(r"blk\.(\d+)\.(\w+)", base)
    if m and m.group(2) in _LAYER_NAMES:
        return f"model.layers.{m.group(1)}.{_LAYER_NAMES[m.group(2)]}.{suffix}"
    return None


def _value(reader, path: Path, key: str, default: Any = ...) -> Any:
    f = reader.fields.get(key)
    if f is None:
        if default is ...:
            raise GGUFError(f"{path}: metadata key {key!r} is missing")
        return default
    try:
        return f.contents()
    except Exception as e:
        raise GGUFError(f"{path}: metadata key {key!r} is unreadable ({e})") from e


def _inspect(path: Path):
    """:func:`inspect_gguf`, also returning the open reader for reuse."""
    import gguf

    if not path.is_file():
        raise GGUFError(f"{path}: {'not a file' if path.exists() else 'file not found'}")
    try:
        reader = gguf.GGUFReader(path)  # memory-mapped: reads the header only
    except Exception as e:  # ValueError, IndexError, ... depending on where it breaks
        raise GGUFError(f"{path}: not a GGUF file, or truncated or corrupt ({e})") from e
    tensors = reader.tensors

    # The reader maps tensor data lazily; make sure the file really holds it all.
    size = path.stat().st_size
    if tensors and (end := max(t.data_offset + t.n_bytes for t in tensors)) > size:
        raise GGUFError(f"{path}: file is truncated ({size} bytes, tensor data ends at byte {end})")

    arch = _value(reader, path, "general.architecture")
    if arch not in SUPPORTED_ARCHITECTURES:
        supported = ", ".join(SUPPORTED_ARCHITECTURES)
        raise GGUFError(f"{path}: architecture {arch!r} is not supported (supported: {supported})")
    for t in tensors:
        if (kind := t.tensor_type.name) not in SUPPORTED_TENSOR_TYPES:
            supported = ", ".join(sorted(SUPPORTED_TENSOR_TYPES))
            raise GGUFError(
                f"{path}: tensor type {kind} (used by {t.name!r}) is not supported "
                f"(supported: {supported})"
            )
        if mlx_name(t.name) is None:
            hint = " (llama 3.1-style rope scaling)" if t.name.startswith("rope_freqs") else ""
            raise GGUFError(f"{path}: tensor {t.name!r}{hint} is not supported for {arch}")
    tok_model = _value(reader, path, "tokenizer.ggml.model", "<none>")
    if tok_model not in SUPPORTED_TOKENIZER_MODELS:
        raise GGUFError(
            f"{path}: tokenizer model {tok_model!r} is not supported (supported: gpt2 byte-level BPE)"
        )

    def hp(key: str, default: Any = ...) -> Any:
        return _value(reader, path, f"{arch}.{key}", default)

    hidden, n_heads = int(hp("embedding_length")), int(hp("attention.head_count"))
    head_dim = int(hp("attention.key_length", hidden // n_heads))
    # mlx-lm's llama rotates whole heads and reads no GGUF rope scaling: refuse
    # rather than load a model that silently computes something else.
    if int(hp("rope.dimension_count", head_dim)) != head_dim:
        raise GGUFError(f"{path}: partial rotary embeddings are not supported")
    if (scaling := hp("rope.scaling.type", "none")) != "none":
        raise GGUFError(f"{path}: rope scaling {scaling!r} is not supported")
    by_name = {t.name: t for t in tensors}
    if "token_embd.weight" not in by_name:
        raise GGUFError(f"{path}: tensor 'token_embd.weight' is missing")
    info = GGUFInfo(
        path=path,
        architecture=arch,
        tensor_types=dict(Counter(t.tensor_type.name for t in tensors)),
        n_params=sum(int(t.n_elements) for t in tensors),
        stored_bytes=sum(int(t.n_bytes) for t in tensors),
        hidden_size=hidden,
        num_hidden_layers=int(hp("block_count")),
        intermediate_size=int(hp("feed_forward_length")),
        num_attention_heads=n_heads,
        num_key_value_heads=int(hp("attention.head_count_kv", n_heads)),
        vocab_size=int(by_name["token_embd.weight"].shape[-1]),  # GGUF lists dims innermost first
        context_length=int(hp("context_length", 2048)),
        rope_theta=float(hp("rope.freq_base", 10000.0)),
        rms_norm_eps=float(hp("attention.layer_norm_rms_epsilon", 1e-5)),
        head_dim=head_dim,
        tokenizer_pre=str(_value(reader, path, "tokenizer.ggml.pre", "default")),
        tied_embeddings="output.weight" not in by_name,
    )
    return info, reader


def inspect_gguf(path: str | os.PathLike) -> GGUFInfo:
    """Read a GGUF file's header and check that we can convert it.

    Raises:
        GGUFError: naming the file and the problem (missing, not GGUF, truncated,
            unsupported architecture, tensor type or tokenizer).
    """
    return _inspect(Path(path))[0]


def _unpermute_rows(w, n_head: int):
    """Undo llama.cpp's Q/K row permutation (interleaved -> half-split rotary).

    llama.cpp stores at row ``h*D + 2*j + i`` what Hugging Face keeps at row
    ``h*D + i*D/2 + j``. Only whole rows move, and quantization groups run along
    each row (the input dimension), so the weight, scales and biases of a
    quantized triplet are permuted exactly, without dequantizing.
    """
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _load_weights(path: Path, info: GGUFInfo, reader) -> dict:
    import mlx.core as mx
    import numpy as np

    try:
        raw = mx.load(str(path))
    except Exception as e:
        raise GGUFError(f"{path}: MLX could not read the tensors ({e})") from e
    # mx.load returns BF16 tensors as float16, which rounds them and turns values
    # beyond 65504 into inf; take the exact bits from the file instead.
    for t in reader.tensors:
        if t.tensor_type.name == "BF16":
            bits = np.ascontiguousarray(t.data).view(np.uint16).reshape(raw[t.name].shape)
            raw[t.name] = mx.array(bits).view(mx.bfloat16)

    weights = {}
    for name, w in raw.items():
        if ".attn_q." in name:
            w = _unpermute_rows(w, info.num_attention_heads)
        elif ".attn_k." in name:
            w = _unpermute_rows(w, info.num_key_value_heads)
        weights[mlx_name(name)] = w
    return weights


def _build_tokenizer(path: Path, reader, pre: str, tokens: list[str], ids: dict):
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, processors
    from tokenizers import pre_tokenizers as pt

    merges = []
    for m in _value(reader, path, "tokenizer.ggml.merges", []):
        if len(pair := m.split(" ")) != 2:
            raise GGUFError(f"{path}: malformed BPE merge {m!r} in tokenizer.ggml.merges")
        merges.append(tuple(pair))
    tok = Tokenizer(models.BPE({t: i for i, t in enumerate(tokens)}, merges, fuse_unk=False))

    if pre == "smollm":
        tok.pre_tokenizer = pt.Sequence(
            [pt.Digits(individual_digits=True), pt.ByteLevel(add_prefix_space=False, use_regex=True)]
        )
    elif pre in ("llama-bpe", "qwen2"):
        split = pt.Split(Regex(_LLAMA3_PATTERN if pre == "llama-bpe" else _QWEN2_PATTERN), "isolated")
        tok.pre_tokenizer = pt.Sequence([split, pt.ByteLevel(add_prefix_space=False, use_regex=False)])
        if pre == "qwen2":
            tok.normalizer = normalizers.NFC()
    else:
        if pre not in ("gpt2", "default"):
            warnings.warn(
                f"{path}: unknown pre-tokenizer {pre!r}; using plain byte-level splitting, "
                "which may tokenize some text differently from the original model",
                stacklevel=4,
            )
        tok.pre_tokenizer = pt.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()

    # Control tokens (<|im_start|>...) must be matched whole, before BPE sees the text.
    types = _value(reader, path, "tokenizer.ggml.token_type", [])
    for kind, special in ((_TOKEN_CONTROL, True), (_TOKEN_USER_DEFINED, False)):
        added = [AddedToken(s, special=special, normalized=False) for s, t in zip(tokens, types) if t == kind]
        (tok.add_special_tokens if special else tok.add_tokens)(added)

    # transformers ignores add_bos_token/add_eos_token in tokenizer_config.json for a
    # PreTrainedTokenizerFast: only tokenizer.json's post-processor adds BOS/EOS.
    bos, eos = [], []
    for end, into in (("bos", bos), ("eos", eos)):
        if ids[end] is not None and _value(reader, path, f"tokenizer.ggml.add_{end}_token", False):
            into.append(tokens[ids[end]])
    if bos or eos:
        tok.post_processor = processors.TemplateProcessing(
            single=[*bos, "$A", *eos],
            pair=[*bos, "$A", *eos, *bos, "$B:1", *eos],
            special_tokens=[(t, tok.token_to_id(t)) for t in dict.fromkeys(bos + eos)],
        )
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def _write_folder(path: Path, info: GGUFInfo, reader, folder: Path, source: dict) -> None:
    import mlx.core as mx

    weights = _load_weights(path, info, reader)
    mx.save_safetensors(str(folder / "model.safetensors"), weights, {"format": "mlx"})
    del weights

    tokens = _value(reader, path, "tokenizer.ggml.tokens")
    ids = {}
    for name, key in (("bos", "bos"), ("eos", "eos"), ("pad", "padding"), ("unk", "unknown")):
        i = _value(reader, path, f"tokenizer.ggml.{key}_token_id", None)
        if i is not None and not 0 <= i < len(tokens):
            raise GGUFError(f"{path}: {name} token id {i} is outside the vocabulary")
        ids[name] = i
    tokenizer = _build_tokenizer(path, reader, info.tokenizer_pre, tokens, ids)
    tokenizer.save(str(folder / "tokenizer.json"))
    names = ("hidden_size", "num_hidden_layers", "intermediate_size", "num_attention_heads",
             "num_key_value_heads", "head_dim", "vocab_size", "rope_theta", "rms_norm_eps")
    config: dict[str, Any] = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        **{k: getattr(info, k) for k in names},
        "max_position_embeddings": info.context_length,
        # Q/K rows were un-permuted, so this is a Hugging-Face-layout llama.
        "rope_traditional": False,
        "tie_word_embeddings": info.tied_embeddings,
        "attention_bias": any(t.name.endswith("attn_q.bias") for t in reader.tensors),
        "mlp_bias": any(t.name.endswith("ffn_up.bias") for t in reader.tensors),
        **{f"{k}_token_id": ids[k] for k in ("bos", "eos") if ids[k] is not None},
    }
    if info.quantized:
        # Only defaults: mlx-lm infers each layer's bits and group size from the
        # shapes of its scales (an 8-bit embedding beside 4-bit linears loads).
        bits = 4 if {"Q4_0", "Q4_1"} & info.tensor_types.keys() else 8
        config["quantization"] = {"group_size": 32, "bits": bits, "mode": "affine"}
        config["quantization_config"] = dict(config["quantization"])
    _write_json(folder / "config.json", config)

    tok_config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        # For the record; tokenizer.json's post-processor is what adds them.
        "add_bos_token": bool(_value(reader, path, "tokenizer.ggml.add_bos_token", False)),
        "add_eos_token": bool(_value(reader, path, "tokenizer.ggml.add_eos_token", False)),
        "clean_up_tokenization_spaces": False,
        "model_max_length": info.context_length,
        **{f"{k}_token": tokens[i] for k, i in ids.items() if i is not None},
    }
    if (template := _value(reader, path, "tokenizer.chat_template", None)) is not None:
        tok_config["chat_template"] = template
    _write_json(folder / "tokenizer_config.json", tok_config)
    generation = {k: config[k] for k in ("bos_token_id", "eos_token_id") if k in config}
    _write_json(folder / "generation_config.json", generation)
    _write_json(folder / _SOURCE_RECORD, source)  # last: marks a finished conversion


def _write_json(file: Path, obj: dict) -> None:
    file.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _source_record(path: Path) -> dict:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise GGUFError(f"{path}: file not found") from None
    return {"source": os.path.realpath(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "format_version": _FORMAT_VERSION}


def _read_record(folder: Path) -> dict | None:
    try:
        return json.loads((folder / _SOURCE_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def convert_gguf(path: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Convert a GGUF file into an MLX model folder at ``out_dir`` and return it.

    Reuses ``out_dir`` when it already holds a conversion of the same file (same
    path, size and modification time). The folder appears complete or not at all:
    it is built in a temporary sibling and renamed into place.

    Raises:
        GGUFError: the file is missing, unreadable or unsupported.
        ModelLoadError: ``out_dir`` exists and is not a Symbiont conversion.
    """
    path, out_dir = Path(path), Path(out_dir)
    source = _source_record(path)
    if (record := _read_record(out_dir)) == source:
        return out_dir
    if record is None and out_dir.exists() and any(out_dir.iterdir()):
        # Never delete a folder we did not create.
        raise ModelLoadError(f"{out_dir}: exists and is not a converted model; not overwriting it")
    info, reader = _inspect(path)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
    try:
        _write_folder(path, info, reader, tmp, source)
        _move_into_place(tmp, out_dir, source)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _move_into_place(tmp: Path, out_dir: Path, source: dict) -> None:
    try:
        os.replace(tmp, out_dir)  # works when out_dir is absent or an empty folder
        return
    except OSError:
        if (record := _read_record(out_dir)) == source:  # another process finished first
            shutil.rmtree(tmp, ignore_errors=True)
            return
        if record is None:  # appeared meanwhile, and is not ours to delete
            raise ModelLoadError(f"{out_dir}: exists and is not a converted model; not overwriting it")
    # A stale conversion: move it aside, put the new one in, then delete the old.
    old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".old", dir=out_dir.parent))
    os.replace(out_dir, old / "stale")
    try:
        os.replace(tmp, out_dir)
    except OSError:
        os.replace(old / "stale", out_dir)  # put the old one back
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)


def default_cache_dir() -> Path:
    """Where Symbiont keeps converted models: ``$SYMBIONT_CACHE_DIR``, else the
    platform's user cache (``~/Library/Caches/Symbiont`` on macOS,
    ``$XDG_CACHE_HOME/symbiont`` or ``~/.cache/symbiont`` on Linux)."""
    if env := os.environ.get("SYMBIONT_CACHE_DIR"):
        return Path(env).expanduser()
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "Symbiont"
    if sys.platform == "win32":
        local = os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local"
        return Path(local) / "Symbiont" / "Cache"
    xdg = os.environ.get("XDG_CACHE_HOME")
    # The XDG spec says to ignore relative paths.
    return (Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache") / "symbiont"


def converted_dir_for(path: str | os.PathLike) -> Path:
    """The cache folder for a GGUF file: ``<cache>/models/gguf/<stem>-<hash>``.

    The hash covers the real path, size and modification time, so an edited or
    replaced file gets a fresh folder.
    """
    path = Path(path)
    s = _source_record(path)
    digest = hashlib.sha256(f"{s['source']}\0{s['size']}\0{s['mtime_ns']}".encode()).hexdigest()[:12]
    return default_cache_dir() / "models" / "gguf" / f"{path.stem}-{digest}"
