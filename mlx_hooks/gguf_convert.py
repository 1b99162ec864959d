"""Turn a GGUF file (LM Studio, Ollama, llama.cpp) into a normal MLX model folder.

The folder (``config.json``, ``model*.safetensors``, ``tokenizer.json``,
``tokenizer_config.json``, ``generation_config.json``) opens with ``mlx_lm.load``
like any Hugging Face checkpoint, so the rest of Symbiont deals with one kind of
model. :func:`inspect_gguf` reads the header only and refuses what we cannot
convert (:mod:`.gguf_arch`: llama/mistral, qwen2, qwen3, gemma2, gemma3, phi3;
:mod:`.gguf_tokenizer`: byte-level BPE and SentencePiece; :mod:`.gguf_tensors`:
float, Q4_0..Q8_0 and K-quant tensors). :func:`convert_gguf` writes the folder
atomically and reuses a finished one; :mod:`.gguf_cache`'s :func:`converted_dir_for`
names the cache folder after the file's content, so copies share one conversion.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import gguf_tokenizer
from .errors import GGUFError, ModelLoadError
from .gguf_arch import SUPPORTED_ARCHITECTURES, Family, Metadata, hf_config  # noqa: F401 - re-exported
from .gguf_cache import (  # noqa: F401 - content_digest, converted_dir_for, default_cache_dir: public here too
    OWNER_FILE, SOURCE_RECORD, claim_partial, content_digest, converted_dir_for, default_cache_dir, move_into_place,
    read_record, remove_stale_partials, same_source, source_record,
)
from .gguf_header import check_gguf_header
from .gguf_tensors import PLANS, QUANTIZED_TENSOR_TYPES, SUPPORTED_TENSOR_TYPES, ShardWriter, convert_tensor
from .gguf_tokenizer import SUPPORTED_TOKENIZER_MODELS  # noqa: F401 - re-exported


@dataclass(frozen=True)
class GGUFInfo:
    """What a GGUF file holds, read from its header without loading tensors."""

    path: Path
    """The file that was inspected."""
    architecture: str
    """``general.architecture``, e.g. ``"llama"``."""
    model_type: str
    """The mlx-lm ``model_type`` it converts to (``gemma3`` -> ``gemma3_text``)."""
    tensor_types: dict[str, int] = field(hash=False)
    """How many tensors use each GGML type, e.g. ``{"Q4_K": 193, "Q6_K": 32, "F32": 65}``."""
    n_params: int
    """Number of weights (elements) over all tensors."""
    stored_bytes: int
    """Bytes the tensor data occupies in the file."""
    hidden_size: int
    """Model width (``<arch>.embedding_length``)."""
    num_hidden_layers: int
    """Number of decoder blocks (``<arch>.block_count``)."""
    intermediate_size: int
    """MLP width (``<arch>.feed_forward_length``)."""
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
    tokenizer_model: str = "gpt2"
    """``tokenizer.ggml.model``: ``gpt2`` (byte-level BPE) or ``llama`` (SentencePiece)."""
    tokenizer_pre: str = "default"
    """``tokenizer.ggml.pre``: which pre-tokenizer a BPE vocabulary was trained with."""
    tied_embeddings: bool = True
    """True when there is no separate output matrix (the embedding is reused)."""
    config: dict[str, Any] = field(default_factory=dict, hash=False, compare=False, repr=False)
    """The ``config.json`` the conversion writes."""

    @property
    def quantized(self) -> bool:
        """Whether any tensor is block-quantized."""
        return any(t in QUANTIZED_TENSOR_TYPES for t in self.tensor_types)


def _inspect(path: Path) -> tuple[GGUFInfo, Family, Metadata]:
    """:func:`inspect_gguf`, also returning the family and the open header."""
    import gguf

    if not path.is_file():
        raise GGUFError(f"{path}: {'not a file' if path.exists() else 'file not found'}")
    check_gguf_header(path)  # every count and length against the file size, before gguf-py trusts them
    try:
        reader = gguf.GGUFReader(path)  # memory-mapped: reads the header only
    except Exception as e:  # ValueError, IndexError, ... depending on where it breaks
        raise GGUFError(f"{path}: not a GGUF file, or truncated or corrupt ({e})") from e
    tensors = {t.name: t for t in reader.tensors}

    # The reader maps tensor data lazily; make sure the file really holds it all.
    size = path.stat().st_size
    if tensors and (end := max(t.data_offset + t.n_bytes for t in tensors.values())) > size:
        raise GGUFError(f"{path}: file is truncated ({size} bytes, tensor data ends at byte {end})")
    meta = Metadata(path, reader)
    meta = Metadata(path, reader, str(meta.get("general.architecture")))
    for t in tensors.values():
        if (kind := t.tensor_type.name) not in SUPPORTED_TENSOR_TYPES:
            supported = ", ".join(sorted(SUPPORTED_TENSOR_TYPES))
            raise GGUFError(f"{path}: tensor type {kind} (used by {t.name!r}) is not supported "
                            f"(supported: {supported})")
    family, config = hf_config(meta, tensors)
    tokenizer_model = gguf_tokenizer.check_model(meta)
    info = GGUFInfo(
        path=path,
        architecture=meta.arch,
        model_type=family.model_type,
        tensor_types=dict(Counter(t.tensor_type.name for t in tensors.values())),
        n_params=sum(int(t.n_elements) for t in tensors.values()),
        stored_bytes=sum(int(t.n_bytes) for t in tensors.values()),
        **{k: config[k] for k in ("hidden_size", "num_hidden_layers", "intermediate_size", "num_attention_heads",
                                  "num_key_value_heads", "vocab_size", "rope_theta", "rms_norm_eps", "head_dim")},
        context_length=config["max_position_embeddings"],
        tokenizer_model=tokenizer_model,
        tokenizer_pre=str(meta.get("tokenizer.ggml.pre", "default")),
        tied_embeddings=config["tie_word_embeddings"],
        config=config,
    )
    return info, family, meta


def inspect_gguf(path: str | os.PathLike) -> GGUFInfo:
    """Read a GGUF file's header and check that we can convert it.

    Raises:
        GGUFError: naming the file and the problem (missing, not GGUF, truncated,
            unsupported architecture, tensor type, tokenizer, rope scaling, ...).
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


