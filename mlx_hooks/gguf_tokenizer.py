"""A GGUF file's tokenizer as a Hugging Face ``tokenizer.json``, built with ``tokenizers``.

Two vocabularies occur in the files users have:

* ``gpt2``: byte-level BPE with merges (Llama 3, Qwen, SmolLM, Phi-4), split by the
  pre-tokenizer named in ``tokenizer.ggml.pre``.
* ``llama``: SentencePiece (Llama 2, Mistral, Gemma, Phi-3) - pieces with scores and
  types, bytes ``<0x00>``..``<0xFF>`` for characters outside the vocabulary. A
  SentencePiece BPE model scores its pieces by merge rank (whole numbers), a
  Unigram model by log-probability: whole-number scores give BPE merges ordered by
  score, others a Unigram model. Text is not normalized (as in llama.cpp), spaces
  become ``▁``, and ``▁`` is prepended when ``tokenizer.ggml.add_space_prefix``
  says so - to each stretch of text between added tokens, as llama.cpp and these
  models' own ``tokenizer.json`` do (SentencePiece itself would not prepend it
  after a user-defined piece).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

from .errors import GGUFError
from .gguf_arch import Metadata

SUPPORTED_TOKENIZER_MODELS = ("gpt2", "llama")
# llama.cpp's tokenizer.ggml.token_type values.
TOKEN_NORMAL, TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNUSED, TOKEN_BYTE = 1, 2, 3, 4, 5, 6
_SPACE = "▁"

# Pre-tokenizer split patterns, as published in these models' tokenizer.json.
_LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_PATTERN = _LLAMA3_PATTERN.replace(r"\p{N}{1,3}", r"\p{N}")  # single digits


@dataclass(frozen=True)
class Vocab:
    """The tokenizer fields of a GGUF header."""

    model: str
    """``tokenizer.ggml.model``: ``gpt2`` or ``llama``."""
    tokens: list[str]
    """Token strings, by id."""
    types: list[int]
    """llama.cpp token types, by id (normal when the file has none)."""
    ids: dict[str, int | None]
    """Ids of the ``bos``, ``eos``, ``pad`` and ``unk`` tokens (None when unset)."""


def check_model(meta: Metadata) -> str:
    model = meta.get("tokenizer.ggml.model", "<none>")
    if model not in SUPPORTED_TOKENIZER_MODELS:
        raise meta.refuse(f"tokenizer model {model!r} is not supported "
                          "(supported: gpt2 byte-level BPE, llama SentencePiece)")
    if model == "llama" and "tokenizer.ggml.scores" not in meta.reader.fields:
        raise meta.refuse("SentencePiece vocabulary without scores (tokenizer.ggml.scores)")
    return model


def read_vocab(meta: Metadata) -> Vocab:
    model = check_model(meta)
    tokens = meta.get("tokenizer.ggml.tokens")
    types = meta.get("tokenizer.ggml.token_type", None) or [TOKEN_NORMAL] * len(tokens)
    if len(types) != len(tokens):
        raise meta.refuse(f"tokenizer.ggml.token_type has {len(types)} entries for {len(tokens)} tokens")
    ids = {}
    for name, key in (("bos", "bos"), ("eos", "eos"), ("pad", "padding"), ("unk", "unknown")):
        i = meta.get(f"tokenizer.ggml.{key}_token_id", None)
        if i is not None and not 0 <= i < len(tokens):
            raise meta.refuse(f"{name} token id {i} is outside the vocabulary")
        ids[name] = i
    return Vocab(model, tokens, [int(t) for t in types], ids)


def build_tokenizer(meta: Metadata, vocab: Vocab):
    """The ``tokenizers.Tokenizer`` for this vocabulary."""
    from tokenizers import AddedToken, processors

    tok = _byte_level_bpe(meta, vocab) if vocab.model == "gpt2" else _sentencepiece(meta, vocab)
    # Control tokens (<|im_start|>, <start_of_turn>...) are matched whole before the model sees the text.
    for kind, special in ((TOKEN_CONTROL, True), (TOKEN_USER_DEFINED, False)):
        added = [AddedToken(s, special=special, normalized=False) for s, t in zip(vocab.tokens, vocab.types) if t == kind]
        (tok.add_special_tokens if special else tok.add_tokens)(added)

    # transformers ignores add_bos_token/add_eos_token in tokenizer_config.json for a
    # PreTrainedTokenizerFast: only tokenizer.json's post-processor adds BOS/EOS.
    bos, eos = [], []
    for end, into in (("bos", bos), ("eos", eos)):
        if vocab.ids[end] is not None and meta.get(f"tokenizer.ggml.add_{end}_token", False):
            into.append(vocab.tokens[vocab.ids[end]])
    if bos or eos:
        tok.post_processor = processors.TemplateProcessing(
            single=[*bos, "$A", *eos],
            pair=[*bos, "$A", *eos, *bos, "$B:1", *eos],
            special_tokens=[(t, tok.token_to_id(t)) for t in dict.fromkeys(bos + eos)],
        )
    elif vocab.model == "gpt2":
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def _byte_level_bpe(meta: Metadata, vocab: Vocab):
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers
    from tokenizers import pre_tokenizers as pt

    merges = []
    for m in meta.get("tokenizer.ggml.merges", []):
        if len(pair := m.split(" ")) != 2:
            raise meta.refuse(f"malformed BPE merge {m!r} in tokenizer.ggml.merges")
        merges.append(tuple(pair))
    tok = Tokenizer(models.BPE({t: i for i, t in enumerate(vocab.tokens)}, merges, fuse_unk=False))

    pre = str(meta.get("tokenizer.ggml.pre", "default"))
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
                f"{meta.path}: unknown pre-tokenizer {pre!r}; using plain byte-level splitting, "
                "which may tokenize some text differently from the original model",
                stacklevel=4,
            )
        tok.pre_tokenizer = pt.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    return tok


def _sentencepiece(meta: Metadata, vocab: Vocab):
    from tokenizers import Tokenizer, decoders, models, normalizers

    scores = meta.get("tokenizer.ggml.scores", None)
    if scores is None or len(scores) != len(vocab.tokens):
        raise meta.refuse("SentencePiece vocabulary without one score per token (tokenizer.ggml.scores)")
    unk = vocab.ids["unk"]
    if unk is None:
        unk = vocab.types.index(TOKEN_UNKNOWN) if TOKEN_UNKNOWN in vocab.types else 0
    normal = [i for i, t in enumerate(vocab.types) if t == TOKEN_NORMAL]
    if all(float(scores[i]).is_integer() for i in normal):
        # BPE: characters are pieces; adjacent pieces merge into the highest-scored piece first.
        model = models.BPE({t: i for i, t in enumerate(vocab.tokens)}, _merges_by_score(vocab, scores, normal),
                           unk_token=vocab.tokens[unk], byte_fallback=True, fuse_unk=True)
    else:
        # Unigram: only normal and user-defined pieces take part in segmentation, as in SentencePiece.
        usable = (TOKEN_NORMAL, TOKEN_USER_DEFINED)
        pieces = [(t, float(s) if k in usable else -1e9) for t, s, k in zip(vocab.tokens, scores, vocab.types)]
        model = models.Unigram(pieces, unk_id=unk, byte_fallback=True)
    tok = Tokenizer(model)
    add_prefix = bool(meta.get("tokenizer.ggml.add_space_prefix", True))
    tok.normalizer = normalizers.Sequence(
        [normalizers.Prepend(_SPACE)] * add_prefix + [normalizers.Replace(" ", _SPACE)]
    )
    # The exact sequence mlx-lm recognises to pick its SentencePiece streaming detokenizer.
    tok.decoder = decoders.Sequence(
        [decoders.Replace(_SPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
        + [decoders.Strip(" ", 1, 0)] * add_prefix
    )
    return tok


def _merges_by_score(vocab: Vocab, scores: list[float], normal: list[int]) -> list[tuple[str, str]]:
    """BPE merges for a scored SentencePiece vocabulary: every split of a normal piece
    into two normal pieces, best-scored result first.

    Written by hand because ``tokenizers``/``transformers`` derive merges only from a
    SentencePiece model file, which a GGUF does not carry.
    """
    ids = {vocab.tokens[i]: i for i in normal}
    ranked = []
    for piece, i in ids.items():
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in ids and right in ids:
                ranked.append((-scores[i], ids[left], ids[right]))
    ranked.sort()
    return [(vocab.tokens[a], vocab.tokens[b]) for _, a, b in ranked]


def tokenizer_config(meta: Metadata, vocab: Vocab, context_length: int) -> dict[str, Any]:
    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        # For the record; tokenizer.json's post-processor is what adds them.
        "add_bos_token": bool(meta.get("tokenizer.ggml.add_bos_token", False)),
        "add_eos_token": bool(meta.get("tokenizer.ggml.add_eos_token", False)),
        "clean_up_tokenization_spaces": False,
        "model_max_length": context_length,
        **{f"{k}_token": vocab.tokens[i] for k, i in vocab.ids.items() if i is not None},
    }
    if (template := meta.get("tokenizer.chat_template", None)) is not None:
        config["chat_template"] = template
    return config


def check_ids(meta: Metadata, vocab: Vocab, vocab_size: int) -> None:
    """The special ids must exist in the model's embedding too."""
    for name, i in vocab.ids.items():
        if i is not None and i >= vocab_size:
            raise GGUFError(f"{meta.path}: {name} token id {i} is beyond the model's {vocab_size} embeddings")