def _write_weights(info: GGUFInfo, family: Family, meta: Metadata, folder: Path) -> None:
    import mlx.core as mx

    heads = {"attn_q": info.num_attention_heads, "attn_k": info.num_key_value_heads}
    writer = ShardWriter(folder)
    for t in meta.reader.tensors:
        name = family.mlx_name(t.name)
        if name is None:  # rope factors: already in config.json
            continue
        parts = convert_tensor(t, f"{meta.path}: tensor {t.name!r}")
        role = t.name.split(".")[-2]
        if family.permute_qk and role in heads:
            parts = {k: _unpermute_rows(v, heads[role]) for k, v in parts.items()}
        if family.norm_offset and role.endswith("norm"):
            parts = {k: v.astype(mx.float32) - family.norm_offset for k, v in parts.items()}
        mx.eval(parts)
        for suffix, value in parts.items():
            writer.add(name if suffix == "weight" else f"{name[: -len('weight')]}{suffix}", value)
    writer.close()


def _write_folder(info: GGUFInfo, family: Family, meta: Metadata, folder: Path, source: dict) -> None:
    # The tokenizer first: it is quick, and a bad vocabulary is then reported before minutes of weights.
    vocab = gguf_tokenizer.read_vocab(meta)
    gguf_tokenizer.check_ids(meta, vocab, info.vocab_size)
    gguf_tokenizer.build_tokenizer(meta, vocab).save(str(folder / "tokenizer.json"))
    _write_json(folder / "tokenizer_config.json", gguf_tokenizer.tokenizer_config(meta, vocab, info.context_length))

    _write_weights(info, family, meta, folder)
    config = dict(info.config)
    config.update({f"{k}_token_id": vocab.ids[k] for k in ("bos", "eos") if vocab.ids[k] is not None})
    if info.quantized:
        # The commonest width as the default; mlx-lm reads each layer's bits from the
        # shapes of its scales (Q6_K output beside Q4_K linears loads), and every group is 32.
        widths: Counter = Counter()
        for kind, n in info.tensor_types.items():
            if PLANS[kind].bits is not None:
                widths[PLANS[kind].bits] += n
        bits = widths.most_common(1)[0][0]
        config["quantization"] = {"group_size": 32, "bits": bits, "mode": "affine"}
        config["quantization_config"] = dict(config["quantization"])
    _write_json(folder / "config.json", config)
    generation = {k: config[k] for k in ("bos_token_id", "eos_token_id") if k in config}
    _write_json(folder / "generation_config.json", generation)
    _write_json(folder / SOURCE_RECORD, source)  # last: marks a finished conversion


def _write_json(file: Path, obj: dict) -> None:
    file.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def convert_gguf(path: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Convert a GGUF file into an MLX model folder at ``out_dir`` and return it.

    Reuses ``out_dir`` when it already holds a conversion of a file with the same
    content. The folder appears complete or not at all: it is built in a temporary
    sibling and renamed into place.

    Raises:
        GGUFError: the file is missing, unreadable or unsupported.
        ModelLoadError: ``out_dir`` exists and is not a Symbiont conversion.
    """
    path, out_dir = Path(path), Path(out_dir)
    source = source_record(path)
    record = read_record(out_dir)
    if same_source(record, source):
        return out_dir
    if record is None and out_dir.exists() and any(out_dir.iterdir()):
        # Never delete a folder we did not create.
        raise ModelLoadError(f"{out_dir}: exists and is not a converted model; not overwriting it")
    info, family, meta = _inspect(path)
    source = {**source, "source": os.path.realpath(path)}

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(out_dir.parent)  # conversions killed mid-way (their owner's lock is gone)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
    owner = claim_partial(tmp)
    try:
        _write_folder(info, family, meta, tmp, source)
        (tmp / OWNER_FILE).unlink(missing_ok=True)
        move_into_place(tmp, out_dir, source)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if owner is not None:
            os.close(owner)
    return out_dir
